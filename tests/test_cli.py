"""The real binary: init, domain/user/alias commands offline and against a running server,
serve, SIGTERM, and the errors a person gets."""

import imaplib
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import BIN, DOMAIN, PASSWORD, run
from helpers import insecure_ctx


def test_help_everywhere():
    for args in ([], ["init"], ["serve"], ["user"], ["user", "add"], ["alias"], ["domain"], ["quickstart"]):
        r = run(*args, "--help")
        assert "Usage:" in r.stdout


def test_init_writes_everything(tmp_root):
    d = tmp_root / "pd"
    r = run("init", "--domain", "Example.Test", "--data-dir", d, "--listen-ip", "127.0.0.1", "--port-offset", "30000")
    assert "MX  10 mail.example.test." in r.stdout
    assert "_domainkey.example.test.  TXT  \"v=DKIM1; k=rsa; p=" in r.stdout
    assert "_dmarc.example.test." in r.stdout
    cfg = (d / "postern.toml").read_text()
    assert 'hostname = "mail.example.test"' in cfg
    assert 'smtp = ["127.0.0.1:30025"]' in cfg
    assert (d / "tls" / "cert.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert oct((d / "tls" / "key.pem").stat().st_mode & 0o777) == "0o600"
    assert list((d / "dkim").glob("example.test.*.pem"))
    # The domain is local right away.
    assert run("-c", d / "postern.toml", "domain", "list").stdout.split() == ["example.test"]
    # init never overwrites.
    r = run("init", "--domain", "example.test", "--data-dir", d, check=False)
    assert r.returncode != 0 and "already exists" in r.stderr


def quota_root(server, user, password):
    """The INBOX's quota as IMAP tells it: (KB used, KB limit) or None."""
    import imaplib
    import re
    from helpers import insecure_ctx
    with imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=30) as c:
        c.login(user, password)
        typ, data = c.getquotaroot("INBOX")
        assert typ == "OK", data
        m = re.search(rb"\(STORAGE (\d+) (\d+)", data[1][0] or b"")
        return (int(m.group(1)), int(m.group(2))) if m else None


def test_offline_admin_commands(make_server):
    """Changes made offline, read back by the running server over IMAP and SMTP."""
    import imaplib
    import smtplib
    from helpers import insecure_ctx
    s = make_server()
    s.cli("domain", "add", "Other.Test")
    assert s.cli("domain", "list").stdout.split() == ["example.test", "other.test"]
    r = s.add_user("Alice@Example.Test", PASSWORD, "--quota", "10M")
    assert r.stdout.strip() == "user alice@example.test added"
    s.cli("user", "add", "bob@example.test", "--password", "an0ther-pass")
    out = s.cli("user", "list").stdout
    assert "alice@example.test" in out and "quota 10.0 MB" in out and "bob@example.test" in out
    s.cli("alias", "add", "team@example.test", "alice@example.test", "bob@example.test", "x@far.test")
    assert "team@example.test\t-> alice@example.test, bob@example.test, x@far.test" in s.cli("alias", "list").stdout
    s.cli("alias", "del", "team@example.test", "x@far.test")
    assert "x@far.test" not in s.cli("alias", "list").stdout
    s.cli("user", "passwd", "bob@example.test", "--password-stdin", input="n3w-password\n")
    s.cli("user", "quota", "bob@example.test", "1G")
    s.start()
    # The server sees the new password, both quotas, and the alias without its removed target.
    with imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx(), timeout=30) as c:
        with pytest.raises(imaplib.IMAP4.error):
            c.login("bob@example.test", "an0ther-pass")
    assert quota_root(s, "bob@example.test", "n3w-password") == (0, 1024 * 1024)
    assert quota_root(s, "alice@example.test", PASSWORD) == (0, 10 * 1024)
    with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=30) as c:
        assert c.sendmail("x@far.test", ["team@example.test"], b"Subject: team\r\n\r\nx\r\n") == {}
    from helpers import inbox
    assert len(inbox(s, "alice@example.test")) == 1
    assert len(inbox(s, "bob@example.test", "n3w-password")) == 1
    assert s.stop() == 0
    s.cli("user", "del", "bob@example.test")
    assert "bob@example.test" not in s.cli("user", "list").stdout.split()
    s.cli("alias", "del", "team@example.test")
    s.cli("domain", "del", "other.test")
    assert s.cli("domain", "list").stdout.split() == ["example.test"]
    s.start()
    with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=30) as c:
        c.ehlo("client.test")
        c.mail("x@far.test")
        assert c.rcpt("team@example.test")[0] == 550, "the alias is gone"
        assert c.rcpt("bob@example.test")[0] == 550, "the user is gone"
        assert c.rcpt("someone@other.test")[0] >= 500, "the domain is no longer ours"
    with imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx(), timeout=30) as c:
        with pytest.raises(imaplib.IMAP4.error):
            c.login("bob@example.test", "n3w-password")


def test_bad_input_gets_one_line_errors(make_server):
    s = make_server()
    s.add_user("alice@" + DOMAIN)
    cases = [
        (["user", "add", "x@example.org", "--password", "s3cret-pass"],
         "error: domain example.org is not local; add it with: postern domain add example.org"),
        (["user", "add", "alice@example.test", "--password", "s3cret-pass"],
         "error: user alice@example.test already exists"),
        (["user", "add", "new@example.test", "--password", ""], "error: the password is empty"),
        (["user", "add", "new@example.test", "--password", "short"], "error: the password is too short"),
        (["user", "add", "new@example.test", "--password", "password"], "error: the password is one of the most common passwords"),
        (["user", "add", "not-an-address", "--password", "s3cret-pass"], "is not a mail address"),
        (["user", "del", "ghost@example.test"], "error: user ghost@example.test does not exist"),
        (["domain", "add", "example.test"], "error: domain example.test already exists"),
        (["domain", "add", "no_such domain"], "is not a domain name"),
        (["domain", "del", "example.test"], "still has 1 account(s)"),
        (["alias", "add", "alice@example.test", "bob@example.test"], "is a user"),
    ]
    before = s.cli("user", "list").stdout
    for args, want in cases:
        r = s.cli(*args, check=False)
        assert r.returncode != 0, args
        assert want in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert s.cli("user", "list").stdout == before, "failed commands changed nothing"


def test_malformed_config_names_key_and_line(tmp_root):
    cfg = tmp_root / "bad.toml"
    cfg.write_text('hostname = "mail.example.test"\n\n[smtp]\nmax_recipient = 5\n')
    r = run("-c", cfg, "config", "check", check=False)
    assert r.returncode != 0
    assert "line 4" in r.stderr and "max_recipient" in r.stderr
    cfg.write_text('hostname = "mail.example.test"\n[listen]\nsmtp = "127.0.0.1:25"\n')
    r = run("-c", cfg, "serve", check=False)
    assert r.returncode != 0 and "line 3" in r.stderr
    cfg.write_text('hostname = "mail.example.test"\n[listen]\nsmtp = ["localhost:25"]\n')
    r = run("-c", cfg, "serve", check=False)
    assert r.returncode != 0 and "listen.smtp" in r.stderr


def test_config_search_order(tmp_root, make_server):
    s = make_server()
    env = dict(os.environ, POSTERN_CONFIG=str(s.config))
    r = subprocess.run([str(BIN), "domain", "list"], cwd=tmp_root, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split() == ["example.test"], r.stderr
    env.pop("POSTERN_CONFIG")
    r = subprocess.run([str(BIN), "domain", "list"], cwd=tmp_root, env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "postern init" in r.stderr


def test_unwritable_data_dir(tmp_root):
    d = tmp_root / "ro"
    d.mkdir()
    os.chmod(d, 0o500)
    try:
        if os.geteuid() == 0:
            # root writes anywhere; use a path under a file instead
            target = tmp_root / "file"
            target.write_text("x")
            r = run("init", "--domain", DOMAIN, "--data-dir", target / "sub", check=False)
        else:
            r = run("init", "--domain", DOMAIN, "--data-dir", d / "sub", check=False)
        assert r.returncode != 0
        assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    finally:
        os.chmod(d, 0o700)


def test_serve_admin_while_running_and_sigterm(make_server):
    s = make_server()
    s.add_user("alice@" + DOMAIN)
    s.start()
    # Commands go through the running server; their effect is visible at once.
    s.cli("user", "add", "carol@example.test", "--password", "carols-pass1")
    assert "carol@example.test" in s.cli("user", "list").stdout
    from helpers import pop3
    pop3(s, "carol@example.test", "carols-pass1").quit()
    r = s.cli("user", "add", "carol@example.test", "--password", "carols-pass1", check=False)
    assert r.returncode != 0 and "already exists" in r.stderr
    # A second server on the same data directory is refused and changes nothing.
    r = run("-c", s.config, "serve", check=False, timeout=20)
    assert r.returncode != 0
    assert "in use by another postern process" in r.stderr, r.stderr
    assert str(s.proc.pid) in r.stderr
    assert s.proc.poll() is None, "the first server keeps running"
    assert s.stop(signal.SIGTERM) == 0
    log = s.log_text()
    assert "shutting down" in log and "stopped" in log
    assert not (s.data / "control.sock").exists()
    # Offline again: the same data is there.
    assert "carol@example.test" in s.cli("user", "list").stdout


def test_sigint_also_stops(make_server):
    s = make_server()
    s.start()
    assert s.stop(signal.SIGINT) == 0


def test_kill_9_loses_nothing_committed(make_server):
    s = make_server()
    s.start()
    for i in range(5):
        s.cli("user", "add", f"u{i}@example.test", "--password", "s3cret-pass")
    s.kill()
    out = s.cli("user", "list").stdout
    for i in range(5):
        assert f"u{i}@example.test" in out
    s.start()
    assert s.stop() == 0


def test_quickstart_sets_up_and_prints_settings(tmp_root):
    d = tmp_root / "qs"
    r = run("quickstart", "alice@example.test", "--data-dir", d, "--listen-ip", "127.0.0.1",
            "--port-offset", "30000", "--no-serve")
    out = r.stdout
    assert "Username        alice@example.test" in out
    pw = [l.split()[1] for l in out.splitlines() if l.strip().startswith("Password")][0]
    assert len(pw) == 16
    assert "Incoming mail (IMAP)   server mail.example.test  port 30993  security SSL/TLS" in out
    assert "(or port 30143 with STARTTLS)" in out
    assert "Outgoing mail (SMTP)   server mail.example.test  port 30465  security SSL/TLS" in out
    assert "alice@example.test" in run("-c", d / "postern.toml", "user", "list").stdout
    # The first account runs the server in the browser too.
    assert "Manage the server in your browser" in out
    assert "https://mail.example.test:30443/admin" in out
    assert 'admins = ["alice@example.test"]' in (d / "postern.toml").read_text()
    # No step left to do but the last: the account is made.
    assert "Next steps" not in out and "user add" not in out
    assert out.rstrip().splitlines()[-1] == f"Start the server with: postern -c {d / 'postern.toml'} serve"


def test_sighup_reloads_the_certificate(make_server):
    import ssl as _ssl
    s = make_server()
    s.start()

    def served_cn():
        raw = socket.create_connection(("127.0.0.1", s.port("imaps")))
        ctx = _ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = _ssl.CERT_NONE
        with ctx.wrap_socket(raw) as t:
            der = t.getpeercert(binary_form=True)
        out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"], input=der,
                             capture_output=True).stdout.decode()
        return out.strip()

    assert "mail.example.test" in served_cn()
    tls = s.data / "tls"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "30", "-subj", "/CN=renewed.example.test", "-keyout", str(tls / "key.pem"),
                    "-out", str(tls / "cert.pem")], check=True, capture_output=True)
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 30
    while "renewed.example.test" not in served_cn():
        assert time.time() < deadline, "certificate not reloaded"
        time.sleep(0.1)
    # A broken file keeps the old certificate in service.
    (tls / "cert.pem").write_text("not a certificate")
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 30
    while "TLS reload failed" not in s.log_text():
        assert time.time() < deadline, "the failed reload was never reported"
        time.sleep(0.1)
    assert "renewed.example.test" in served_cn()


def test_commands_right_after_serve_starts_are_answered(make_server):
    """A command run the moment `postern serve` starts waits for the server instead of failing
    with "is it still starting?"; the account it adds is the running server's."""
    s = make_server(listeners=("imaps",))
    s.start(wait=False)
    r = s.add_user("late@example.test")
    assert r.returncode == 0, r.stderr
    s.wait_ready()
    with imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx(), timeout=30) as c:
        assert c.login("late@example.test", PASSWORD)[0] == "OK"
