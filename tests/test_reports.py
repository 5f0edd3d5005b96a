"""DMARC aggregate reports (RFC 7489 7, RFC 9990) and SMTP TLS reports (RFC 8460), both ways,
over real SMTP with a real DNS server (dnsmasq) on loopback: the reports we send reach the
addresses the domains publish, validated against RFC 9990's XML schema and RFC 8460's JSON
fields, DKIM-signed (checked by dkimpy); reports sent to us show up in `postern reports list`
and the API."""

import email
import email.policy
import gzip
import json
import smtplib
import time
from pathlib import Path

from lxml import etree

from conftest import free_port
from helpers import ALICE, BOB, dkim_key_record, dkim_verify, submit, wait_for
from peers import Dns, Pki, Sink
from test_api import api
from test_trust import BAD_IP, GOOD_IP, PUB, folder, send, signed

NS = {"d": "urn:ietf:params:xml:ns:dmarc-2.0"}
SCHEMA = etree.XMLSchema(etree.parse(str(Path(__file__).parent / "schemas" / "dmarc-2.0.xsd")))
FAR_MX = "127.0.0.31"     # far.test's MX: where its reports arrive
THIRD_MX = "127.0.0.32"   # third.test: takes far.test's reports, and says so in DNS
ELSE_MX = "127.0.0.33"    # elsewhere.test: named in far.test's rua, never agreed


def server_with_dns(make_server, dns, rport, extra=""):
    s = make_server(listeners=("smtp", "submissions", "imaps", "http"), inbound_checks=True,
                    extra_config=f"""
[dns]
nameservers = ["127.0.0.1:{dns.port}"]
timeout = "2s"
[delivery]
remote_port = {rport}
retry = ["1s"]
connect_timeout = "2s"
command_timeout = "20s"
[smtp]
postmaster = "{ALICE}"
{extra}""")
    s.add_user(ALICE)
    s.add_user(BOB)
    return s


def message(frm, subject):
    return (f"From: <{frm}>\r\nTo: <{ALICE}>\r\nSubject: {subject}\r\n"
            f"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@far.test>\r\n\r\nHello Alice.\r\n").encode()


def attachment(raw, types):
    """The decoded body of the first part whose type is one of `types`."""
    m = email.message_from_bytes(raw, policy=email.policy.default)
    for part in m.walk():
        if part.get_content_type() in types:
            return part.get_payload(decode=True)
    raise AssertionError(f"no {types} part in:\n{raw[:2000]!r}")


def test_dmarc_aggregate_report_goes_to_verified_addresses_signed_and_valid(make_server):
    dns, rport = Dns(free_port()), free_port()
    sinks = {ip: Sink(ip, rport) for ip in (FAR_MX, THIRD_MX, ELSE_MX)}
    s = server_with_dns(make_server, dns, rport)
    selector, ours = dkim_key_record(s)
    # far.test's mail comes from GOOD_IP (mx.far.test); its reports go to mail.far.test.
    dns.start(
        mx=[("far.test", "mail.far.test", 10), ("third.test", "mx.third.test", 10),
            ("elsewhere.test", "mx.elsewhere.test", 10)],
        a=[("mx.far.test", GOOD_IP), ("mx.third.test", THIRD_MX), ("mx.elsewhere.test", ELSE_MX),
           ("mail.far.test", FAR_MX)],
        txt=[("far.test", f"v=spf1 ip4:{GOOD_IP} -all"),
             ("s1._domainkey.far.test", f"v=DKIM1; k=rsa; p={PUB}"),
             ("_dmarc.far.test", "v=DMARC1; p=quarantine; rua=mailto:dmarc@far.test,"
              "mailto:agg@third.test,mailto:agg@elsewhere.test"),
             ("far.test._report._dmarc.third.test", "v=DMARC1"),
             (f"{selector}._domainkey.example.test", ours)])
    try:
        s.start()
        # Two that pass (signed, from the allowed address), one forged: to Junk (p=quarantine).
        for i in range(2):
            assert send(s, GOOD_IP, "bob@far.test", signed(message("bob@far.test", f"good {i}")))[0] == 250
        assert send(s, BAD_IP, "eve@far.test", message("eve@far.test", "forged"))[0] == 250
        out = s.cli("reports", "send", "--now").stdout
        assert "dmarc report for far.test" in out and "dmarc@far.test" in out and "agg@third.test" in out, out
        assert "agg@elsewhere.test" not in out, out
        far = wait_for(lambda: sinks[FAR_MX].messages, timeout=30)
        third = wait_for(lambda: sinks[THIRD_MX].messages, timeout=30)
        time.sleep(1)
        assert sinks[ELSE_MX].messages == [] and sinks[ELSE_MX].connections == 0
        assert len(far) == 1 and len(third) == 1
        sender, rcpts, raw = far[0]
        assert sender == "" and rcpts == ["dmarc@far.test"]
        m = email.message_from_bytes(raw, policy=email.policy.default)
        assert m["From"].addresses[0].addr_spec == "postmaster@example.test"
        assert m["Subject"].startswith("Report Domain: far.test Submitter: example.test Report-ID: <")
        # Signed by our domain's key; dkimpy checks it against the record we published.
        assert f"s={selector}".encode() in raw and dkim_verify(raw, dns), raw[:1500]
        xml = gzip.decompress(attachment(raw, ("application/gzip",)))
        doc = etree.fromstring(xml)
        SCHEMA.assertValid(doc)
        assert doc.findtext("d:version", namespaces=NS) == "1.0"
        meta = doc.find("d:report_metadata", NS)
        assert meta.findtext("d:org_name", namespaces=NS) == "mail.example.test"
        assert meta.findtext("d:email", namespaces=NS) == "postmaster@example.test"
        begin = int(meta.findtext("d:date_range/d:begin", namespaces=NS))
        end = int(meta.findtext("d:date_range/d:end", namespaces=NS))
        assert begin % 86400 == 0 and end == begin + 86399 and begin <= time.time() <= end + 60
        policy = doc.find("d:policy_published", NS)
        assert policy.findtext("d:domain", namespaces=NS) == "far.test"
        assert policy.findtext("d:p", namespaces=NS) == "quarantine"
        rows = {}
        for rec in doc.findall("d:record", NS):
            ip = rec.findtext("d:row/d:source_ip", namespaces=NS)
            rows[ip] = rec
        assert set(rows) == {GOOD_IP, BAD_IP}, xml
        good, bad = rows[GOOD_IP], rows[BAD_IP]
        assert good.findtext("d:row/d:count", namespaces=NS) == "2"
        assert good.findtext("d:row/d:policy_evaluated/d:dkim", namespaces=NS) == "pass"
        assert good.findtext("d:row/d:policy_evaluated/d:spf", namespaces=NS) == "pass"
        assert good.findtext("d:identifiers/d:header_from", namespaces=NS) == "far.test"
        assert good.findtext("d:auth_results/d:dkim/d:domain", namespaces=NS) == "far.test"
        assert bad.findtext("d:row/d:count", namespaces=NS) == "1"
        assert bad.findtext("d:row/d:policy_evaluated/d:disposition", namespaces=NS) == "quarantine"
        assert bad.findtext("d:row/d:policy_evaluated/d:spf", namespaces=NS) == "fail"
        # The same report went to the third party that agreed to take it.
        assert gzip.decompress(attachment(third[0][2], ("application/gzip",))) == xml
        # Sent once: the counts were taken.
        assert "no reports to send" in s.cli("reports", "send", "--now").stdout
    finally:
        dns.stop()
        for k in sinks.values():
            k.stop()


def test_tls_reports_for_our_deliveries(make_server, tmp_root):
    dns, rport = Dns(free_port()), free_port()
    pki = Pki(tmp_root)
    tls_ip, plain_ip = "127.0.0.41", "127.0.0.42"
    sinks = {
        FAR_MX: Sink(FAR_MX, rport),
        tls_ip: Sink(tls_ip, rport, tls=pki.issue(["mx.secure.test"])[1]),
        plain_ip: Sink(plain_ip, rport),
    }
    s = server_with_dns(make_server, dns, rport)
    selector, ours = dkim_key_record(s)
    dns.start(
        mx=[("far.test", "mail.far.test", 10), ("secure.test", "mx.secure.test", 10),
            ("plain.test", "mx.plain.test", 10)],
        a=[("mail.far.test", FAR_MX), ("mx.secure.test", tls_ip), ("mx.plain.test", plain_ip)],
        txt=[("_smtp._tls.secure.test", "v=TLSRPTv1; rua=mailto:tlsrpt@far.test"),
             ("_smtp._tls.plain.test", "v=TLSRPTv1;rua=mailto:tlsrpt@far.test"),
             (f"{selector}._domainkey.example.test", ours)])
    try:
        s.start()
        for to in ("user@secure.test", "user@plain.test"):
            m = (f"From: Alice <{ALICE}>\r\nTo: {to}\r\nSubject: hello\r\n"
                 f"Message-ID: <{to}@example.test>\r\n\r\nHello.\r\n").encode()
            submit(s, ALICE, [to], m)
        wait_for(lambda: sinks[tls_ip].messages and sinks[plain_ip].messages, timeout=30)
        assert sinks[tls_ip].secure == [True] and sinks[plain_ip].secure == [False]
        out = s.cli("reports", "send", "--now").stdout
        assert "tls report for secure.test" in out and "tls report for plain.test" in out, out
        got = wait_for(lambda: len(sinks[FAR_MX].messages) >= 2 and sinks[FAR_MX].messages, timeout=30)
        reports = {}
        for sender, rcpts, raw in got:
            assert sender == "" and rcpts == ["tlsrpt@far.test"]
            m = email.message_from_bytes(raw, policy=email.policy.default)
            # RFC 8460 5.3: multipart/report of report-type tlsrpt, the domain in its own header.
            assert m.get_content_type() == "multipart/report"
            assert m.get_param("report-type") == "tlsrpt"
            assert m["TLS-Report-Submitter"] == "example.test"
            assert dkim_verify(raw, dns), raw[:1500]
            body = json.loads(gzip.decompress(attachment(raw, ("application/tlsrpt+gzip",))))
            reports[m["TLS-Report-Domain"]] = body
        assert set(reports) == {"secure.test", "plain.test"}
        for domain, r in reports.items():
            # RFC 8460 4.4: the fields every report has.
            assert r["organization-name"] == "mail.example.test"
            assert r["contact-info"] == "postmaster@example.test"
            assert r["report-id"]
            start, end = r["date-range"]["start-datetime"], r["date-range"]["end-datetime"]
            assert start.endswith("Z") and end.endswith("Z") and start < end, r["date-range"]
            [p] = r["policies"]
            assert p["policy"]["policy-type"] == "no-policy-found"
            assert p["policy"]["policy-domain"] == domain
        ok = reports["secure.test"]["policies"][0]
        assert ok["summary"] == {"total-successful-session-count": 1, "total-failure-session-count": 0}
        bad = reports["plain.test"]["policies"][0]
        assert bad["summary"] == {"total-successful-session-count": 0, "total-failure-session-count": 1}
        [f] = bad["failure-details"]
        assert f["result-type"] == "starttls-not-supported"
        assert f["receiving-mx-hostname"] == "mx.plain.test" and f["receiving-ip"] == plain_ip
        assert f["failed-session-count"] == 1
    finally:
        dns.stop()
        for k in sinks.values():
            k.stop()


AGGREGATE = """<?xml version="1.0" encoding="UTF-8"?>
<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">
  <version>1.0</version>
  <report_metadata>
    <org_name>Reporter Inc</org_name>
    <email>noreply-dmarc@reporter.test</email>
    <report_id>{id}</report_id>
    <date_range><begin>1796083200</begin><end>1796169599</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>example.test</domain><p>quarantine</p><sp>quarantine</sp><adkim>r</adkim><aspf>r</aspf>
  </policy_published>
  <record>
    <row><source_ip>192.0.2.10</source_ip><count>10</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row>
    <identifiers><header_from>example.test</header_from></identifiers>
    <auth_results><dkim><domain>example.test</domain><result>pass</result></dkim>
      <spf><domain>example.test</domain><result>pass</result></spf></auth_results>
  </record>
  <record>
    <row><source_ip>203.0.113.9</source_ip><count>3</count>
      <policy_evaluated><disposition>quarantine</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row>
    <identifiers><header_from>example.test</header_from></identifiers>
    <auth_results><spf><domain>example.test</domain><result>fail</result></spf></auth_results>
  </record>
</feedback>
"""

TLS_REPORT = {
    "organization-name": "Reporter Inc",
    "date-range": {"start-datetime": "2026-12-01T00:00:00Z", "end-datetime": "2026-12-01T23:59:59Z"},
    "contact-info": "tlsrpt@reporter.test",
    "report-id": "tls-1@reporter.test",
    "policies": [{
        "policy": {"policy-type": "sts", "policy-string": ["version: STSv1", "mode: enforce",
                                                          "mx: mail.example.test", "max_age: 86400"],
                   "policy-domain": "example.test", "mx-host": ["mail.example.test"]},
        "summary": {"total-successful-session-count": 40, "total-failure-session-count": 2},
        "failure-details": [{"result-type": "certificate-expired", "sending-mta-ip": "198.51.100.1",
                             "receiving-mx-hostname": "mail.example.test", "failed-session-count": 2}],
    }],
}


def report_mail(report_id):
    return report_mail_about("example.test", report_id)


def report_mail_about(domain, report_id):
    from email.message import EmailMessage
    m = EmailMessage()
    m["From"] = "noreply-dmarc@reporter.test"
    m["To"] = "postmaster@example.test"
    m["Subject"] = f"Report Domain: {domain} Submitter: reporter.test Report-ID: <{report_id}>"
    m["Date"] = "Wed, 02 Dec 2026 01:00:00 +0000"
    m["Message-ID"] = f"<{report_id}@reporter.test>"
    m.set_content("DMARC aggregate report.")
    xml = AGGREGATE.format(id=report_id).replace("example.test", domain)
    m.add_attachment(gzip.compress(xml.encode()), maintype="application",
                     subtype="gzip", filename=f"reporter.test!{domain}!1796083200!1796169599.xml.gz")
    return m.as_bytes(policy=email.policy.SMTP)


def tls_report_mail():
    from email.mime.application import MIMEApplication
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText
    m = MIMEMultipart("report", report_type="tlsrpt")
    m["From"] = "tlsrpt@reporter.test"
    m["To"] = "postmaster@example.test"
    m["Subject"] = "Report Domain: example.test Submitter: reporter.test Report-ID: <tls-1@reporter.test>"
    m["TLS-Report-Domain"] = "example.test"
    m["TLS-Report-Submitter"] = "reporter.test"
    m["Date"] = "Wed, 02 Dec 2026 01:00:00 +0000"
    m["Message-ID"] = "<tls-1@reporter.test>"
    m.attach(MIMEText("TLS report for example.test."))
    m.attach(MIMEApplication(gzip.compress(json.dumps(TLS_REPORT).encode()), "tlsrpt+gzip",
                             name="reporter.test!example.test!1796083200!1796169599.json.gz"))
    return m.as_bytes(policy=email.policy.SMTP)


def test_reports_sent_to_us_are_kept_and_summed_up(make_server):
    dns, rport = Dns(free_port()), free_port()
    dns.start()
    s = server_with_dns(make_server, dns, rport)
    try:
        s.start()
        assert "no DMARC or TLS reports received" in s.cli("reports", "list").stdout
        for msg in (report_mail("r-1"), report_mail("r-1"), report_mail("r-2"), tls_report_mail()):
            with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=30) as c:
                c.sendmail("noreply@reporter.test", ["postmaster@example.test"], msg)
        # Not about one of our domains: not kept.
        other = report_mail_about("far.test", "r-3")
        with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=30) as c:
            c.sendmail("noreply@reporter.test", ["postmaster@example.test"], other)

        def listed():
            out = s.cli("reports", "list", "--json").stdout
            r = json.loads(out)
            return r if len(r["reports"]) >= 3 else None
        r = wait_for(listed, timeout=30)
        # r-1 arrived twice and is kept once; r-2 and the TLS report too.
        assert sorted(x["report_id"] for x in r["reports"]) == ["r-1", "r-2", "tls-1@reporter.test"], r
        [d] = r["domains"]
        assert d["domain"] == "example.test"
        assert d["dmarc_reports"] == 2 and d["tls_reports"] == 1
        assert d["messages"] == 26 and d["dmarc_pass"] == 20 and d["dmarc_fail"] == 6
        assert d["reporters"] == ["Reporter Inc"]
        first = d["sources"][0]
        assert first["ip"] == "203.0.113.9" and first["dmarc_fail"] == 6 and first["look_at"]
        assert [x for x in d["sources"] if x["ip"] == "192.0.2.10"][0]["look_at"] is False
        assert d["tls_sessions_ok"] == 40 and d["tls_sessions_failed"] == 2
        assert d["tls_failures"] == [["certificate-expired", "mail.example.test", 2]]
        text = s.cli("reports", "list", "--domain", "example.test").stdout
        assert "example.test: 2 DMARC and 1 TLS reports" in text, text
        assert "203.0.113.9" in text and "look at this" in text
        assert "certificate-expired at mail.example.test: 2 sessions" in text
        assert "no DMARC or TLS reports" in s.cli("reports", "list", "--domain", "far.test").stdout
        # The same through the API, for the web admin.
        token = s.cli("token", "create", "ops").stdout.strip()
        status, body = api(s, "GET", "/reports?domain=example.test", token=token)
        assert status == 200 and body["domains"][0]["dmarc_fail"] == 6, body
        # The reports are mail too: postmaster's mailbox has all five.
        assert wait_for(lambda: len(folder(s, "INBOX")) == 5, timeout=30)
    finally:
        dns.stop()
