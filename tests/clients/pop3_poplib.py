#!/usr/bin/env python3
"""Drives ringmail's POP3 server with Python's poplib for tests/pop3_clients.rs.

Usage: pop3_poplib.py HOST PORT OUTDIR CASE [ARGS...]

Every case logs in as alice (USER/PASS unless the case says otherwise), does what its name
says and writes OUTDIR/summary.txt, one `key<TAB>value` per line (a list is one line per
item, in order), and for RETR OUTDIR/retr-N.eml with the message as poplib returned it
(lines joined with CRLF, byte-stuffing removed by poplib). The Rust test compares those with
what `ringmail export` shows. Exits non-zero on any POP3 error the case does not expect.
"""

import base64
import os
import poplib
import sys

USER = "alice@example.test"
PASSWORD = "alice-Pa55word-7f3a"


def text(lines):
    return [line.decode("latin-1") for line in lines]


def login(host, port):
    pop = poplib.POP3(host, port, timeout=20)
    pop.user(USER)
    pop.pass_(PASSWORD)
    return pop


def listing(pop):
    resp, lines, _ = pop.list()
    return resp.decode(), [l.decode() for l in lines]


def uidls(pop):
    resp, lines, _ = pop.uidl()
    return resp.decode(), [l.decode() for l in lines]


def case_read(host, port, outdir):
    """STAT, LIST, UIDL, every RETR, TOP, CAPA; then QUIT without deleting."""
    pop = login(host, port)
    summary = {"welcome": pop.getwelcome().decode()}
    summary["capa"] = [" ".join([k] + v) for k, v in pop.capa().items()]
    summary["stat"] = "%d %d" % pop.stat()
    summary["list_resp"], summary["list"] = listing(pop)
    summary["uidl_resp"], summary["uidl"] = uidls(pop)
    summary["uidl_1"] = pop.uidl(1).decode()
    summary["list_1"] = pop.list(1).decode()
    summary["retr"] = []
    for entry in summary["list"]:
        n = int(entry.split()[0])
        resp, lines, octets = pop.retr(n)
        message = b"".join(line + b"\r\n" for line in lines)
        with open(os.path.join(outdir, "retr-%d.eml" % n), "wb") as f:
            f.write(message)
        summary["retr"].append("%d %s" % (n, resp.decode()))
    resp, lines, _ = pop.top(1, 0)
    summary["top_1_0"] = text(lines)
    resp, lines, _ = pop.top(2, 3)
    summary["top_2_3"] = text(lines)
    summary["noop"] = pop.noop().decode()
    summary["quit"] = pop.quit().decode()
    return summary


def case_apop(host, port, outdir):
    """poplib refuses APOP itself: the greeting carries no timestamp."""
    pop = poplib.POP3(host, port, timeout=20)
    summary = {"welcome": pop.getwelcome().decode()}
    try:
        pop.apop(USER, PASSWORD)
        summary["apop"] = "accepted"
    except poplib.error_proto as e:
        summary["apop"] = "refused: %s" % e
    # The server refuses it too when a client sends it anyway.
    try:
        pop._shortcmd("APOP %s c4c9334bac560ecc979e58001b3e22fb" % USER)
        summary["apop_sent"] = "accepted"
    except poplib.error_proto as e:
        summary["apop_sent"] = e.args[0].decode()
    summary["quit"] = pop.quit().decode()
    return summary


def case_auth_plain(host, port, outdir):
    """RFC 5034 AUTH PLAIN with an initial response, sent through poplib's _shortcmd."""
    pop = poplib.POP3(host, port, timeout=20)
    token = base64.b64encode(b"\0" + USER.encode() + b"\0" + PASSWORD.encode()).decode()
    summary = {"auth": pop._shortcmd("AUTH PLAIN " + token).decode()}
    summary["stat"] = "%d %d" % pop.stat()
    summary["quit"] = pop.quit().decode()
    return summary


def case_dele_quit(host, port, outdir, *numbers):
    """DELE each number, then QUIT (UPDATE: the messages are expunged)."""
    pop = login(host, port)
    summary = {"dele": [pop.dele(int(n)).decode() for n in numbers]}
    summary["stat_after_dele"] = "%d %d" % pop.stat()
    summary["quit"] = pop.quit().decode()
    return summary


def case_dele_rset_quit(host, port, outdir):
    """DELE everything, RSET, QUIT: nothing is expunged."""
    pop = login(host, port)
    count, _ = pop.stat()
    summary = {"dele": [pop.dele(n).decode() for n in range(1, count + 1)]}
    summary["rset"] = pop.rset().decode()
    summary["stat"] = "%d %d" % pop.stat()
    summary["quit"] = pop.quit().decode()
    return summary


CASES = {
    "read": case_read,
    "apop": case_apop,
    "auth_plain": case_auth_plain,
    "dele_quit": case_dele_quit,
    "dele_rset_quit": case_dele_rset_quit,
}


def main():
    host, port, outdir, case = sys.argv[1:5]
    summary = CASES[case](host, int(port), outdir, *sys.argv[5:])
    with open(os.path.join(outdir, "summary.txt"), "w", encoding="latin-1") as f:
        for key, value in summary.items():
            for item in value if isinstance(value, list) else [value]:
                f.write("%s\t%s\n" % (key, item))


if __name__ == "__main__":
    main()
