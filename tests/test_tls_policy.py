"""TLS policy of outbound delivery against real peers on loopback: MTA-STS (RFC 8461) with
policies served over HTTPS and published in DNS (dnsmasq), and DANE (RFC 7672) with TLSA
records in a DNSSEC-signed zone that a validating resolver (unbound) vouches for."""

import hashlib

from conftest import PASSWORD, free_port
from helpers import ALICE, BOB, submit, wait_for
from peers import Dns, Pki, PolicyServer, SignedDns, Sink


def msg(to, subject):
    return (f"From: Alice <{ALICE}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@example.test>\r\n\r\nHello.\r\n").encode()


def queue_errors(server):
    return server.cli("queue", "list").stdout


def policy(mode, *mx, max_age=86400):
    return "version: STSv1\r\nmode: %s\r\n%smax_age: %d\r\n" % (
        mode, "".join(f"mx: {m}\r\n" for m in mx), max_age)


def configured(make_server, nameserver_port, rport, extra=""):
    s = make_server(extra_config=f"""
[dns]
nameservers = ["127.0.0.1:{nameserver_port}"]
timeout = "2s"
[delivery]
remote_port = {rport}
retry = ["2s"]
connect_timeout = "3s"
command_timeout = "10s"
{extra}""")
    s.add_user(ALICE)
    s.add_user(BOB)
    return s


def test_mta_sts_enforce_needs_a_listed_mx_with_a_valid_certificate(make_server, tmp_root):
    pki = Pki(tmp_root)
    dns, rport, hport = Dns(free_port()), free_port(), free_port()
    domains = {"good": "127.0.0.11", "plain": "127.0.0.12", "forged": "127.0.0.13",
               "other": "127.0.0.14", "trial": "127.0.0.15"}
    _, web_ctx = pki.issue([f"mta-sts.{d}.test" for d in domains])
    web = PolicyServer(hport, web_ctx, {
        "mta-sts.good.test": policy("enforce", "mx.good.test"),
        "mta-sts.plain.test": policy("enforce", "mx.plain.test"),
        "mta-sts.forged.test": policy("enforce", "*.forged.test"),
        # other.test's MX is mx.other.test, which its policy does not name.
        "mta-sts.other.test": policy("enforce", "mx.good.test"),
        "mta-sts.trial.test": policy("testing", "mx.trial.test"),
    })
    sinks = {
        "good": Sink(domains["good"], rport, tls=pki.issue(["mx.good.test"])[1]),
        "plain": Sink(domains["plain"], rport),
        "forged": Sink(domains["forged"], rport, tls=pki.issue(["mx.forged.test"], self_signed=True)[1]),
        "other": Sink(domains["other"], rport, tls=pki.issue(["mx.other.test"])[1]),
        "trial": Sink(domains["trial"], rport),
    }

    def publish(ids=True, good_ip=domains["good"]):
        ips = dict(domains, good=good_ip)
        dns.start(mx=[(f"{d}.test", f"mx.{d}.test", 10) for d in domains],
                  a=[(f"mx.{d}.test", ip) for d, ip in ips.items()]
                  + [(f"mta-sts.{d}.test", "127.0.0.1") for d in domains],
                  txt=[(f"_mta-sts.{d}.test", "v=STSv1; id=20261128") for d in domains] if ids else [])

    publish()
    s = configured(make_server, dns.port, rport,
                   f'mta_sts_port = {hport}\nca_file = "{pki.ca_file}"')
    s.start()
    try:
        for d in domains:
            submit(s, ALICE, [f"u@{d}.test"], msg(f"u@{d}.test", f"to {d}"))
        wait_for(lambda: sinks["good"].messages and sinks["trial"].messages, timeout=30)
        assert sinks["good"].secure == [True], "enforce: over TLS with a checked certificate"
        assert sinks["trial"].secure == [False], "testing mode: delivered as before"
        want = {
            "plain.test": "STARTTLS is not offered (TLS with a checked certificate is required by the MTA-STS policy of plain.test)",
            "forged.test": "required by the MTA-STS policy of forged.test",
            "other.test": "mx.other.test is not one of the MX hosts the MTA-STS policy of other.test allows (mx.good.test)",
        }
        wait_for(lambda: all(w in queue_errors(s) for w in want.values()), timeout=30)
        q = queue_errors(s)
        assert "invalid peer certificate" in q, q
        for d in ("plain", "forged", "other"):
            assert sinks[d].messages == [], f"nothing for {d}.test may leave without its policy"
        assert sinks["other"].connections == 0, "an MX the policy does not list is not even tried"
        fetched = {h for h, _ in web.requests}
        assert fetched == {f"mta-sts.{d}.test" for d in domains}
        assert "MTA-STS policy fetched" in s.log_text()

        # The policy is kept (on disk) for max_age: after a restart, with the TXT record and the
        # web server gone and good.test's MX moved to a server without TLS, mail still waits.
        s.stop()
        web.stop()
        publish(ids=False, good_ip=domains["plain"])
        s.start()
        submit(s, ALICE, ["v@good.test"], msg("v@good.test", "after restart"))
        wait_for(lambda: "STARTTLS is not offered (TLS with a checked certificate is required by the MTA-STS policy of good.test)" in queue_errors(s), timeout=30)
        assert not any(b"after restart" in m[2] for m in sinks["plain"].messages)
        assert len(sinks["good"].messages) == 1
    finally:
        for k in sinks.values():
            k.stop()
        web.stop()
        dns.stop()


def test_dane_tlsa_records_decide_the_certificate(make_server, tmp_root):
    pki = Pki(tmp_root)
    rport = free_port()
    ee_cert, ee_ctx = pki.issue(["anything.invalid"], self_signed=True)
    ta_cert, ta_ctx = pki.issue(["mx.ta.dane.test"])
    stranger, _ = pki.issue(["stranger.invalid"], self_signed=True)

    def sha256(b):
        return hashlib.sha256(b).hexdigest()

    ee_spki = sha256(Pki.spki(ee_cert))
    ips = {"ee": "127.0.0.21", "ta": "127.0.0.22", "bad": "127.0.0.23", "notls": "127.0.0.24",
           "none": "127.0.0.25", "bogus": "127.0.0.26"}
    tlsa = {
        "ee": f"3 1 1 {ee_spki}",
        "ta": f"2 0 1 {sha256(Pki.der(pki.cert))}",
        "bad": f"3 1 1 {sha256(Pki.spki(stranger))}",
        "notls": f"3 1 1 {ee_spki}",
        "bogus": f"3 1 1 {ee_spki}",
    }
    records = []
    for d, ip in ips.items():
        records += [f"{d} MX 10 mx.{d}", f"mx.{d} A {ip}"]
        if d in tlsa:
            records.append(f"_{rport}._tcp.mx.{d} TLSA {tlsa[d]}")
    tampered = ee_spki[:-1] + ("0" if ee_spki[-1] != "0" else "1")
    dns = SignedDns(free_port(), "dane.test", records,
                    tamper=[(f"_{rport}._tcp.mx.bogus 300 IN TLSA 3 1 1 {ee_spki}",
                             f"_{rport}._tcp.mx.bogus 300 IN TLSA 3 1 1 {tampered}")])
    sinks = {
        "ee": Sink(ips["ee"], rport, tls=ee_ctx),
        "ta": Sink(ips["ta"], rport, tls=ta_ctx),
        "bad": Sink(ips["bad"], rport, tls=ee_ctx),
        "notls": Sink(ips["notls"], rport),
        "none": Sink(ips["none"], rport),
        "bogus": Sink(ips["bogus"], rport, tls=ee_ctx),
    }
    s = configured(make_server, dns.port, rport)
    s.start()
    try:
        for d in ips:
            submit(s, ALICE, [f"u@{d}.dane.test"], msg(f"u@{d}.dane.test", f"to {d}"))
        wait_for(lambda: all(sinks[d].messages for d in ("ee", "ta", "none")), timeout=30)
        assert sinks["ee"].secure == [True], "DANE-EE: the key matches, the name does not matter"
        assert sinks["ta"].secure == [True], "DANE-TA: a chain from the named authority"
        assert sinks["none"].secure == [False], "no TLSA records: opportunistic as before"
        want = [
            "matches none of its DANE TLSA records (TLS with a checked certificate is required by the DANE TLSA records of mx.bad.dane.test)",
            "STARTTLS is not offered (TLS with a checked certificate is required by the DANE TLSA records of mx.notls.dane.test)",
            "the TLSA records of mx.bogus.dane.test could not be looked up",
        ]
        wait_for(lambda: all(w in queue_errors(s) for w in want), timeout=30)
        for d in ("bad", "notls", "bogus"):
            assert sinks[d].messages == [], f"nothing for {d}.dane.test may leave unverified"
        assert sinks["bogus"].connections == 0, "a host with bogus TLSA records is not tried"
    finally:
        for k in sinks.values():
            k.stop()
        dns.stop()


def test_requiretls_goes_only_where_a_policy_proves_the_certificate(make_server, tmp_root):
    """RFC 8689: REQUIRETLS is offered over TLS only; a message sent with it goes on only to an
    MX whose certificate a policy (here MTA-STS) proves and that supports REQUIRETLS itself,
    passing the parameter on; otherwise it comes back to its sender (5.7.30), never in the clear."""
    import smtplib
    from helpers import insecure_ctx
    pki = Pki(tmp_root)
    dns, rport, hport = Dns(free_port()), free_port(), free_port()
    domains = {"good": "127.0.0.21", "old": "127.0.0.22", "loose": "127.0.0.23"}
    _, web_ctx = pki.issue([f"mta-sts.{d}.test" for d in ("good", "old")])
    web = PolicyServer(hport, web_ctx, {
        "mta-sts.good.test": policy("enforce", "mx.good.test"),
        "mta-sts.old.test": policy("enforce", "mx.old.test"),
    })
    sinks = {
        "good": Sink(domains["good"], rport, tls=pki.issue(["mx.good.test"])[1], caps=["REQUIRETLS"]),
        # A checked certificate, but it cannot pass the requirement on.
        "old": Sink(domains["old"], rport, tls=pki.issue(["mx.old.test"])[1]),
        # REQUIRETLS, but no policy proves who it is.
        "loose": Sink(domains["loose"], rport, tls=pki.issue(["mx.loose.test"])[1], caps=["REQUIRETLS"]),
    }
    dns.start(mx=[(f"{d}.test", f"mx.{d}.test", 10) for d in domains],
              a=[(f"mx.{d}.test", ip) for d, ip in domains.items()]
              + [(f"mta-sts.{d}.test", "127.0.0.1") for d in ("good", "old")],
              txt=[(f"_mta-sts.{d}.test", "v=STSv1; id=1") for d in ("good", "old")])
    s = configured(make_server, dns.port, rport, f'mta_sts_port = {hport}\nca_file = "{pki.ca_file}"')
    s.start()
    try:
        # Offered only once the session is encrypted, and refused before.
        with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=30) as c:
            c.ehlo("client.test")
            assert not c.has_extn("requiretls")
            code, text = c.docmd("MAIL FROM:<bob@far.test> REQUIRETLS")
            assert code == 530 and b"5.7.10" in text, text
            c.starttls(context=insecure_ctx())
            c.ehlo("client.test")
            assert c.has_extn("requiretls")
            assert c.docmd("MAIL FROM:<bob@far.test> REQUIRETLS")[0] == 250
        c = smtplib.SMTP_SSL("127.0.0.1", s.port("submissions"), context=insecure_ctx(), timeout=30)
        c.ehlo("client.test")
        assert c.has_extn("requiretls")
        c.login(ALICE, PASSWORD)
        for d in domains:
            c.sendmail(ALICE, [f"u@{d}.test"], msg(f"u@{d}.test", f"secret for {d}"),
                       mail_options=["REQUIRETLS"])
        # Without REQUIRETLS, the same mail to the loose domain goes as usual.
        c.sendmail(ALICE, ["v@loose.test"], msg("v@loose.test", "ordinary"))
        c.quit()
        wait_for(lambda: sinks["good"].messages and sinks["loose"].messages, timeout=30)
        assert sinks["good"].secure == [True]
        mail = [l for l in sinks["good"].commands if l.upper().startswith("MAIL FROM")]
        assert mail and mail[-1].endswith(" REQUIRETLS"), mail
        assert [m[2] for m in sinks["loose"].messages if b"secret" in m[2]] == []
        assert sinks["old"].messages == []
        # The other two come back to Alice, saying why.
        from helpers import inbox
        def bounces():
            got = [m for m in inbox(s) if b"5.7.30" in m]
            return got if len(got) == 2 else None
        got = wait_for(bounces, timeout=30)
        text = b"\n".join(got)
        assert b"old.test" in text and b"does not support REQUIRETLS" in text, text[:3000]
        assert b"loose.test" in text and b"no mail server of loose.test has a DANE or MTA-STS policy" in text
        assert "the queue is empty" in queue_errors(s)
    finally:
        for k in sinks.values():
            k.stop()
        web.stop()
        dns.stop()
