#!/usr/bin/env python3
"""Sends mail to a ringmail test server with Python's smtplib (driven by tests/smtp_clients.rs).

usage: smtplib_send.py HOST PORT OUTDIR CASE

Every message the server acknowledged with 250 is written to OUTDIR as NN.eml (exactly the
bytes the server should store after its own Return-Path/Received headers: CRLF line ends, no
dot-stuffing), and listed in OUTDIR/manifest.txt as `NN.eml<TAB>rcpt1,rcpt2`. Any reply that
differs from what the case expects makes the script exit 1 with the reason on stderr.

Cases: single, two_rcpts, pipelined, eightbit, bdat, dots, unknown_user, remote_domain.
"""

import os
import smtplib
import sys

TIMEOUT_S = 10
SENDER = "sender@client.test"
ALICE = "alice@example.test"
BOB = "bob@example.test"


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


class Out:
    def __init__(self, outdir):
        self.outdir = outdir
        self.n = 0
        self.manifest = open(os.path.join(outdir, "manifest.txt"), "w")

    def stored(self, message, rcpts):
        self.n += 1
        name = "%02d.eml" % self.n
        with open(os.path.join(self.outdir, name), "wb") as f:
            f.write(message)
        self.manifest.write("%s\t%s\n" % (name, ",".join(rcpts)))
        self.manifest.flush()


def message(mid, body_lines, extra_headers=b""):
    """A message with CRLF line ends, ending in CRLF."""
    head = (
        b"From: Sender <" + SENDER.encode() + b">\r\n"
        b"To: <" + ALICE.encode() + b">\r\n"
        b"Subject: smtplib " + mid.encode() + b"\r\n"
        b"Message-ID: <" + mid.encode() + b"@client.test>\r\n" + extra_headers + b"\r\n"
    )
    return head + b"".join(line + b"\r\n" for line in body_lines)


def connect(host, port):
    s = smtplib.SMTP(host, port, local_hostname="client.test", timeout=TIMEOUT_S)
    code, _ = s.ehlo()
    check(code == 250, "EHLO answered %d" % code)
    return s


def reply(s, want, what):
    code, text = s.getreply()
    check(code == want, "%s: expected %d, got %d %r" % (what, want, code, text))
    return text


def case_single(s, out):
    m = message("single", [b"Hello Alice.", b"", b"From the smtplib test.", b"Bye"])
    refused = s.sendmail(SENDER, [ALICE], m)
    check(refused == {}, "refused %r" % refused)
    out.stored(m, [ALICE])


def case_two_rcpts(s, out):
    m = message("two", [b"One message for two recipients."] * 3)
    refused = s.sendmail(SENDER, [ALICE, BOB], m)
    check(refused == {}, "refused %r" % refused)
    out.stored(m, [ALICE, BOB])


def case_pipelined(s, out):
    check(s.has_extn("pipelining"), "PIPELINING not advertised: %r" % s.esmtp_features)
    m = message("pipelined", [b"sent with MAIL/RCPT/RCPT/RCPT/DATA in one write", b".dot"])
    s.sock.sendall(
        b"MAIL FROM:<" + SENDER.encode() + b">\r\n"
        b"RCPT TO:<" + ALICE.encode() + b">\r\n"
        b"RCPT TO:<nobody@example.test>\r\n"
        b"RCPT TO:<" + BOB.encode() + b">\r\n"
        b"DATA\r\n"
    )
    reply(s, 250, "pipelined MAIL")
    reply(s, 250, "pipelined RCPT alice")
    reply(s, 550, "pipelined RCPT nobody")
    reply(s, 250, "pipelined RCPT bob")
    reply(s, 354, "pipelined DATA")
    # Body, terminator and the next transaction's commands in one write as well.
    stuffed = m.replace(b"\r\n.", b"\r\n..")
    m2 = message("pipelined-2", [b"second transaction, pipelined after the dot"])
    s.sock.sendall(
        stuffed + b".\r\n"
        b"MAIL FROM:<" + SENDER.encode() + b">\r\n"
        b"RCPT TO:<" + BOB.encode() + b">\r\n"
        b"DATA\r\n"
    )
    reply(s, 250, "end of data")
    out.stored(m, [ALICE, BOB])
    reply(s, 250, "second MAIL")
    reply(s, 250, "second RCPT")
    reply(s, 354, "second DATA")
    s.sock.sendall(m2 + b".\r\n")
    reply(s, 250, "second end of data")
    out.stored(m2, [BOB])


def case_eightbit(s, out):
    check(s.has_extn("8bitmime"), "8BITMIME not advertised")
    body = [
        "Grüße aus Köln — naïve café, 日本語のテキスト, emoji 📬".encode("utf-8"),
        bytes(range(0x80, 0x100)).replace(b"\r", b"").replace(b"\n", b""),
    ]
    m = message("eightbit", body, b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: 8bit\r\n")
    refused = s.sendmail(SENDER, [ALICE], m, mail_options=["BODY=8BITMIME"])
    check(refused == {}, "refused %r" % refused)
    out.stored(m, [ALICE])


def case_bdat(s, out):
    check(s.has_extn("chunking"), "CHUNKING not advertised")
    m = message("bdat", [
        b"BDAT is binary-safe: the next lines are stored as sent.",
        b".a line starting with a dot (not unstuffed)",
        b"..two dots stay two dots",
        b".",
        b"the line above was a single dot, which does not end BDAT data",
    ])
    code, text = s.docmd("MAIL", "FROM:<%s>" % SENDER)
    check(code == 250, "MAIL: %d %r" % (code, text))
    code, text = s.docmd("RCPT", "TO:<%s>" % ALICE)
    check(code == 250, "RCPT: %d %r" % (code, text))
    # Three chunks cut at awkward places (inside CRLF, inside "\r\n.\r\n"), then LAST.
    cuts = [m.index(b"\r\n.\r\n") + 1, m.index(b"\r\n.\r\n") + 3]
    chunks = [m[: cuts[0]], m[cuts[0]: cuts[1]], m[cuts[1]:]]
    for c in chunks[:-1]:
        s.sock.sendall(b"BDAT %d\r\n" % len(c) + c)
        text = reply(s, 250, "BDAT %d" % len(c))
        check(str(len(c)).encode() in text, "BDAT reply does not name %d octets: %r" % (len(c), text))
    s.sock.sendall(b"BDAT %d LAST\r\n" % len(chunks[-1]) + chunks[-1])
    reply(s, 250, "BDAT LAST")
    out.stored(m, [ALICE])
    # A second transaction ending with BDAT 0 LAST.
    m2 = message("bdat-2", [b"sent in one chunk, then BDAT 0 LAST"])
    s.sock.sendall(
        b"MAIL FROM:<" + SENDER.encode() + b">\r\nRCPT TO:<" + BOB.encode() + b">\r\n"
        + b"BDAT %d\r\n" % len(m2) + m2 + b"BDAT 0 LAST\r\n"
    )
    reply(s, 250, "pipelined MAIL")
    reply(s, 250, "pipelined RCPT")
    reply(s, 250, "BDAT %d" % len(m2))
    reply(s, 250, "BDAT 0 LAST")
    out.stored(m2, [BOB])


def case_dots(s, out):
    m = message("dots", [
        b".leading dot",
        b"..two leading dots",
        b".",
        b"...",
        b" .not at line start",
        b"From the mboxrd point of view this line needs quoting",
        b">From this one too",
        b"the end.",
    ])
    refused = s.sendmail(SENDER, [ALICE], m)  # smtplib stuffs the dots
    check(refused == {}, "refused %r" % refused)
    out.stored(m, [ALICE])


def case_unknown_user(s, out):
    m = message("unknown", [b"for nobody"])
    try:
        s.sendmail(SENDER, ["nobody@example.test"], m)
        raise Fail("sendmail to nobody@example.test did not raise")
    except smtplib.SMTPRecipientsRefused as e:
        code = e.recipients.get("nobody@example.test", (None,))[0]
        check(code == 550, "nobody@example.test refused with %r, not 550" % (e.recipients,))
    # Partly refused: alice gets it, the unknown user is reported.
    s.rset()
    m2 = message("unknown-mixed", [b"alice yes, nobody no"])
    refused = s.sendmail(SENDER, [ALICE, "nobody@example.test"], m2)
    check(list(refused) == ["nobody@example.test"] and refused["nobody@example.test"][0] == 550,
          "refused: %r" % refused)
    out.stored(m2, [ALICE])


def case_remote_domain(s, out):
    m = message("remote", [b"relay attempt"])
    try:
        s.sendmail(SENDER, ["someone@remote.test"], m)
        raise Fail("sendmail to someone@remote.test did not raise")
    except smtplib.SMTPRecipientsRefused as e:
        code = e.recipients.get("someone@remote.test", (None,))[0]
        check(code == 554, "someone@remote.test refused with %r, not 554" % (e.recipients,))


CASES = {
    "single": case_single,
    "two_rcpts": case_two_rcpts,
    "pipelined": case_pipelined,
    "eightbit": case_eightbit,
    "bdat": case_bdat,
    "dots": case_dots,
    "unknown_user": case_unknown_user,
    "remote_domain": case_remote_domain,
}


def main():
    if len(sys.argv) != 5 or sys.argv[4] not in CASES:
        sys.stderr.write("usage: %s HOST PORT OUTDIR {%s}\n" % (sys.argv[0], "|".join(CASES)))
        return 2
    host, port, outdir, case = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    out = Out(outdir)
    s = connect(host, port)
    try:
        CASES[case](s, out)
        code, text = s.docmd("QUIT")
        check(code == 221, "QUIT answered %d %r" % (code, text))
    except (Fail, smtplib.SMTPException, OSError) as e:
        sys.stderr.write("%s: %s: %s\n" % (case, type(e).__name__, e))
        return 1
    finally:
        s.close()
        out.manifest.close()
    print("%s: ok, %d message(s) acknowledged" % (case, out.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
