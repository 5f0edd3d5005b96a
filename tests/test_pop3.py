"""POP3 over real sockets: poplib, fetchmail, getmail, and raw scripts for bad input."""

import os
import poplib
import socket
import subprocess

import pytest

from conftest import PASSWORD
from helpers import ALICE, BOB, Raw, inbox, insecure_ctx, mx_send, pop3, strip_trace, wait_for

PLAIN = "[auth]\nallow_plaintext = true\n"


def fill(server, n=3, to=ALICE):
    msgs = []
    for i in range(n):
        m = (f"From: x@far.test\r\nTo: {to}\r\nSubject: message {i}\r\n\r\nBody of message {i}.\r\n"
             f".starts with a dot\r\nline three\r\n").encode()
        assert mx_send(server, "x@far.test", [to], m) == {}
        msgs.append(m)
    return msgs


def test_poplib_tls_stat_list_uidl_retr_top(server):
    msgs = fill(server, 3)
    p = pop3(server)
    n, size = p.stat()
    assert n == 3
    listing = p.list()[1]
    sizes = [int(l.split()[1]) for l in listing]
    assert sum(sizes) == size
    for i in range(3):
        resp, lines, octets = p.retr(i + 1)
        raw = b"\r\n".join(lines) + b"\r\n"
        assert len(raw) == sizes[i], "LIST size is the exact octet count RETR sends"
        assert strip_trace(raw) == msgs[i]
    uidls = [l.split()[1] for l in p.uidl()[1]]
    assert len(set(uidls)) == 3
    assert p.uidl(2).split()[2] == uidls[1]
    top = p.top(1, 1)[1]
    assert top[-2:] == [b"", b"Body of message 0."], top[-3:]
    top0 = p.top(1, 0)[1]
    assert top0[-1] == b"" and b"Subject: message 0" in top0
    p.quit()
    # UIDLs are stable across sessions and restarts.
    server.stop()
    server.start()
    p = pop3(server)
    assert [l.split()[1] for l in p.uidl()[1]] == uidls
    p.quit()


def test_dele_quit_deletes_dele_drop_does_not(server):
    fill(server, 3)
    p = pop3(server)
    p.dele(2)
    p.sock.shutdown(socket.SHUT_RDWR)  # dropped connection: no UPDATE
    p.sock.close()

    def logged_in():
        # The maildrop is [IN-USE] until the server has seen the connection go.
        try:
            return pop3(server)
        except poplib.error_proto as e:
            assert b"[IN-USE]" in e.args[0], e
            return None
    p = wait_for(logged_in, timeout=30)
    assert p.stat()[0] == 3
    keep = [l.split()[1] for l in p.uidl()[1]]
    p.dele(2)
    p.rset()
    p.dele(1)
    p.dele(3)
    assert p.stat()[0] == 1
    with pytest.raises(poplib.error_proto):
        p.retr(1)
    assert p.quit().startswith(b"+OK")
    p = pop3(server)
    assert [l.split()[1] for l in p.uidl()[1]] == [keep[1]]
    p.quit()


def test_plaintext_refused_then_stls(make_server):
    s = make_server()
    s.add_user(ALICE)
    s.start()
    fill(s, 1)
    p = poplib.POP3("127.0.0.1", s.port("pop3"))
    caps = p.capa()
    assert "STLS" in caps and "USER" not in caps
    with pytest.raises(poplib.error_proto) as e:
        p.user(ALICE)
    assert b"[AUTH] Plaintext login is disabled" in e.value.args[0]
    assert b"SSL/TLS" in e.value.args[0] and b"STARTTLS" in e.value.args[0]
    p.stls(context=insecure_ctx())
    caps = p.capa()
    assert "USER" in caps and "SASL" in caps and "STLS" not in caps
    p.user(ALICE)
    p.pass_(PASSWORD)
    assert p.stat()[0] == 1
    p.quit()


def test_plaintext_when_allowed_and_sasl_plain(make_server):
    s = make_server(extra_config=PLAIN)
    s.add_user(ALICE)
    s.start()
    fill(s, 2)
    p = poplib.POP3("127.0.0.1", s.port("pop3"))
    p.user(ALICE)
    p.pass_(PASSWORD)
    assert p.stat()[0] == 2
    p.quit()
    r = Raw(s.port("pop3"))
    assert r.line().startswith(b"+OK")
    import base64
    r.send(b"AUTH PLAIN " + base64.b64encode(b"\0" + ALICE.encode() + b"\0" + PASSWORD.encode()) + b"\r\n")
    assert r.line().startswith(b"+OK Logged in: 2 messages")
    r.send(b"QUIT\r\n")
    assert r.line().startswith(b"+OK")


def test_wrong_password_and_in_use(server):
    with pytest.raises(poplib.error_proto) as e:
        pop3(server, ALICE, "wrong")
    assert b"[AUTH]" in e.value.args[0] and b"full email address" in e.value.args[0]
    a = pop3(server)
    with pytest.raises(poplib.error_proto) as e:
        pop3(server)
    assert b"[IN-USE]" in e.value.args[0]
    a.quit()
    pop3(server).quit()


def test_kill_between_dele_and_quit_deletes_nothing(server):
    fill(server, 2)
    p = pop3(server)
    p.dele(1)
    p.dele(2)
    server.kill()
    server.start()
    p2 = pop3(server)
    assert p2.stat()[0] == 2
    p2.quit()


def test_stls_injection_is_discarded(make_server):
    s = make_server(extra_config=PLAIN)
    s.add_user(ALICE)
    s.start()
    fill(s, 1)
    r = Raw(s.port("pop3"))
    r.line()
    r.send(f"STLS\r\nUSER {ALICE}\r\nPASS {PASSWORD}\r\nDELE 1\r\nQUIT\r\n".encode())
    assert r.line().startswith(b"+OK Begin TLS")
    r.starttls()
    r.send(b"STAT\r\n")
    assert r.line().startswith(b"-ERR STAT is not valid now"), "the injected login never ran"
    r.send(b"QUIT\r\n")
    r.line()
    assert len(inbox(s)) == 1


def test_bad_input(make_server):
    s = make_server(extra_config="[pop3]\nmax_errors = 8\n")
    s.add_user(ALICE)
    s.start()
    fill(s, 1)
    r = Raw(s.port("pop3s"), tls=True)
    r.line()
    r.send(b"RETR 1\r\n")
    assert r.line().startswith(b"-ERR RETR is not valid now: log in first")
    r.send(b"X" * 5000 + b"\r\n")
    assert r.line() == b"-ERR Line too long"
    r.send(b"FOO\r\n")
    assert r.line().startswith(b"-ERR Unknown command")
    r.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
    r.line()
    assert r.line().startswith(b"+OK Logged in")
    for c in (b"RETR 2", b"RETR 0", b"DELE -1", b"TOP 1"):
        r.send(c + b"\r\n")
        assert r.line().startswith(b"-ERR"), c
    r.send(b"USER again\r\n")
    assert r.line().startswith(b"-ERR Too many errors")
    assert r.closed()


def test_fetchmail_keep_then_delete(server, tmp_root):
    fill(server, 3)
    out = tmp_root / "fm"
    out.mkdir()
    rc = tmp_root / "fetchmailrc"
    ids = tmp_root / "fetchids"

    def run(keep):
        rc.write_text(f"""set no syslog
poll 127.0.0.1 with proto POP3 port {server.port('pop3s')} uidl
  user "{ALICE}" there with password "{PASSWORD}"
  options {'keep' if keep else 'nokeep fetchall'} ssl no sslcertck
  mda "/bin/sh -c 'cat > {out}/msg.$$.$(date +%s%N)'"
""")
        os.chmod(rc, 0o600)
        r = subprocess.run(["fetchmail", "-f", str(rc), "-i", str(ids), "--nodetach", "--nosyslog"],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, FETCHMAILHOME=str(tmp_root)))
        return r

    r = run(keep=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(list(out.iterdir())) == 3
    r = run(keep=True)
    assert r.returncode == 1, "second run: nothing new (fetchmail exits 1)"
    assert len(list(out.iterdir())) == 3
    r = run(keep=False)
    assert len(inbox(server)) == 0
    got = sorted(f.read_bytes() for f in out.iterdir())
    assert all(b"Subject: message" in g for g in got)


def test_getmail_keep_then_delete(server, tmp_root):
    fill(server, 2)
    md = tmp_root / "Maildir"
    for d in ("cur", "new", "tmp"):
        (md / d).mkdir(parents=True)
        os.chmod(md / d, 0o777)
    os.chmod(tmp_root, 0o755)
    gdir = tmp_root / "getmail"
    gdir.mkdir()

    def run(delete):
        rc = gdir / "getmailrc"
        rc.write_text(f"""[retriever]
type = SimplePOP3SSLRetriever
server = 127.0.0.1
port = {server.port('pop3s')}
username = {ALICE}
password = {PASSWORD}

[destination]
type = Maildir
path = {md}/
{'user = nobody' if os.geteuid() == 0 else ''}

[options]
read_all = false
delete = {'true' if delete else 'false'}
verbose = 0
""")
        return subprocess.run(["getmail", "--getmaildir", str(gdir), "--rcfile", str(rc)],
                              capture_output=True, text=True, timeout=60)

    r = run(False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(list((md / "new").iterdir())) == 2
    r = run(False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(list((md / "new").iterdir())) == 2, "second run downloads nothing new"
    fill(server, 1)
    r = run(True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(list((md / "new").iterdir())) == 3
    assert inbox(server) == []
