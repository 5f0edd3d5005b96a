"""`postern doctor`: each check against the real fault, made on purpose (expired certificate,
missing DNS record on a loopback DNS server, relay opened by configuration, blocked port 25,
a skewed clock, a stuck queue, a blocklisted IP...), and the message and fix it prints."""

import datetime
import json
import os
import socket
import subprocess

import pytest

from conftest import BIN, DOMAIN, free_port
from helpers import ALICE, dkim_key_record, submit, wait_for
from peers import Dns, Ntp, Sink
from test_check import blackhole

HOST = "mail." + DOMAIN
MX_IP = "127.0.0.3"
# The host name's address in DNS only (documentation range; nothing connects to it): resolvers
# answer the reverse of 127.0.0.0/8 themselves ("localhost").
HOST_IP = "192.0.2.10"


def hand_zone(server):
    """The records a healthy example.test publishes, written out here by hand as its
    administrator would: from the host name, the listeners' ports and the DKIM key file (its
    public half computed by `cryptography`), never from what `postern dns` prints. Returned as
    dnsmasq arguments (see peers.Dns.start)."""
    selector, dkim = dkim_key_record(server)
    return dict(
        mx=[(DOMAIN, HOST, 10)],
        a=[(HOST, HOST_IP)],
        ptr=[(HOST_IP, HOST)],
        txt=[(DOMAIN, "v=spf1 mx ~all"),
             (f"{selector}._domainkey.{DOMAIN}", dkim),
             (f"_dmarc.{DOMAIN}", f"v=DMARC1; p=reject; rua=mailto:dmarc@{DOMAIN}"),
             (f"_mta-sts.{DOMAIN}", "v=STSv1; id=20261201T000000"),
             (f"_smtp._tls.{DOMAIN}", f"v=TLSRPTv1; rua=mailto:tls-reports@{DOMAIN}")],
        srv=[(f"_submissions._tcp.{DOMAIN}", HOST, server.port("submissions")),
             (f"_submission._tcp.{DOMAIN}", HOST, server.port("submission")),
             (f"_imaps._tcp.{DOMAIN}", HOST, server.port("imaps")),
             (f"_pop3s._tcp.{DOMAIN}", HOST, server.port("pop3s"))],
        cname=[(f"mta-sts.{DOMAIN}", HOST), (f"autoconfig.{DOMAIN}", HOST), (f"autodiscover.{DOMAIN}", HOST)],
    )


@pytest.fixture
def doc(make_server):
    """make(extra=..., records=fn(recs)) -> a Postern with DNS, an NTP server and a remote
    MX (a sink) all on loopback, the hand-written zone published unless `records` changes it."""
    dns = Dns(free_port())
    rport = free_port()
    ntp_port = free_port()
    made = []

    def make(extra="", records=None, ntp_offset=0.0, sink=True, start=True, sink_script=None):
        ntp = Ntp(ntp_port, ntp_offset)
        made.append(ntp)
        s = make_server(listeners=("smtp", "submission", "submissions", "imaps", "pop3s", "http"),
                        extra_config=f"""
[dns]
nameservers = ["127.0.0.1:{dns.port}"]
[delivery]
remote_port = {rport}
retry = ["1h"]
connect_timeout = "2s"
[doctor]
probe_domain = "far.test"
ntp_server = "127.0.0.1:{ntp_port}"
{extra}""")
        s.add_user(ALICE)
        recs = hand_zone(s)
        recs["mx"].append(("far.test", "mx.far.test", 10))
        recs["a"].append(("mx.far.test", MX_IP))
        if records:
            records(recs)
        dns.start(**recs)
        if sink:
            made.append(Sink(MX_IP, rport, script=sink_script))
        if start:
            s.start()
        s.rport = rport
        return s

    yield make
    for m in made:
        m.stop()
    dns.stop()


def doctor(server, *args, env=None):
    r = subprocess.run([str(BIN), "-c", str(server.config), "doctor", *args], capture_output=True, text=True,
                       timeout=120, env={**os.environ, **(env or {})})
    print(r.stdout, r.stderr)
    return r.returncode, r.stdout


def section(out, word):
    return "\n".join(b for b in out.split("\n\n") if word in b.splitlines()[0])


def test_healthy_server(doc):
    s = doc()
    rc, out = doctor(s)
    assert "FAIL" not in out and rc == 0, out
    assert "smtp on 127.0.0.1:" in out and "answers as SMTP" in out
    assert f"reverse DNS of {HOST_IP} is {HOST}, and {HOST} leads back to it" in out
    assert f"WARN  {HOST} is {HOST_IP}, which is not an address of this machine" in out
    assert f"MX {DOMAIN}.: MX {HOST}" in out
    assert "relay probes from 127.0.0.1" in out and "were all refused" in out
    assert f"the mail server of far.test (mx.far.test, {MX_IP}:{s.rport}) answers" in out
    assert "within" in section(out, "Clock")
    assert "the outgoing queue is empty" in out
    # The self-signed certificate of postern init: a warning with its fix, not a failure.
    cert = section(out, "TLS certificate")
    assert "WARN" in cert and "self-signed" in cert and "Let's Encrypt" in cert
    assert f"covers {HOST}" in cert
    # Every record of the hand-written zone is found and judged right.
    dns = section(out, "DNS records for")
    assert "WARN" not in dns and "FAIL" not in dns, dns
    selector, _ = dkim_key_record(s)
    for found in (f"OK    MX {DOMAIN}.: MX {HOST}", f'OK    TXT {DOMAIN}.: "v=spf1 mx ~all"',
                  f"OK    TXT {selector}._domainkey.{DOMAIN}.:", f'OK    TXT _dmarc.{DOMAIN}.: "v=DMARC1; p=reject',
                  f"OK    SRV _submissions._tcp.{DOMAIN}.: port {s.port('submissions')} on {HOST}",
                  f"OK    SRV _imaps._tcp.{DOMAIN}.: port {s.port('imaps')} on {HOST}",
                  f"OK    CNAME autoconfig.{DOMAIN}.: CNAME {HOST}"):
        assert found in dns, (found, dns)


def test_wrong_records_are_flagged(doc):
    """A zone with mistakes an administrator makes: each one is named, with what to publish."""
    import base64
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    other_key = base64.b64encode(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
                                 .public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)).decode()

    def mistakes(r):
        r["mx"] = [(m[0], "mx.oldhost.test", 10) if m[0] == DOMAIN else m for m in r["mx"]]
        # SPF that names another server only; a DKIM key that is not ours (an old key left in
        # place); two DMARC records; the TLS report record forgotten.
        r["txt"] = [t for t in r["txt"] if t[0] != f"_smtp._tls.{DOMAIN}"]
        r["txt"] = [(n, "v=spf1 ip4:203.0.113.7 -all") if n == DOMAIN else
                    (n, f"v=DKIM1; k=rsa; p={other_key}") if "._domainkey." in n else (n, v)
                    for n, v in r["txt"]]
        r["txt"].append((f"_dmarc.{DOMAIN}", "v=DMARC1; p=none"))
        # A port from an old setup, and autoconfig pointing at a web host.
        r["srv"] = [(n, t, 993 if n.startswith("_imaps.") else p) for n, t, p in r["srv"]]
        r["cname"] = [(a, "www.webhost.test" if a.startswith("autoconfig.") else t) for a, t in r["cname"]]

    s = doc(records=mistakes)
    rc, out = doctor(s)
    assert rc == 1, out
    dns = section(out, "DNS records for")
    selector, ours = dkim_key_record(s)
    expected = [
        f"FAIL  MX {DOMAIN}. is wrong: MX points to mx.oldhost.test instead of {HOST}",
        f'FAIL  TXT {DOMAIN}. is wrong: found "v=spf1 ip4:203.0.113.7 -all"',
        f"FAIL  TXT {selector}._domainkey.{DOMAIN}. is wrong: found \"v=DKIM1; k=rsa; p={other_key}\"",
        f"TXT _dmarc.{DOMAIN}. is wrong: 2 records where there must be one",
        f"TXT _smtp._tls.{DOMAIN}. is missing",
        f"SRV _imaps._tcp.{DOMAIN}. is wrong: says port 993 on {HOST}",
        f"CNAME autoconfig.{DOMAIN}. is wrong: CNAME to www.webhost.test instead of {HOST}",
    ]
    for line in expected:
        assert line in dns, (line, dns)
    # Each with what to publish instead: the right MX and our own DKIM key.
    assert f"Publish instead: {DOMAIN}.  MX  10 {HOST}." in dns, dns
    assert ours.split("p=")[1] in dns, "the fix names our key"
    # The records that are right are still judged right.
    assert f"OK    SRV _submissions._tcp.{DOMAIN}.: port {s.port('submissions')} on {HOST}" in dns, dns
    assert f"OK    CNAME autodiscover.{DOMAIN}.: CNAME {HOST}" in dns, dns


def test_json_and_admin_api(doc):
    s = doc(ntp_offset=500)
    rc, out = doctor(s, "--json")
    assert rc == 1
    report = json.loads(out)
    assert not report["ok"] and report["failures"] >= 1
    clock = next(x for x in report["sections"] if x["title"] == "Clock")
    assert clock["findings"][0]["level"] == "fail"
    # The same doctor, run inside the server through the control socket.
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(60)
        c.connect(str(s.data / "control.sock"))
        c.sendall(b'{"op":"doctor"}\n')
        data = b""
        while not data.endswith(b"\n"):
            data += c.recv(65536)
    reply = json.loads(data)
    inner = json.loads(reply["ok"]["json"])
    titles = [x["title"] for x in inner["sections"]]
    assert "Clock" in titles and "Listeners" in titles
    assert any("answers as IMAP" in f["what"] for x in inner["sections"] for f in x["findings"])


def test_invalid_config(doc):
    s = doc(start=False)
    s.config.write_text(s.config.read_text() + "\n[smtp]\nmax_message_size = \"lots\"\n")
    rc, out = doctor(s)
    assert rc == 1
    assert "FAIL" in section(out, "Configuration") and "line" in out, out


def test_not_running_and_port_taken_by_another_program(doc):
    s = doc(start=False)
    other = Sink("127.0.0.1", s.port("smtp"))
    try:
        rc, out = doctor(s)
    finally:
        other.stop()
    assert rc == 1
    lst = section(out, "Listeners")
    assert "Postern is not running" in lst and "postern serve" in lst
    assert f"smtp on 127.0.0.1:{s.port('smtp')}: another program answers on this port" in lst, out
    assert "relay probes skipped" in out


def write_cert(data, names, days_valid, days_ago=1, issuer=None, chain=()):
    """A certificate for `names`; self-signed unless `issuer` (cert, key) is given."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=days_ago))
         .not_valid_after(now + datetime.timedelta(days=days_valid))
         .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False))
    if issuer:
        b = b.issuer_name(issuer[0].subject)
        cert = b.sign(issuer[1], hashes.SHA256())
    else:
        cert = b.issuer_name(name).sign(key, hashes.SHA256())
    pem = cert.public_bytes(serialization.Encoding.PEM)
    if data is not None:
        (data / "tls" / "cert.pem").write_bytes(pem + b"".join(c.public_bytes(serialization.Encoding.PEM)
                                                                for c in chain))
        (data / "tls" / "key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert, key


def make_ca(name):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    n = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return key, n, (x509.CertificateBuilder().subject_name(n).public_key(key.public_key())
                 .serial_number(x509.random_serial_number())
                 .not_valid_before(now - datetime.timedelta(days=1))
                 .not_valid_after(now + datetime.timedelta(days=3650))
                 .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                 .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                              content_commitment=False, key_encipherment=False,
                                              data_encipherment=False, key_agreement=False,
                                              encipher_only=False, decipher_only=False), critical=True))


def test_certificate_faults(doc, tmp_path):
    from cryptography.hazmat.primitives import hashes, serialization
    s = doc(start=False)
    cert = lambda env=None: section(doctor(s, env=env)[1], "TLS certificate")

    write_cert(s.data, [HOST], days_valid=-2, days_ago=90)
    out = cert()
    assert "FAIL" in out and "the certificate expired on" in out and "Renew it" in out, out

    write_cert(s.data, [HOST], days_valid=5)
    out = cert()
    assert "WARN  the certificate expires on" in out, out

    write_cert(s.data, ["other.example.org"], days_valid=90)
    out = cert()
    assert f"the certificate is for other.example.org, not for {HOST}" in out, out

    # A chain from a private authority: root -> intermediate -> server, the root trusted.
    root_key, root_name, root_b = make_ca("Test Root")
    root = root_b.issuer_name(root_name).sign(root_key, hashes.SHA256())
    inter_key, _, inter_b = make_ca("Test Intermediate")
    inter = inter_b.issuer_name(root_name).sign(root_key, hashes.SHA256())
    (tmp_path / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    env = {"SSL_CERT_FILE": str(tmp_path / "root.pem")}

    write_cert(s.data, [HOST], days_valid=90, issuer=(inter, inter_key))
    out = cert(env)
    assert "FAIL" in out and "the server sends no intermediate certificate" in out, out
    assert "fullchain.pem" in out

    write_cert(s.data, [HOST], days_valid=90, issuer=(inter, inter_key), chain=[inter])
    out = cert(env)
    assert "OK    issued by a trusted authority, chain complete" in out, out
    assert "FAIL" not in out and "WARN" not in out


def test_host_name_and_reverse_dns_faults(doc):
    def no_ptr(r):
        r["ptr"] = []
        r["a"].remove((HOST, HOST_IP))
        r["a_only"] = [(HOST, HOST_IP)]
    s = doc(records=no_ptr)
    out = section(doctor(s)[1], "Host name")
    assert f"FAIL  {HOST_IP} has no reverse DNS (PTR) name" in out, out
    assert "hosting provider" in out


def test_reverse_dns_names_another_host(doc):
    def other_ptr(r):
        r["ptr"] = [(HOST_IP, "host-192-0-2-10.isp.test")]
        r["a"].remove((HOST, HOST_IP))
        r["a_only"] = [(HOST, HOST_IP)]
    s = doc(records=other_ptr)
    out = section(doctor(s)[1], "Host name")
    assert f"the reverse DNS of {HOST_IP} is host-192-0-2-10.isp.test, not {HOST}" in out, out


def test_host_name_without_address_and_missing_mx(doc):
    def broken(r):
        r["a"] = [(n, ip) for n, ip in r["a"] if n != HOST]
        r["mx"] = [m for m in r["mx"] if m[0] != DOMAIN]
        r["cname"] = []
    s = doc(records=broken, extra=f'public_ip = "{HOST_IP}"')
    rc, out = doctor(s)
    assert rc == 1
    assert f"FAIL  {HOST} has no address in DNS" in out
    dns = section(out, "DNS records for")
    assert f"FAIL  MX {DOMAIN}. is missing" in dns and f"Publish: {DOMAIN}.  MX  10 {HOST}." in dns, out
    assert "WARN  CNAME autoconfig." in dns


def test_open_relay_by_configuration(doc):
    s = doc(extra='[smtp]\nrelay_networks = ["0.0.0.0/1", "128.0.0.0/1"]')
    rc, out = doctor(s)
    assert rc == 1
    relay = section(out, "Relaying")
    assert "smtp.relay_networks has 0.0.0.0/1: every machine there may send mail anywhere" in relay
    assert "OPEN RELAY: from 127.0.0.1, MAIL FROM:<probe@example.org> RCPT TO:<probe@example.net> was accepted" in relay, out


def test_outbound_port_25_blocked(doc):
    s = doc(sink=False)
    socks = blackhole(MX_IP, s.rport)
    try:
        rc, out = doctor(s)
    finally:
        for x in socks:
            x.close()
    assert rc == 1
    o = section(out, "Outgoing mail")
    assert f"cannot reach the mail server of far.test (mx.far.test) on port {s.rport}: no answer" in o, out
    assert "Many providers block outgoing port 25" in o and "[relay]" in o


def test_clock_skew(doc):
    s = doc(ntp_offset=-300)
    out = section(doctor(s)[1], "Clock")
    assert "FAIL  this server's clock is 300 s ahead of 127.0.0.1:" in out, out
    assert "timedatectl set-ntp true" in out


def test_low_disk_and_stuck_queue(doc):
    busy = lambda cmd, line, sink: "451 4.7.1 Greylisted, come back later" if cmd == "RCPT" else None
    s = doc(extra='disk_warn_free = "999999G"\nqueue_warn_age = "1s"', sink_script=busy)
    submit(s, ALICE, ["someone@far.test"], b"Subject: stuck\r\n\r\nHello\r\n")
    wait_for(lambda: "451" in s.cli("queue", "list").stdout, timeout=30)
    import time
    time.sleep(2.5)  # ages are whole seconds: past 1 s for sure
    out = section(doctor(s)[1], "Storage and queue")
    assert "WARN  only" in out and "GiB free" in out, out
    assert "1 message(s) waiting, 1 after failed attempts" in out
    assert "most common errors: 1x" in out and "451 4.7.1 Greylisted" in out


def test_blocklisted_ip(doc):
    def listed(r):
        r["a"].append(("10.2.0.192.bl.test", "127.0.0.2"))
        r["txt"].append(("10.2.0.192.bl.test", "Listed for testing see https://bl.test/lookup"))
    s = doc(extra='dnsbl = ["bl.test", "clean.test"]', records=listed)
    rc, out = doctor(s)
    assert rc == 1
    bl = section(out, "Blocklists")
    assert f"FAIL  {HOST_IP} is listed on bl.test (127.0.0.2): Listed for testing" in bl, out
    assert "request removal" in bl
    assert f"OK    {HOST_IP} is not listed on clean.test" in bl


def test_open_file_limit_below_the_connection_limits(doc):
    import resource
    s = doc(start=False)
    # The server can raise its soft limit only up to the hard one: 2048 here, under IMAP's
    # default of 20000 connections.
    s.start(preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 2048)))
    out = section(doctor(s)[1], "Storage and queue")
    assert "WARN  the server may have 2048 files open at once, but a listener allows 20000" in out, out
    assert "LimitNOFILE=" in out
    assert "the open-file limit is below a listener's max_connections" in s.log_text()
    s.stop()
    s.start()
    out = section(doctor(s)[1], "Storage and queue")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard >= 20000:
        assert f"OK    open-file limit {hard}: room for 20000 connections" in out, out
    else:
        assert f"WARN  the server may have {hard} files open at once" in out, out


def test_acme_failure_is_a_finding_with_its_fix(doc):
    s = doc(extra=f"""[acme]
enabled = true
directory = "https://127.0.0.1:{free_port()}/dir"
challenge = "http-01"
check_dns = false
retry_min = "1h"
""")
    wait_for(lambda: '"last_error": "cannot reach' in s.cli("acme", "status", "--json").stdout, timeout=30)
    rc, out = doctor(s)
    acme = section(out, "ACME certificates")
    assert "no certificate yet" in acme and "cannot reach the ACME directory" in acme, out
    assert "outbound HTTPS" in acme, "the fix is given"
    assert rc != 0
