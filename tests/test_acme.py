"""Certificates from an ACME CA: Debian's pebble issues them, dnsmasq maps the names to
loopback, and Python's mail clients check them against pebble's root, as a mail program
checks a Let's Encrypt certificate."""

import hashlib
import http.client
import imaplib
import json
import poplib
import smtplib
import socket
import ssl
import time

import pytest

from conftest import DOMAIN, PASSWORD, free_port
from helpers import wait_for
from peers import Dns, Pebble

HOST = "mail." + DOMAIN
ALICE = "alice@" + DOMAIN
LISTENERS = ("smtp", "submission", "submissions", "pop3s", "imaps", "http", "https")


# Mail clients that reach the server on loopback while asking for (SNI) and checking the
# certificate of a name, as they would on the internet.
class Imaps(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class Pop3s(poplib.POP3_SSL):
    def _create_socket(self, timeout):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout)
        return self.context.wrap_socket(sock, server_hostname=self.host)


class Smtp(smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        return socket.create_connection(("127.0.0.1", port), timeout)


class Smtps(smtplib.SMTP_SSL):
    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection(("127.0.0.1", port), timeout)
        return self.context.wrap_socket(sock, server_hostname=self._host)


def https_cert(port, name, ctx):
    c = http.client.HTTPSConnection(name, port, context=ctx, timeout=10)
    c._create_connection = lambda addr, *a, **k: socket.create_connection(("127.0.0.1", addr[1]), *a, **k)
    c.request("GET", "/.well-known/mta-sts.txt" if name.startswith("mta-sts.") else "/")
    c.getresponse().read()
    cert = c.sock.getpeercert(binary_form=True)
    c.close()
    return cert


def served(port, name):
    """The certificate a client asking for `name` gets, unchecked (DER)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        with ctx.wrap_socket(sock, server_hostname=name) as t:
            return t.getpeercert(binary_form=True)


def facts(der):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    c = x509.load_der_x509_certificate(der)
    names = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    spki = c.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"serial": c.serial_number, "names": names, "spki_sha256": hashlib.sha256(spki).hexdigest(),
            "issuer": c.issuer.rfc4514_string()}


def status(s):
    return json.loads(s.cli("acme", "status", "--json").stdout)


def wait_issued(e, name=HOST, timeout=60):
    try:
        return wait_for(lambda: issued(e.server, name), timeout=timeout, step=0.2)
    except AssertionError:
        pebble = (e.pebble.dir / "pebble.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"no certificate for {name}: {status(e.server)}\n"
                             f"{e.server.log_text()[-3000:]}\npebble:\n{pebble}")


def issued(s, name=HOST):
    for c in status(s)["certificates"]:
        if name in c["names"] and c["not_after"] > 0:
            return c
    return None


class Env:
    def __init__(self, make_server, tmp_root, challenge="tls-alpn-01", validity=3600, domains=(),
                 records=None):
        self.dns = Dns(free_port())
        self.records = records or [(HOST, "127.0.0.1"), ("autoconfig." + DOMAIN, "127.0.0.1"),
                                   ("autodiscover." + DOMAIN, "127.0.0.2")]
        self.dns.start(a=self.records)
        self.server = None
        ports = {k: free_port() for k in LISTENERS}
        self.pebble = Pebble(tmp_root / "pebble", self.dns.port, ports["http"], ports["https"],
                             validity=validity)
        self.pebble.start()
        extra = "\n".join([
            "[acme]", "enabled = true", f'directory = "{self.pebble.directory}"',
            f'contact = "postmaster@{DOMAIN}"', f'ca_file = "{self.pebble.ca_file}"',
            f'challenge = "{challenge}"', 'retry_min = "1s"',
            "domains = [" + ", ".join(f'"{d}"' for d in domains) + "]",
            "[dns]", f'nameservers = ["127.0.0.1:{self.dns.port}"]', 'timeout = "1s"'])
        self.server = make_server(listeners=LISTENERS, extra_config=extra)
        self.server.ports = ports
        self.server.write_config()
        self.server.add_user(ALICE)

    def ctx(self):
        return ssl.create_default_context(cadata=self.pebble.root())

    def stop(self):
        if self.server:
            self.server.kill()
        self.pebble.stop()
        self.dns.stop()


@pytest.fixture
def env(make_server, tmp_root):
    envs = []

    def make(**kw):
        e = Env(make_server, tmp_root / f"e{len(envs)}", **kw)
        envs.append(e)
        return e

    yield make
    for e in envs:
        e.stop()


def test_init_writes_acme_section_off(tmp_root):
    from conftest import run
    run("init", "--domain", DOMAIN, "--data-dir", tmp_root / "d", "--listen-ip", "127.0.0.1",
        "--port-offset", "30000")
    import tomllib
    acme = tomllib.loads((tmp_root / "d" / "postern.toml").read_text())["acme"]
    assert acme["enabled"] is False and acme["challenge"] == "tls-alpn-01"
    assert acme["directory"] == "https://acme-v02.api.letsencrypt.org/directory"
    r = run("quickstart", "bob@" + DOMAIN, "--data-dir", tmp_root / "q", "--listen-ip", "127.0.0.1",
            "--port-offset", "30000", "--no-serve", "--acme")
    assert "Let's Encrypt" in r.stdout
    assert tomllib.loads((tmp_root / "q" / "postern.toml").read_text())["acme"]["enabled"] is True


def test_certificate_issued_and_trusted_by_every_client(env):
    e = env()
    s = e.server.start()
    wait_issued(e)
    ctx = e.ctx()
    # Each client checks the chain against pebble's root and the name: no warning.
    with Imaps(HOST, s.port("imaps"), ssl_context=ctx) as m:
        m.login(ALICE, PASSWORD)
        cert = m.sock.getpeercert(binary_form=True)
    first = facts(cert)
    assert first["names"] == [HOST] and "Pebble" in first["issuer"]
    p = Pop3s(HOST, s.port("pop3s"), context=ctx)
    p.user(ALICE)
    p.pass_(PASSWORD)
    p.quit()
    with Smtps(HOST, s.port("submissions"), context=ctx) as c:
        c.login(ALICE, PASSWORD)
    for port in ("submission", "smtp"):
        with Smtp(HOST, s.port(port)) as c:
            c.starttls(context=ctx)
            assert c.ehlo()[0] == 250
    assert facts(https_cert(s.port("https"), HOST, ctx))["serial"] == first["serial"]
    # A second certificate for the domain's names, served to clients asking for them (SNI).
    wait_issued(e, "autoconfig." + DOMAIN, timeout=30)
    other = facts(https_cert(s.port("https"), "autoconfig." + DOMAIN, ctx))
    assert other["names"] == ["autoconfig." + DOMAIN] and other["serial"] != first["serial"]
    # A client naming nothing gets the hostname's.
    assert facts(served(s.port("imaps"), None))["serial"] == first["serial"]
    # Names whose DNS leads elsewhere, or nowhere, are not requested, and say why.
    st = status(s)
    skipped = {k["name"]: k["reason"] for k in st["skipped"]}
    assert "127.0.0.2" in skipped["autodiscover." + DOMAIN]
    assert "no A or AAAA record" in skipped["mta-sts." + DOMAIN]
    text = s.cli("acme", "status").stdout
    assert HOST in text and "days left" in text and "not requested: mta-sts." + DOMAIN in text
    # The key's TLSA 3 1 1 record, as postern dns prints it, is the served key's.
    dns_out = s.cli("dns", DOMAIN).stdout
    assert f"TLSA  3 1 1 {first['spki_sha256']}" in dns_out.replace("\t", "  ") or \
        f"3 1 1 {first['spki_sha256']}" in dns_out, dns_out
    # The web admin's data: the same status over the API.
    tok = s.cli("token", "create", "acme-test").stdout.strip()
    c = http.client.HTTPSConnection(HOST, s.port("https"), context=ctx, timeout=10)
    c._create_connection = lambda addr, *a, **k: socket.create_connection(("127.0.0.1", addr[1]), *a, **k)
    c.request("GET", "/api/v1/acme", headers={"Authorization": f"Bearer {tok}"})
    r = c.getresponse()
    body = json.loads(r.read())
    assert r.status == 200 and any(HOST in x["names"] for x in body["status"]["certificates"]), body


def test_renewal_replaces_certificate_in_running_listeners_and_keeps_key(env):
    # 30-second certificates: renewed 20 s in, two thirds of their lifetime.
    e = env(validity=30, records=[(HOST, "127.0.0.1")])
    s = e.server.start()
    wait_issued(e)
    ctx = e.ctx()
    with Imaps(HOST, s.port("imaps"), ssl_context=ctx) as m:
        first = facts(m.sock.getpeercert(binary_form=True))
    renewed = wait_for(lambda: facts(served(s.port("imaps"), HOST))["serial"] != first["serial"],
                       timeout=60)
    assert renewed, s.log_text()
    with Imaps(HOST, s.port("imaps"), ssl_context=ctx) as m:
        second = facts(m.sock.getpeercert(binary_form=True))
    assert second["serial"] != first["serial"]
    # The same key: a TLSA 3 1 1 record stays true across renewals.
    assert second["spki_sha256"] == first["spki_sha256"]
    # Every listener serves the new one without a restart.
    assert facts(served(s.port("pop3s"), HOST))["serial"] in (second["serial"],
                                                               facts(served(s.port("imaps"), HOST))["serial"])
    assert s.proc.poll() is None


def test_failed_challenge_keeps_the_old_certificate(env):
    e = env(records=[(HOST, "127.0.0.1")])
    s = e.server.start()
    wait_issued(e)
    before = facts(served(s.port("imaps"), HOST))
    # The name now leads to an address where nothing answers: the CA's check fails.
    e.dns.start(a=[(HOST, "127.0.0.237")])
    r = s.cli("acme", "renew", "--force", check=False)
    out = r.stdout + r.stderr
    assert "failed" in out and "fix" in out.lower(), out
    st = issued(s)
    assert st["last_error"] and st["fix"] and st["failures"] == 1
    assert facts(served(s.port("imaps"), HOST))["serial"] == before["serial"]
    # Trusted still: the old certificate is served, complete.
    with Imaps(HOST, s.port("imaps"), ssl_context=e.ctx()) as m:
        m.login(ALICE, PASSWORD)
    assert "order failed" in s.log_text()


def test_http01_and_key_rollover(env):
    e = env(challenge="http-01", records=[(HOST, "127.0.0.1")])
    s = e.server.start()
    wait_issued(e)
    old = facts(served(s.port("imaps"), HOST))
    out = s.cli("acme", "rollover").stdout
    assert "TLSA  3 1 1" in out
    new_tlsa = out.split("TLSA  3 1 1 ")[1].split()[0]
    assert new_tlsa != old["spki_sha256"]
    dns_out = s.cli("dns", DOMAIN).stdout
    assert old["spki_sha256"] in dns_out and new_tlsa in dns_out
    # Until finished, the old key is served.
    assert facts(served(s.port("imaps"), HOST))["spki_sha256"] == old["spki_sha256"]
    out = s.cli("acme", "rollover", "--finish").stdout
    assert "new key is in use" in out, out
    now = facts(served(s.port("imaps"), HOST))
    assert now["spki_sha256"] == new_tlsa and now["serial"] != old["serial"]
    dns_out = s.cli("dns", DOMAIN).stdout
    assert new_tlsa in dns_out and old["spki_sha256"] not in dns_out
    with Imaps(HOST, s.port("imaps"), ssl_context=e.ctx()) as m:
        m.login(ALICE, PASSWORD)


def test_unreachable_directory_keeps_serving_and_says_why(make_server):
    port = free_port()
    s = make_server(listeners=("imaps", "https"), extra_config="\n".join([
        "[acme]", "enabled = true", f'directory = "https://127.0.0.1:{port}/dir"',
        "check_dns = false", 'retry_min = "1h"']))
    s.start()
    assert wait_for(lambda: status(s)["certificates"] and status(s)["certificates"][0]["last_error"],
                    timeout=30), s.log_text()
    c = status(s)["certificates"][0]
    assert "cannot reach the ACME directory" in c["last_error"] and c["next_try"] > time.time() + 3000
    # The [tls] certificate is served meanwhile.
    assert facts(served(s.port("imaps"), HOST))["names"] == [HOST]
    assert "cannot reach the ACME directory" in s.cli("acme", "status").stdout
