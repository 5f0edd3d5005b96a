"""`postern check`: each overlooked detail of a mail program's settings, made for real against
a running server, and the diagnosis and fix it prints."""

import datetime
import json
import re
import socket
import subprocess
import time

import pytest

from conftest import DOMAIN, PASSWORD, free_port, run
from helpers import ALICE
from peers import Dns

HOST = "mail." + DOMAIN


@pytest.fixture
def env(make_server):
    """A server with alice@, its names in a loopback DNS server, and SRV records publishing
    its settings."""
    s = make_server(listeners=("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps", "http"))
    s.add_user(ALICE)
    s.start()
    dns = Dns(free_port())
    p = s.port
    dns.start(a=[(HOST, "127.0.0.1"), ("other." + DOMAIN, "127.0.0.1")],
              srv=[(f"_imaps._tcp.{DOMAIN}", HOST, p("imaps")),
                   (f"_imap._tcp.{DOMAIN}", HOST, p("imap")),
                   (f"_pop3s._tcp.{DOMAIN}", HOST, p("pop3s")),
                   (f"_submissions._tcp.{DOMAIN}", HOST, p("submissions")),
                   (f"_submission._tcp.{DOMAIN}", HOST, p("submission"))])
    s.dns = dns
    yield s
    dns.stop()


def check(server, *args, password=PASSWORD, ca=True, address=ALICE, timeout=90):
    cmd = ["check", address, "--password-stdin", "--dns", f"127.0.0.1:{server.dns.port}", "--timeout", "3"]
    if ca:
        cmd += ["--ca", server.data / "tls" / "cert.pem"]
    r = run(*cmd, *args, input=password + "\n", check=False, timeout=timeout)
    print(f"$ postern {' '.join(map(str, cmd + list(args)))}\n{r.stdout}{r.stderr}")
    return r.returncode, r.stdout + r.stderr


def section(out, word):
    """The lines of the report section whose title contains `word`."""
    blocks = out.split("\n\n")
    return "\n".join(b for b in blocks if word in b.splitlines()[0])


def test_good_settings_found_by_srv_and_a_message_goes_round(env):
    rc, out = check(env, "--roundtrip", "--wait", "20s")
    assert rc == 0, out
    assert "SRV records for IMAP, POP3, SMTP" in out, out
    imap = section(out, "Incoming mail, IMAP")
    assert f"port {env.port('imaps')}, SSL/TLS" in imap
    assert "logged in as " + ALICE in imap and "certificate for " + HOST in imap
    assert "logged in as " + ALICE in section(out, "Incoming mail, POP3")
    assert "takes mail from " + ALICE + " to other domains" in section(out, "Outgoing mail")
    assert re.search(r"found in the inbox by IMAP after [\d.]+ s, then deleted", out), out
    assert "All checks passed" in out
    # The test message was deleted again.
    rc, out = check(env, "--no-discover", "--imap", f"{HOST}:{env.port('imaps')}:ssl")
    assert "the inbox holds 0 message(s)" in out, out


def test_settings_found_by_autoconfig(env):
    url = f"http://127.0.0.1:{env.port('http')}/mail/config-v1.1.xml?emailaddress={ALICE}"
    rc, out = check(env, "--autoconfig", url, "--json")
    assert rc == 0, out
    report = json.loads(out)
    assert report["ok"] and report["failures"] == 0
    first = report["sections"][0]
    assert any("settings published by autoconfig" in f["what"] for f in first["findings"])
    titles = [s["title"] for s in report["sections"]]
    assert any("IMAP" in t and "autoconfig" in t for t in titles), titles


def test_wrong_server_name(env):
    rc, out = check(env, "--imap", f"imap.wrong.test:{env.port('imaps')}:ssl")
    assert rc == 1
    assert 'the server name "imap.wrong.test" does not exist' in out
    assert f"server {HOST}, port {env.port('imaps')}, SSL/TLS" in out, out


def test_wrong_port(env):
    closed = free_port()
    rc, out = check(env, "--imap", f"{HOST}:{closed}:ssl")
    assert rc == 1
    assert f"nothing answers on port {closed} of {HOST} (connection refused)" in out
    assert f"port {env.port('imaps')}, SSL/TLS" in out, out


def test_ssl_set_on_the_starttls_port(env):
    rc, out = check(env, "--imap", f"{HOST}:{env.port('imap')}:ssl", "--no-discover")
    assert rc == 1
    assert f"port {env.port('imap')} of {HOST} starts in plain text" in out, out
    assert f"Set the connection security to STARTTLS for port {env.port('imap')}" in out


def test_starttls_set_on_the_ssl_port(env):
    rc, out = check(env, "--smtp", f"{HOST}:{env.port('submissions')}:starttls", "--no-discover")
    assert rc == 1
    assert f"port {env.port('submissions')} of {HOST} expects SSL/TLS from the first byte" in out, out
    assert f"Set the connection security to SSL/TLS for port {env.port('submissions')}" in out


def test_incoming_server_pointed_at_the_smtp_port(env):
    rc, out = check(env, "--imap", f"{HOST}:{env.port('smtp')}:starttls", "--no-discover")
    assert rc == 1
    assert f"port {env.port('smtp')} of {HOST} speaks SMTP, not IMAP" in out, out


def test_self_signed_certificate(env):
    rc, out = check(env, "--imap", f"{HOST}:{env.port('imaps')}:ssl", "--no-discover", ca=False)
    assert rc == 1
    assert "certificate is not trusted: it is self-signed" in out, out
    fp = subprocess.run(["openssl", "x509", "-in", env.data / "tls" / "cert.pem", "-noout", "-fingerprint",
                         "-sha256"], capture_output=True, text=True, check=True).stdout
    assert fp.strip().split("=", 1)[1] in out, (fp, out)


def test_certificate_name_mismatch(env):
    rc, out = check(env, "--imap", f"other.{DOMAIN}:{env.port('imaps')}:ssl", "--no-discover")
    assert rc == 1
    assert f"certificate is for {HOST}, not for other.{DOMAIN}" in out, out
    assert f"Use the name the certificate is for, {HOST}, as the server name" in out


def expired_cert(path_cert, path_key):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=100))
            .not_valid_after(now - datetime.timedelta(days=3))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
            .sign(key, hashes.SHA256()))
    path_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return (now - datetime.timedelta(days=3)).strftime("%Y-%m-%d")


def test_expired_certificate(env):
    env.stop()
    day = expired_cert(env.data / "tls" / "cert.pem", env.data / "tls" / "key.pem")
    env.start()
    rc, out = check(env, "--imap", f"{HOST}:{env.port('imaps')}:ssl", "--no-discover")
    assert rc == 1
    assert f"certificate has expired (on {day}" in out, out
    assert "must renew the certificate" in out


def test_wrong_password(env):
    rc, out = check(env, "--imap", f"{HOST}:{env.port('imaps')}:ssl", "--pop3",
                    f"{HOST}:{env.port('pop3s')}:ssl", "--no-discover", password="wrong")
    assert rc == 1
    imap = section(out, "IMAP")
    assert f'the server refused the user name "{ALICE}" with this password' in imap, out
    assert "Check the password" in imap and "Caps Lock" in imap
    assert "but accepts" not in out
    assert f'refused the user name "{ALICE}"' in section(out, "POP3")


def test_user_name_must_be_the_full_address(env):
    rc, out = check(env, "--imap", f"{HOST}:{env.port('imaps')}:ssl", "--smtp",
                    f"{HOST}:{env.port('submissions')}:ssl", "--username", "alice", "--no-discover")
    assert rc == 1
    assert f'the server refused the user name "alice" but accepts "{ALICE}"' in out, out
    assert f"Use your full email address, {ALICE}, as the user name." in out
    # The outgoing check goes on with the name that works.
    assert "logged in as " + ALICE in section(out, "Outgoing")


def test_outgoing_server_needs_authentication(env):
    rc, out = check(env, "--smtp", f"{HOST}:{env.port('submission')}:starttls", "--smtp-no-auth", "--no-discover")
    assert rc == 1
    assert "the outgoing server accepts mail only after you log in" in out, out
    assert "My outgoing server (SMTP) requires authentication" in out


def test_plain_text_connection_is_warned(env):
    rc, out = check(env, "--imap", f"{HOST}:{env.port('imap')}:none", "--no-discover")
    assert "WARN" in out and "the connection is not encrypted" in out, out
    assert f"Set the connection security to STARTTLS (the server offers it on port {env.port('imap')})" in out
    # Postern takes no password in the clear: that is a failure with its fix.
    assert rc == 1
    assert "the server does not take passwords over an unencrypted connection" in out


def blackhole(ip, port):
    """A port that accepts no connection and answers nothing: a listener with a full backlog,
    so further SYNs are dropped as a firewall would."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((ip, port))
    ls.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect((ip, port))
        except BlockingIOError:
            pass
        fillers.append(c)
    time.sleep(0.2)
    return [ls] + fillers


def test_port_that_does_not_answer(env):
    port = free_port()
    socks = blackhole("127.0.0.1", port)
    try:
        rc, out = check(env, "--imap", f"127.0.0.1:{port}:ssl", "--no-discover")
    finally:
        for s in socks:
            s.close()
    assert rc == 1
    assert f"port {port} of 127.0.0.1 does not answer within 3 s" in out, out
    assert "A firewall" in out


def test_port_25_blocked(env):
    try:
        socks = blackhole("127.0.0.2", 25)
    except PermissionError:
        pytest.skip("binding port 25 needs root")
    try:
        rc, out = check(env, "--smtp", "127.0.0.2:25:starttls", "--no-discover")
    finally:
        for s in socks:
            s.close()
    assert rc == 1
    assert "port 25 of 127.0.0.2 does not answer" in out, out
    assert "Many Internet providers block port 25" in out and "port 587 with STARTTLS" in out


def test_mx_port_offers_no_login(env):
    rc, out = check(env, "--smtp", f"{HOST}:{env.port('smtp')}:starttls", "--no-discover")
    assert rc == 1
    # STARTTLS works there, but AUTH is not offered: that port is for other servers.
    assert "certificate for " + HOST in out
    assert f"the server offers no login on port {env.port('smtp')}" in out, out
