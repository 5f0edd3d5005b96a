"""Mail programs set themselves up: autoconfig, Autodiscover, the Apple profile, MTA-STS, the
setup page (in headless Chromium), DNS records checked against a real DNS server, and a client
that starts from nothing but an address and a password."""

import http.client
import imaplib
import plistlib
import poplib
import smtplib
import socket
import ssl
import subprocess
import xml.etree.ElementTree as ET

import pytest

from conftest import ARTIFACTS, DOMAIN, PASSWORD, free_port
from helpers import ALICE, insecure_ctx
from peers import Dns

ALL = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps", "http", "https")
AD_NS = "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}"
OL_NS = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


@pytest.fixture
def web(make_server):
    s = make_server(listeners=ALL)
    s.add_user(ALICE)
    s.start()
    return s


def get(server, path, https=False, method="GET", body=None, headers=None):
    if https:
        c = http.client.HTTPSConnection("127.0.0.1", server.port("https"), context=insecure_ctx(), timeout=15)
    else:
        c = http.client.HTTPConnection("127.0.0.1", server.port("http"), timeout=15)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    return r.status, r.getheader("Content-Type") or "", r.read()


def test_thunderbird_autoconfig(web):
    for https, path in ((False, f"/mail/config-v1.1.xml?emailaddress={ALICE}"),
                        (True, "/.well-known/autoconfig/mail/config-v1.1.xml")):
        status, ctype, body = get(web, path, https=https, headers={"Host": f"autoconfig.{DOMAIN}"})
        assert status == 200 and "xml" in ctype
        root = ET.fromstring(body)
        assert root.tag == "clientConfig" and root.get("version") == "1.1"
        prov = root.find("emailProvider")
        assert prov.get("id") == DOMAIN and prov.findtext("domain") == DOMAIN
        got = {}
        for srv in prov.findall("incomingServer") + prov.findall("outgoingServer"):
            assert srv.findtext("hostname") == web.hostname
            assert srv.findtext("authentication") == "password-cleartext"
            assert srv.findtext("username") == "%EMAILADDRESS%"
            got[(srv.get("type"), srv.findtext("socketType"))] = int(srv.findtext("port"))
        assert got == {
            ("imap", "SSL"): web.port("imaps"), ("imap", "STARTTLS"): web.port("imap"),
            ("pop3", "SSL"): web.port("pop3s"), ("pop3", "STARTTLS"): web.port("pop3"),
            ("smtp", "SSL"): web.port("submissions"), ("smtp", "STARTTLS"): web.port("submission"),
        }
    status, _, _ = get(web, "/mail/config-v1.1.xml?emailaddress=x@not-ours.test")
    assert status == 404


def test_only_enabled_listeners_are_published(make_server):
    s = make_server(listeners=("imaps", "submission", "http"))
    s.start()
    root = ET.fromstring(get(s, f"/mail/config-v1.1.xml?emailaddress={ALICE}")[2])
    servers = [(x.get("type"), x.findtext("socketType"), x.findtext("port")) for x in root.iter()
               if x.tag in ("incomingServer", "outgoingServer")]
    assert servers == [("imap", "SSL", str(s.port("imaps"))), ("smtp", "STARTTLS", str(s.port("submission")))]


def autodiscover_body(addr):
    return (f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
            f'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>{addr}</EMailAddress>'
            f'<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/'
            f'2006a</AcceptableResponseSchema></Request></Autodiscover>').encode()


def test_outlook_autodiscover(web):
    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
        status, ctype, body = get(web, path, https=True, method="POST", body=autodiscover_body(ALICE),
                                  headers={"Content-Type": "text/xml"})
        assert status == 200
        root = ET.fromstring(body)
        assert root.tag == AD_NS + "Autodiscover"
        acc = root.find(f"{OL_NS}Response/{OL_NS}Account")
        assert acc.findtext(OL_NS + "AccountType") == "email" and acc.findtext(OL_NS + "Action") == "settings"
        protos = {p.findtext(OL_NS + "Type"): p for p in acc.findall(OL_NS + "Protocol")}
        assert set(protos) == {"IMAP", "POP3", "SMTP"}
        for t, lname in (("IMAP", "imaps"), ("POP3", "pop3s"), ("SMTP", "submissions")):
            p = protos[t]
            assert p.findtext(OL_NS + "Server") == web.hostname
            assert int(p.findtext(OL_NS + "Port")) == web.port(lname)
            assert p.findtext(OL_NS + "SSL") == "on" and p.findtext(OL_NS + "Encryption") == "SSL"
            assert p.findtext(OL_NS + "SPA") == "off" and p.findtext(OL_NS + "AuthRequired") == "on"
            assert p.findtext(OL_NS + "LoginName") == ALICE
    # An address of ours that has no account gets the same kind of answer: nothing is revealed.
    _, _, ghost = get(web, "/autodiscover/autodiscover.xml", method="POST", body=autodiscover_body(f"ghost@{DOMAIN}"))
    assert ET.fromstring(ghost).find(f"{OL_NS}Response/{OL_NS}Account") is not None
    # Other domains get a well-formed Error.
    status, _, body = get(web, "/autodiscover/autodiscover.xml", method="POST", body=autodiscover_body("x@elsewhere.test"))
    err = ET.fromstring(body).find(f"{AD_NS}Response/{AD_NS}Error")
    assert status == 200 and err is not None and err.findtext(AD_NS + "ErrorCode") == "600"
    # Malformed requests: 4xx, an Error document, no stack trace.
    for bad in (b"not xml at all", b"<Autodiscover><Request></Request></Autodiscover>", b"\xff\xfe"):
        status, _, body = get(web, "/autodiscover/autodiscover.xml", method="POST", body=bad)
        assert 400 <= status < 500 and b"<ErrorCode>" in body and b"panicked" not in body
    status, _, _ = get(web, "/autodiscover/autodiscover.xml", method="POST", body=b"x" * 200_000)
    assert status == 413


def test_apple_profile_is_a_valid_plist(web):
    status, ctype, body = get(web, f"/apple/profile.mobileconfig?emailaddress={ALICE}", https=True)
    assert status == 200 and ctype.startswith("application/x-apple-aspen-config")
    p = plistlib.loads(body)
    assert p["PayloadType"] == "Configuration"
    mail = p["PayloadContent"][0]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAddress"] == ALICE and mail["IncomingMailServerUsername"] == ALICE
    assert mail["IncomingMailServerHostName"] == web.hostname
    assert mail["IncomingMailServerPortNumber"] == web.port("imaps") and mail["IncomingMailServerUseSSL"] is True
    assert mail["OutgoingMailServerPortNumber"] == web.port("submissions")
    assert get(web, "/apple/profile.mobileconfig")[0] == 400
    assert get(web, "/apple/profile.mobileconfig?emailaddress=x@elsewhere.test")[0] == 404


def test_mta_sts_policy_and_unknown_paths(web):
    status, ctype, body = get(web, "/.well-known/mta-sts.txt", https=True)
    assert status == 200 and ctype.startswith("text/plain")
    lines = body.decode().split("\r\n")
    assert lines[:4] == ["version: STSv1", "mode: testing", f"mx: {web.hostname}", "max_age: 604800"]
    for path in ("/nope", "/../../etc/passwd", "/mail/config-v1.1.xml/extra"):
        status, _, body = get(web, path)
        assert status == 404 and b"panicked" not in body


def test_a_client_sets_itself_up_from_address_and_password(web):
    """Thunderbird's way: autoconfig.DOMAIN, then the servers it names, with only the address
    and the password typed in. Names resolve to this machine as DNS would for a real domain."""

    def resolve(name):
        assert name in (web.hostname, f"autoconfig.{DOMAIN}")
        return "127.0.0.1"

    address, password = ALICE, PASSWORD
    domain = address.split("@")[1]
    c = http.client.HTTPConnection(resolve(f"autoconfig.{domain}"), web.port("http"))
    c.request("GET", f"/mail/config-v1.1.xml?emailaddress={address}", headers={"Host": f"autoconfig.{domain}"})
    cfg = ET.fromstring(c.getresponse().read()).find("emailProvider")

    def pick(tag, kind):
        s = [x for x in cfg.findall(tag) if x.get("type") == kind][0]
        return s.findtext("hostname"), int(s.findtext("port")), s.findtext("socketType"), \
            s.findtext("username").replace("%EMAILADDRESS%", address)

    def tls_ctx():
        # The server's own self-signed certificate is the trust anchor, checked by name.
        ctx = ssl.create_default_context(cafile=str(web.data / "tls" / "cert.pem"))
        return ctx

    host, port, sock, user = pick("outgoingServer", "smtp")
    assert sock == "SSL"
    raw = socket.create_connection((resolve(host), port))
    s = smtplib.SMTP_SSL(timeout=15, context=tls_ctx())
    s.sock = tls_ctx().wrap_socket(raw, server_hostname=host)
    s.file = None
    s.getreply()
    s.ehlo()
    s.login(user, password)
    s.sendmail(address, [address], b"Subject: set up by itself\r\n\r\nIt works.\r\n")
    s.quit()

    host, port, sock, user = pick("incomingServer", "imap")
    raw_imap = imaplib.IMAP4_SSL(resolve(host), port, ssl_context=ssl._create_unverified_context())
    raw_imap.login(user, password)
    raw_imap.select("INBOX")
    assert b"set up by itself" in raw_imap.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")[1][0][1]
    raw_imap.logout()
    host, port, sock, user = pick("incomingServer", "pop3")
    p = poplib.POP3_SSL(resolve(host), port, context=ssl._create_unverified_context())
    p.user(user)
    p.pass_(password)
    assert p.stat()[0] == 1
    p.quit()


def test_dns_check_against_a_real_dns_server(make_server):
    dns = Dns(free_port())
    s = make_server(extra_config=f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n')
    printed = s.cli("dns", DOMAIN).stdout
    assert f"{DOMAIN}.  MX  10 {s.hostname}." in printed
    assert "_dmarc.example.test.  TXT" in printed and "_domainkey.example.test.  TXT" in printed
    # One right (MX), one missing (DKIM, DMARC...), one wrong (SPF without the MX).
    dns.start(mx=[(DOMAIN, s.hostname, 10)], a=[(s.hostname, "192.0.2.10")],
              txt=[(DOMAIN, "v=spf1 -all")])
    try:
        r = s.cli("dns", "--check", DOMAIN, check=False)
        out = r.stdout
        assert r.returncode != 0 and "missing or wrong" in r.stderr
        assert f"OK       MX {DOMAIN}.: MX {s.hostname}" in out
        assert f"OK       A {s.hostname}.: 192.0.2.10" in out
        assert f"WRONG    TXT {DOMAIN}.: found \"v=spf1 -all\"" in out
        assert "publish instead: example.test.  TXT  \"v=spf1 mx -all\"" in out
        assert "MISSING  TXT p" in out and "._domainkey.example.test.: DKIM" in out
        assert "MISSING  TXT _dmarc.example.test." in out
    finally:
        dns.stop()


def test_setup_page_in_headless_chromium(web):
    url = f"http://127.0.0.1:{web.port('http')}/"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={web.root}/chromium"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "<h1>Set up your mail program</h1>" in dom
    assert '<table id="settings">' in dom
    for label in ("Incoming mail (IMAP)", "Incoming mail (POP3)", "Outgoing mail (SMTP)"):
        assert label in dom
    assert f"<td>{web.port('imaps')}</td><td>SSL/TLS</td>" in dom
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "setup-page.png"
    subprocess.run(["chromium", *flags, "--window-size=1000,900", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
