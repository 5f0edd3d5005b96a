"""The POP3 load tool of the benchmarks (bench/popload.py) counts what it retrieved: run
against Postern and against the reference Dovecot, on mailboxes whose contents the test
knows (empty ones, lines that need dot-stuffing, a line that is a lone dot)."""

import json
import subprocess
import sys

from conftest import PASSWORD, ROOT
from helpers import mx_send

TOOL = ROOT / "bench" / "popload.py"

BODIES = [b"plain\r\n", b".\r\n", b"..two\r\n.one\r\nend\r\n", (b"x" * 900 + b"\r\n") * 6, b""]


def message(i, body):
    return b"Subject: load %d\r\n\r\n" % i + body


def popload(port, user_format, password, first, last, *extra):
    r = subprocess.run([sys.executable, str(TOOL), f"127.0.0.1:{port}", user_format, password, str(first),
                        str(last), "2", "--json", "--window", "2", *extra],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def list_total(port, user, password, tls):
    import poplib
    from helpers import insecure_ctx
    p = poplib.POP3_SSL("127.0.0.1", port, context=insecure_ctx()) if tls else poplib.POP3("127.0.0.1", port)
    p.user(user)
    p.pass_(password)
    n, size = p.stat()
    p.quit()
    return n, size


def test_counts_against_postern(make_server):
    s = make_server(listeners=("smtp", "pop3s"))
    for i in (1, 2, 3):
        s.add_user(f"load{i}@example.test")
    s.start()
    # load1: every body; load2: two; load3: none at all.
    for i, body in enumerate(BODIES):
        assert mx_send(s, "x@far.test", ["load1@example.test"], message(i, body)) == {}
    for i in range(2):
        assert mx_send(s, "x@far.test", ["load2@example.test"], message(i, BODIES[i])) == {}
    got = popload(s.port("pop3s"), "load%d@example.test", PASSWORD, 1, 3, "--tls")
    want = [list_total(s.port("pop3s"), f"load{i}@example.test", PASSWORD, True) for i in (1, 2, 3)]
    assert got["messages"] == sum(n for n, _ in want) == len(BODIES) + 2, (got, want)
    assert got["octets"] == sum(size for _, size in want), (got, want)
    assert got["size_mismatches"] == 0 and got["accounts"] == 3
    # Retrieval deletes nothing.
    assert [list_total(s.port("pop3s"), f"load{i}@example.test", PASSWORD, True) for i in (1, 2, 3)] == want


def test_counts_against_dovecot(postfix_dovecot):
    import smtplib
    peer = postfix_dovecot(users=2)
    with smtplib.SMTP("127.0.0.1", peer.ports["smtp"], timeout=30) as c:
        for i, body in enumerate(BODIES):
            c.sendmail("x@far.test", [peer.address(1)], message(i, body))
    from helpers import wait_for
    wait_for(lambda: len(peer.maildir_files(1)) == len(BODIES), timeout=60)
    got = popload(peer.ports["pop3"], f"user%d@{peer.domain}", peer.password, 1, 2)
    want = [list_total(peer.ports["pop3"], peer.address(i), peer.password, False) for i in (1, 2)]
    assert got["messages"] == len(BODIES) == sum(n for n, _ in want), (got, want)
    assert got["octets"] == sum(size for _, size in want) and got["size_mismatches"] == 0, (got, want)
