#!/usr/bin/env python3
"""Python's smtplib, imaplib, poplib and ssl against ringmail's TLS listeners (driven by
tests/tls_clients.rs).

usage: tls_clients.py PORTS_JSON CAFILE CASE

PORTS_JSON maps listener names (smtp, submission, submissions, imap, imaps, pop3, pop3s) to
ports on 127.0.0.1. CAFILE is the certificate the server presents (the generated self-signed
one): every connection verifies it, host name included (the certificate names 127.0.0.1).

A case asserts itself: on the first answer that differs from what it expects it prints the
reason to stderr and exits 1; on success it prints `CASE: ok` and exits 0. Every socket has
a timeout, so no case can hang.
"""

import base64
import imaplib
import json
import poplib
import smtplib
import socket
import ssl
import sys
import time
import traceback

TIMEOUT_S = 10
HOST = "127.0.0.1"
ALICE = "alice@example.test"
ALICE_PW = "alice-Pa55word-7f3a"
BOB = "bob@example.test"
BOB_PW = "bob-Pa55word-c91e"


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def message(sender, to, subject):
    return (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@client.test>\r\n\r\nbody of {subject}\r\n"
    ).encode()


def recv_until(sock, ending, limit=65536):
    """Reads until the buffer ends with `ending` (bytes)."""
    data = b""
    while not data.endswith(ending):
        chunk = sock.recv(4096)
        if not chunk:
            raise Fail(f"connection closed; got {data!r}")
        data += chunk
        check(len(data) < limit, f"reply too long: {data[:200]!r}")
    return data


# --- SMTP -----------------------------------------------------------------------------------


def case_smtp_starttls_then_auth(ports, ca):
    """Port 25: STARTTLS offered, AUTH only after it; an authenticated client may relay."""
    with smtplib.SMTP(HOST, ports["smtp"], timeout=TIMEOUT_S) as s:
        s.ehlo("client.test")
        check(s.has_extn("starttls"), f"no STARTTLS before TLS: {s.esmtp_features}")
        check(not s.has_extn("auth"), f"AUTH offered in the clear: {s.esmtp_features}")
        code, _ = s.starttls(context=context(ca))
        check(code == 220, f"STARTTLS answered {code}")
        s.ehlo("client.test")
        check(not s.has_extn("starttls"), "STARTTLS offered again over TLS")
        check("PLAIN" in s.esmtp_features.get("auth", ""), f"no AUTH PLAIN: {s.esmtp_features}")
        s.login(ALICE, ALICE_PW)
        refused = s.sendmail(ALICE, [BOB], message(ALICE, BOB, "smtp-tls"))
        check(refused == {}, f"refused {refused}")


def case_submission_requires_auth(ports, ca):
    with smtplib.SMTP(HOST, ports["submission"], timeout=TIMEOUT_S) as s:
        s.ehlo("client.test")
        code, text = s.mail(ALICE)
        check(code == 530, f"MAIL before AUTH on submission answered {code} {text!r}")
        s.rset()
        s.starttls(context=context(ca))
        s.ehlo("client.test")
        s.login(ALICE, ALICE_PW)
        code, text = s.mail(BOB)
        check(code == 553, f"MAIL FROM someone else's address answered {code} {text!r}")
        s.rset()
        refused = s.sendmail(ALICE, [BOB], message(ALICE, BOB, "submission"))
        check(refused == {}, f"refused {refused}")


def case_submission_bad_password(ports, ca):
    with smtplib.SMTP(HOST, ports["submission"], timeout=TIMEOUT_S) as s:
        s.starttls(context=context(ca))
        s.ehlo("client.test")
        try:
            s.login(ALICE, "wrong-password")
        except smtplib.SMTPAuthenticationError as e:
            check(e.smtp_code == 535, f"wrong password answered {e.smtp_code}")
            check(b"5.7.8" in e.smtp_error, f"no 5.7.8: {e.smtp_error!r}")
        else:
            raise Fail("a wrong password logged in")


def case_submissions_implicit_tls(ports, ca):
    with smtplib.SMTP_SSL(HOST, ports["submissions"], timeout=TIMEOUT_S, context=context(ca)) as s:
        s.ehlo("client.test")
        check(not s.has_extn("starttls"), "STARTTLS offered on implicit TLS")
        s.login(BOB, BOB_PW)
        refused = s.sendmail(BOB, [ALICE], message(BOB, ALICE, "submissions"))
        check(refused == {}, f"refused {refused}")


def case_tls_sessions_move(ports, ca):
    """Messages alternating between alice and bob (owned by different cores) over one TLS
    session: the session moves to each owner with its TLS state (and, on submissions, its
    login) and goes on."""
    with smtplib.SMTP(HOST, ports["smtp"], timeout=TIMEOUT_S) as s:
        s.ehlo("client.test")
        s.starttls(context=context(ca))
        s.ehlo("client.test")
        for i, to in enumerate([ALICE, BOB, ALICE]):
            refused = s.sendmail("sender@client.test", [to], message("sender@client.test", to, f"move-25-{i}"))
            check(refused == {}, f"refused {refused}")
        check(s.noop()[0] == 250, "NOOP after the moves")
    with smtplib.SMTP_SSL(HOST, ports["submissions"], timeout=TIMEOUT_S, context=context(ca)) as s:
        s.ehlo("client.test")
        s.login(BOB, BOB_PW)
        for i, to in enumerate([ALICE, BOB, ALICE]):
            refused = s.sendmail(BOB, [to], message(BOB, to, f"move-465-{i}"))
            check(refused == {}, f"refused {refused}")
        # Still logged in after the moves: relaying is allowed.
        code, _ = s.mail(BOB)
        check(code == 250, f"MAIL after the moves answered {code}")
        code, _ = s.rcpt("someone@elsewhere.test")
        check(code == 250, f"relay RCPT after the moves answered {code}")
        s.rset()


def case_smtp_starttls_injection(ports, ca):
    """Commands pipelined after STARTTLS in the clear are discarded (CVE-2011-0411)."""
    sock = socket.create_connection((HOST, ports["smtp"]), timeout=TIMEOUT_S)
    recv_until(sock, b"\r\n")
    sock.sendall(b"EHLO client.test\r\n")
    data = b""
    while b"\r\n250 " not in data:
        data += sock.recv(4096)
    sock.sendall(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@attacker.test>\r\n")
    reply = recv_until(sock, b"\r\n")
    check(reply.startswith(b"220 "), f"STARTTLS answered {reply!r}")
    # Whatever follows must be the TLS handshake, not replies to the injected commands.
    tls = context(ca).wrap_socket(sock, server_hostname=HOST)
    tls.sendall(b"NOOP\r\n")
    reply = recv_until(tls, b"\r\n")
    check(reply.startswith(b"250 2.0.0"), f"first reply over TLS was {reply!r}")
    # The session was reset: MAIL needs a new EHLO (RFC 3207 4.2).
    tls.sendall(b"MAIL FROM:<a@b.test>\r\n")
    reply = recv_until(tls, b"\r\n")
    check(reply.startswith(b"503"), f"MAIL without EHLO after TLS answered {reply!r}")
    tls.close()


# --- IMAP -----------------------------------------------------------------------------------


def case_imap_starttls_logindisabled(ports, ca):
    """With plaintext logins off: LOGINDISABLED in the clear, LOGIN works after STARTTLS."""
    m = imaplib.IMAP4(HOST, ports["imap"], timeout=TIMEOUT_S)
    caps = m.capabilities
    check("LOGINDISABLED" in caps, f"no LOGINDISABLED in the clear: {caps}")
    check("STARTTLS" in caps, f"no STARTTLS: {caps}")
    check("AUTH=PLAIN" not in caps, f"AUTH=PLAIN in the clear: {caps}")
    typ, data = m._simple_command("LOGIN", ALICE, ALICE_PW)
    check(typ == "NO", f"LOGIN in the clear answered {typ} {data}")
    m.starttls(ssl_context=context(ca))
    caps = m.capabilities
    check("LOGINDISABLED" not in caps and "AUTH=PLAIN" in caps, f"caps after TLS: {caps}")
    m.login(ALICE, ALICE_PW)
    typ, data = m.select("INBOX")
    check(typ == "OK", f"SELECT {typ} {data}")
    m.logout()


def case_imaps_login_fetch(ports, ca):
    """IMAPS for both users, several times: some logins move to the other core with TLS."""
    for i in range(6):
        for user, pw in ((ALICE, ALICE_PW), (BOB, BOB_PW)):
            m = imaplib.IMAP4_SSL(HOST, ports["imaps"], ssl_context=context(ca), timeout=TIMEOUT_S)
            check("STARTTLS" not in m.capabilities, f"STARTTLS on IMAPS: {m.capabilities}")
            if i % 2 == 0:
                m.login(user, pw)
            else:
                m.authenticate("PLAIN", lambda _: f"\0{user}\0{pw}".encode())
            typ, data = m.select("INBOX")
            check(typ == "OK", f"SELECT {typ} {data}")
            n = int(data[0])
            check(n >= 1, f"{user}: INBOX is empty")
            typ, data = m.fetch(b"1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            check(typ == "OK" and b"seed@client.test" in data[0][1], f"FETCH {typ} {data}")
            # A second command pipelined behind the first, over the moved TLS session.
            typ, data = m.noop()
            check(typ == "OK", f"NOOP {typ}")
            m.logout()


def case_imaps_authenticate_login(ports, ca):
    m = imaplib.IMAP4_SSL(HOST, ports["imaps"], ssl_context=context(ca), timeout=TIMEOUT_S)
    answers = iter([ALICE.encode(), ALICE_PW.encode()])
    typ, data = m.authenticate("LOGIN", lambda _: next(answers))
    check(typ == "OK", f"AUTHENTICATE LOGIN {typ} {data}")
    m.logout()


def case_imap_starttls_injection(ports, ca):
    sock = socket.create_connection((HOST, ports["imap"]), timeout=TIMEOUT_S)
    recv_until(sock, b"\r\n")
    sock.sendall(b"a STARTTLS\r\nb LOGIN alice@example.test alice-Pa55word-7f3a\r\n")
    reply = recv_until(sock, b"\r\n")
    check(reply.startswith(b"a OK"), f"STARTTLS answered {reply!r}")
    tls = context(ca).wrap_socket(sock, server_hostname=HOST)
    tls.sendall(b"c NOOP\r\n")
    reply = recv_until(tls, b"\r\n")
    check(reply.startswith(b"c OK"), f"first reply over TLS was {reply!r} (injected LOGIN ran?)")
    tls.sendall(b"d SELECT INBOX\r\n")
    reply = recv_until(tls, b"\r\n")
    check(reply.startswith(b"d BAD"), f"SELECT before login answered {reply!r}")
    tls.close()


# --- POP3 -----------------------------------------------------------------------------------


def case_pop3_stls(ports, ca):
    p = poplib.POP3(HOST, ports["pop3"], timeout=TIMEOUT_S)
    caps = p.capa()
    check("STLS" in caps, f"no STLS: {caps}")
    check("USER" not in caps, f"USER offered in the clear: {caps}")
    try:
        p.user(ALICE)
    except poplib.error_proto as e:
        check(b"[AUTH]" in e.args[0], f"USER in the clear: {e}")
    else:
        raise Fail("USER accepted in the clear")
    p.stls(context=context(ca))
    caps = p.capa()
    check("USER" in caps and "STLS" not in caps, f"caps after STLS: {caps}")
    p.user(ALICE)
    p.pass_(ALICE_PW)
    count, _ = p.stat()
    check(count >= 1, f"STAT {count}")
    p.quit()


def case_pop3s_retr(ports, ca):
    for user, pw in ((ALICE, ALICE_PW), (BOB, BOB_PW)) * 3:
        p = poplib.POP3_SSL(HOST, ports["pop3s"], context=context(ca), timeout=TIMEOUT_S)
        p.user(user)
        p.pass_(pw)
        _, lines, _ = p.retr(1)
        check(any(b"seed@client.test" in l for l in lines), f"{user}: RETR 1 has no seed subject")
        p.quit()


def case_pop3_stls_injection(ports, ca):
    sock = socket.create_connection((HOST, ports["pop3"]), timeout=TIMEOUT_S)
    recv_until(sock, b"\r\n")
    sock.sendall(b"STLS\r\nUSER alice@example.test\r\n")
    reply = recv_until(sock, b"\r\n")
    check(reply.startswith(b"+OK"), f"STLS answered {reply!r}")
    tls = context(ca).wrap_socket(sock, server_hostname=HOST)
    tls.sendall(b"PASS alice-Pa55word-7f3a\r\n")
    reply = recv_until(tls, b"\r\n")
    check(reply.startswith(b"-ERR"), f"PASS after an injected USER answered {reply!r}")
    tls.close()


# --- TLS itself -----------------------------------------------------------------------------


def case_tls_versions(ports, ca):
    """TLS 1.2 and 1.3 work; 1.1 is refused."""
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = context(ca)
        ctx.minimum_version = version
        ctx.maximum_version = version
        with socket.create_connection((HOST, ports["imaps"]), timeout=TIMEOUT_S) as raw:
            with ctx.wrap_socket(raw, server_hostname=HOST) as tls:
                check(tls.version() in ("TLSv1.2", "TLSv1.3"), f"version {tls.version()}")
                check(recv_until(tls, b"\r\n").startswith(b"* OK"), "no greeting")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        print("tls_versions: this OpenSSL cannot even offer TLS 1.1; skipped that half")
        return
    with socket.create_connection((HOST, ports["imaps"]), timeout=TIMEOUT_S) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=HOST):
                raise Fail("a TLS 1.1 handshake succeeded")
        except (ssl.SSLError, ConnectionResetError, OSError) as e:
            if isinstance(e, Fail):
                raise


def cert_of(port, server_hostname):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((HOST, port), timeout=TIMEOUT_S) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return tls.getpeercert(binary_form=True)


def case_print_certs(ports, ca):
    """Prints the DER (base64) served without SNI and for the names given in argv[4:]."""
    print("default " + base64.b64encode(cert_of(ports["imaps"], None)).decode())
    for name in sys.argv[4:]:
        print(name + " " + base64.b64encode(cert_of(ports["imaps"], name)).decode())


def case_hold_open(ports, ca):
    """Opens an IMAPS session, prints `open`, then waits for a line on stdin and checks the
    session still works (certificates reloaded meanwhile)."""
    m = imaplib.IMAP4_SSL(HOST, ports["imaps"], ssl_context=context(ca), timeout=TIMEOUT_S)
    m.login(ALICE, ALICE_PW)
    print("open", flush=True)
    sys.stdin.readline()
    typ, data = m.select("INBOX")
    check(typ == "OK", f"SELECT after the reload: {typ} {data}")
    m.logout()


CASES = {name[len("case_"):]: f for name, f in globals().items() if name.startswith("case_")}


def main():
    ports = json.loads(sys.argv[1])
    ca = sys.argv[2]
    case = sys.argv[3]
    socket.setdefaulttimeout(TIMEOUT_S)
    try:
        CASES[case](ports, ca)
    except Fail as e:
        print(f"{case}: FAIL: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        traceback.print_exc()
        sys.exit(1)
    print(f"{case}: ok")


if __name__ == "__main__":
    main()
