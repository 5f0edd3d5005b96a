"""Trust in mail from other servers over real SMTP, with a real DNS server on loopback
publishing SPF, DKIM and DMARC records: messages signed by an independent signer (dkimpy) and
by Postern itself; pass, fail, none and temperror; DMARC reject and quarantine; forged
Authentication-Results; DNS timeouts; block lists."""

import base64
import imaplib
import smtplib
import socket
import time

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import DOMAIN, PASSWORD, free_port
from helpers import ALICE, insecure_ctx, wait_for
from peers import Dns, Sink

GOOD_IP = "127.0.0.5"   # allowed by far.test's SPF, with forward-confirmed reverse DNS
BAD_IP = "127.0.0.6"    # allowed by nobody, no reverse DNS

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
PUB = base64.b64encode(KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()

RECORDS = dict(
    a=[("mx.far.test", GOOD_IP)],
    txt=[("far.test", f"v=spf1 ip4:{GOOD_IP} -all"),
         ("_dmarc.far.test", "v=DMARC1; p=reject"),
         ("s1._domainkey.far.test", f"v=DKIM1; k=rsa; p={PUB}"),
         ("quar.test", f"v=spf1 ip4:{GOOD_IP} -all"),
         ("_dmarc.quar.test", "v=DMARC1; p=quarantine"),
         ("loose.test", f"v=spf1 ip4:{GOOD_IP} -all")]),


def message(frm, subject, extra=""):
    return (f"From: <{frm}>\r\nTo: <{ALICE}>\r\nSubject: {subject}\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@far.test>\r\n{extra}\r\nHello Alice.\r\n").encode()


def signed(msg, domain="far.test"):
    sig = dkim.sign(msg, b"s1", domain.encode(), KEY_PEM, include_headers=[b"from", b"to", b"subject"])
    return sig + msg


def send(server, ip, sender, msg, helo="mx.far.test"):
    """(code, text) of the end of DATA, sent from `ip`."""
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=60, local_hostname=helo,
                      source_address=(ip, 0)) as c:
        c.ehlo(helo)
        code, text = c.mail(sender)
        if code != 250:
            return code, text
        code, text = c.rcpt(ALICE)
        if code != 250:
            return code, text
        return c.data(msg)


def folder(server, name):
    with imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx()) as c:
        c.login(ALICE, PASSWORD)
        c.select(f'"{name}"', readonly=True)
        typ, data = c.fetch("1:*", "(BODY.PEEK[])")
        return [d[1] for d in data if isinstance(d, tuple)]


def header(raw, name):
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    unfolded = head.replace("\r\n\t", " ").replace("\r\n ", " ")
    return [l.split(":", 1)[1].strip() for l in unfolded.split("\r\n") if l.lower().startswith(name.lower() + ":")]


@pytest.fixture
def trust(make_server):
    dns = Dns(free_port())
    dns.start(a=RECORDS[0]["a"], txt=RECORDS[0]["txt"])

    def make(extra=""):
        s = make_server(listeners=("smtp", "imaps", "submissions"), inbound_checks=True, extra_config=f"""
[dns]
nameservers = ["127.0.0.1:{dns.port}"]
timeout = "1s"
{extra}""")
        s.add_user(ALICE)
        return s.start()

    yield dns, make
    dns.stop()


def test_pass_fail_and_the_policies(trust):
    dns, make = trust
    s = make()
    # SPF, DKIM (dkimpy), DMARC and reverse DNS all pass: the INBOX, with one header saying so.
    code, _ = send(s, GOOD_IP, "bob@far.test", signed(message("bob@far.test", "all good")))
    assert code == 250
    got = folder(s, "INBOX")
    assert len(got) == 1
    ar = header(got[0], "Authentication-Results")
    assert len(ar) == 1 and ar[0].startswith("mail.example.test;"), ar
    # (iprev: the resolver answers "localhost" for loopback addresses, so it cannot pass here.)
    for word in ("dkim=pass", "spf=pass", "dmarc=pass", "iprev=", "header.i=@far.test",
                 "smtp.mailfrom=bob@far.test", "policy.dmarc=reject"):
        assert word in ar[0], (word, ar[0])
    assert header(got[0], "X-Spam-Status")[0].startswith("No"), header(got[0], "X-Spam-Status")
    # Signed, but from an address SPF does not allow: DKIM alone passes DMARC.
    assert send(s, BAD_IP, "bob@far.test", signed(message("bob@far.test", "dkim only")))[0] == 250
    # Tampered after signing, from the wrong address: DMARC fails and far.test says reject.
    tampered = signed(message("bob@far.test", "tampered")).replace(b"Hello Alice.", b"Send money.")
    code, text = send(s, BAD_IP, "bob@far.test", tampered)
    assert code == 550 and b"5.7.1" in text and b"p=reject" in text, text
    # Unsigned, from the wrong address, a domain that asks for quarantine: delivered to Junk.
    code, _ = send(s, BAD_IP, "eve@quar.test", message("eve@quar.test", "quarantined"))
    assert code == 250
    junk = folder(s, "Junk")
    assert len(junk) == 1 and b"quarantined" in junk[0]
    ar = header(junk[0], "Authentication-Results")[0]
    assert "spf=fail" in ar and "dmarc=fail" in ar and "dkim=none" in ar and "iprev=" in ar, ar
    assert header(junk[0], "X-Spam-Status")[0].startswith("Yes")
    # No DMARC record, SPF fail: Junk by default (inbound.spf_fail = "junk").
    assert send(s, BAD_IP, "x@loose.test", message("x@loose.test", "spf fails"))[0] == 250
    assert len(folder(s, "Junk")) == 2
    # Nothing published at all: none everywhere, accepted into the INBOX.
    code, _ = send(s, BAD_IP, "y@nowhere.test", message("y@nowhere.test", "unknown"))
    assert code == 250
    inbox = folder(s, "INBOX")
    assert len(inbox) == 3
    ar = header(inbox[-1], "Authentication-Results")[0]
    assert "spf=none" in ar and "dmarc=none" in ar, ar
    # The trace tells the results, and why a message was refused.
    t = s.cli("trace", "--from", "bob@far.test").stdout
    assert "spf=pass dkim=pass dmarc=pass" in t and "p=reject" in t, t


def test_forged_authentication_results_removed(trust):
    dns, make = trust
    s = make()
    forged = message("y@nowhere.test", "forged", extra=(
        "Authentication-Results: mail.example.test; dkim=pass header.d=bank.test\r\n"
        "Authentication-Results: mx.other.test; spf=pass\r\n"))
    assert send(s, BAD_IP, "y@nowhere.test", forged)[0] == 250
    got = folder(s, "INBOX")[0]
    ar = header(got, "Authentication-Results")
    assert len(ar) == 2, ar
    assert "bank.test" not in got.decode()
    assert ar[0].startswith("mail.example.test;") and "dkim=none" in ar[0]
    assert ar[1] == "mx.other.test; spf=pass", "other servers' results stay"


def test_signed_by_postern_itself(trust, make_server):
    """A message Postern signed on its way out passes DKIM at an outside verifier (dkimpy)
    and at another Postern; changed after signing, it fails at both."""
    from helpers import dkim_key_record, dkim_verify
    dns, make = trust
    rport = free_port()
    sink = Sink("127.0.0.3", rport)
    sender = make_server(listeners=("submissions",), extra_config=f"""
[dns]
nameservers = ["127.0.0.1:{dns.port}"]
[delivery]
remote_port = {rport}
retry = ["1s"]
""")
    sender.add_user(ALICE)
    sender.start()
    # The sender's DKIM key as its administrator publishes it (made from the key file, not
    # from anything Postern prints), and far.test's MX to the sink.
    selector, value = dkim_key_record(sender)
    dns.start(a=RECORDS[0]["a"] + [("mx.far.test", "127.0.0.3")],
              mx=[("far.test", "mx.far.test", 10)],
              txt=RECORDS[0]["txt"] + [(f"{selector}._domainkey.{DOMAIN}", value)])
    try:
        import helpers
        helpers.submit(sender, ALICE, ["carol@far.test"], message(ALICE, "signed by postern"))
        wait_for(lambda: sink.messages, timeout=30)
        data = sink.messages[0][2]
        assert data.startswith(b"DKIM-Signature:")
        assert f"d={DOMAIN}".encode() in data and f"s={selector}".encode() in data
        # dkimpy, the outside verifier, in every run.
        assert dkim_verify(data, dns), data[:800]
        tampered = data.replace(b"Hello Alice.", b"Hello Mallory.")
        assert not dkim_verify(tampered, dns)
        assert not dkim_verify(data.replace(b"Subject: signed by postern", b"Subject: signed by me"), dns)
        # Another Postern agrees, both ways.
        s = make()
        assert send(s, GOOD_IP, ALICE, data)[0] == 250
        assert send(s, GOOD_IP, ALICE, tampered)[0] == 250
        inbox = folder(s, "INBOX")
        assert len(inbox) == 2, inbox
        first, second = (header(m, "Authentication-Results")[0] for m in inbox)
        assert f"dkim=pass header.d={DOMAIN}" in first, first
        # (A body changed after signing is "neutral (body hash did not verify)", as Gmail says it.)
        assert "dkim=pass" not in second and ("dkim=fail" in second or "body hash did not verify" in second), second
    finally:
        sink.stop()


class SilentDns:
    """A UDP and TCP port that never answers: DNS timeouts."""

    def __init__(self):
        self.port = free_port()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(50)

    def close(self):
        self.udp.close()
        self.tcp.close()


def test_dns_timeout_defers_never_rejects(make_server):
    dead = SilentDns()
    try:
        s = make_server(listeners=("smtp",), inbound_checks=True, extra_config=f"""
[dns]
nameservers = ["127.0.0.1:{dead.port}"]
timeout = "1s"
""")
        s.add_user(ALICE)
        s.start()
        code, text = send(s, GOOD_IP, "bob@far.test", message("bob@far.test", "dns down"))
        assert code == 451 and b"4.4.3" in text and b"DNS" in text, (code, text)
    finally:
        dead.close()


def test_block_and_allow_lists(trust):
    dns, make = trust
    s = make(extra='[inbound]\nblock = ["spam.test", "eve@far.test"]\nallow = ["quar.test", "127.0.0.7"]')
    with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=30) as c:
        c.ehlo("client.test")
        # Refused at RCPT, so that postmaster still takes mail from anyone (RFC 5321 4.5.1).
        assert c.mail("x@mail.spam.test")[0] == 250
        code, text = c.rcpt(ALICE)
        assert code == 550 and b"5.7.1" in text and b"administrator" in text
        assert c.rcpt("postmaster@example.test")[0] == 250
        c.rset()
        assert c.mail("eve@far.test")[0] == 250
        assert c.rcpt(ALICE)[0] == 550
    # An allowed domain counts only when proven: quar.test's SPF passes for GOOD_IP, so its
    # mail is accepted even with a From that fails DMARC...
    assert send(s, GOOD_IP, "eve@quar.test", message("boss@far.test", "allowed"))[0] == 250
    # ...but anyone can claim quar.test from elsewhere: judged as usual (quarantine: Junk).
    assert send(s, BAD_IP, "eve@quar.test", message("eve@quar.test", "claimed"))[0] == 250
    # An allowed network is the client's own address: no proof needed.
    assert send(s, "127.0.0.7", "x@loose.test", message("x@loose.test", "from the network"))[0] == 250
    inbox = folder(s, "INBOX")
    assert [b"allowed" in m for m in inbox] == [True, False] and b"from the network" in inbox[1]
    junk = folder(s, "Junk")
    assert len(junk) == 1 and b"claimed" in junk[0]


def test_several_authors_go_to_junk(trust):
    dns, make = trust
    s = make()
    m = message("y@nowhere.test", "two authors").replace(b"From: <y@nowhere.test>",
                                                         b"From: <y@nowhere.test>, <ceo@far.test>")
    assert send(s, GOOD_IP, "bob@far.test", m)[0] == 250
    junk = folder(s, "Junk")
    assert len(junk) == 1 and "MULTIPLE_FROM" in header(junk[0], "X-Spam-Status")[0]


def test_hourly_limits_of_logged_in_users(make_server):
    s = make_server(listeners=("submissions",), extra_config="[smtp]\nmax_messages_per_hour = 3\nmax_recipients_per_hour = 4")
    s.add_user(ALICE)
    s.add_user("bob@" + DOMAIN)
    s.start()
    c = smtplib.SMTP_SSL("127.0.0.1", s.port("submissions"), context=insecure_ctx(), timeout=30)
    c.login(ALICE, PASSWORD)
    sent = 0
    for i in range(10):  # bounded: stops at the limit
        c.ehlo()
        code, text = c.mail(ALICE)
        if code != 250:
            break
        c.rcpt("bob@" + DOMAIN)
        c.data(b"Subject: n\r\n\r\nx\r\n")
        sent += 1
    assert sent == 3
    assert code == 451 and b"4.7.1" in text and b"smtp.max_messages_per_hour" in text and b"try again in" in text
    c.quit()


def test_greylisting(trust):
    dns, make = trust
    s = make(extra='[inbound]\ngreylist = true\ngreylist_delay = "2s"')
    msg = message("y@nowhere.test", "greylisted")
    with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=30, source_address=(BAD_IP, 0)) as c:
        c.ehlo("mx.nowhere.test")
        c.mail("y@nowhere.test")
        code, text = c.rcpt(ALICE)
        assert code == 451 and b"Greylisted" in text and b"retry in" in text, text
    # The retry after the delay gets through, from another address of the same network too.
    import time
    time.sleep(2.2)
    assert send(s, "127.0.0.7", "y@nowhere.test", msg)[0] == 250
    assert send(s, BAD_IP, "y@nowhere.test", message("y@nowhere.test", "again"))[0] == 250


def test_dns_blocklist(trust):
    dns, make = trust
    dns.start(a=RECORDS[0]["a"], txt=RECORDS[0]["txt"], a_only=[("6.0.0.127.bl.test", "127.0.0.2")])
    s = make(extra='[inbound]\ndnsbl = ["bl.test"]')
    with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=30, source_address=(BAD_IP, 0)) as c:
        c.ehlo("mx.nowhere.test")
        assert c.mail("y@nowhere.test")[0] == 250
        code, text = c.rcpt(ALICE)
        # abuse@ hears from listed addresses too: how else would they be told?
        assert c.rcpt("abuse@example.test")[0] == 250
    assert code == 550 and b"5.7.1" in text and b"listed on the blocklist bl.test" in text, text
    # Another address is not listed.
    assert send(s, GOOD_IP, "bob@far.test", signed(message("bob@far.test", "not listed")))[0] == 250


def test_lockouts_grow(make_server):
    """The second lockout lasts longer than the first: it still holds when a lockout of the
    configured length would be over. Only lower bounds are timed (a slow machine cannot make
    them fail); the ends of lockouts are waited for with generous deadlines. The exact doubling
    is unit-tested in crates/directory (limiter.rs)."""
    lockout = 3
    s = make_server(listeners=("imaps",),
                    extra_config=f'[auth]\nmax_failures = 2\nlockout = "{lockout}s"\nfailure_delay_ms = 0')
    s.add_user(ALICE)
    s.start()

    def login(pw):
        with imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx(), timeout=30) as c:
            try:
                c.login(ALICE, pw)
                return "ok"
            except imaplib.IMAP4.error as e:
                return str(e)

    def lock_out():
        """Two failures lock the account; returns a moment after the lockout began."""
        assert "Wrong user name or password" in login("wrong-1")
        assert "Wrong user name or password" in login("wrong-2")
        began_before = time.time()
        assert "Too many failed logins" in login(PASSWORD), "locked out, even with the right password"
        return began_before

    def wait_until_open():
        wait_for(lambda: login(PASSWORD) == "ok", timeout=60, step=0.2)

    lock_out()
    wait_until_open()
    began = lock_out()
    # A lockout as long as the first would be over by now: this one is not.
    time.sleep(max(0.0, began + lockout + 0.5 - time.time()))
    assert "Too many failed logins" in login(PASSWORD), f"the second lockout ended within {lockout} s"
    wait_until_open()


def test_users_teach_junk_by_moving_mail(trust):
    dns, make = trust
    # Everything scores as junk here, so only what the user taught keeps mail out of Junk.
    s = make(extra="[inbound]\nspam_threshold = -10.0")

    def move(src, dst):
        with imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx()) as c:
            c.login(ALICE, PASSWORD)
            c.select(f'"{src}"')
            assert c.copy("1", f'"{dst}"')[0] == "OK"
            c.store("1", "+FLAGS", "(\\Deleted)")
            c.expunge()

    assert send(s, GOOD_IP, "bob@far.test", signed(message("bob@far.test", "one")))[0] == 250
    assert len(folder(s, "Junk")) == 1
    move("Junk", "INBOX")   # "not junk": bob@far.test is trusted from now on
    assert send(s, GOOD_IP, "bob@far.test", signed(message("bob@far.test", "two")))[0] == 250
    assert len(folder(s, "INBOX")) == 2 and folder(s, "Junk") == []
    # Trust needs a proven author (DMARC pass): loose.test publishes no DMARC, so teaching that
    # its sender is fine does not let the next one out of Junk; anyone could forge that From.
    assert send(s, GOOD_IP, "x@loose.test", message("x@loose.test", "unproven"))[0] == 250
    move("Junk", "INBOX")
    assert send(s, GOOD_IP, "x@loose.test", message("x@loose.test", "unproven again"))[0] == 250
    assert len(folder(s, "Junk")) == 1
    # Moving mail into Junk marks its author as junk, whatever the checks say.
    move("INBOX", "Junk")   # message 1 of the INBOX: bob's first
    assert send(s, GOOD_IP, "bob@far.test", signed(message("bob@far.test", "three")))[0] == 250
    junk = folder(s, "Junk")
    assert len(junk) == 3 and b"Subject: three" in junk[-1]


def test_arc_chain_verified(trust):
    dns, make = trust
    s = make()
    # A forwarder (mx.far.test) recorded its results and sealed them (dkimpy's ARC signer).
    msg = (b"Authentication-Results: mx.far.test; spf=pass smtp.mailfrom=y@nowhere.test\r\n"
           + message("y@nowhere.test", "forwarded"))
    seal = dkim.arc_sign(msg, b"s1", b"far.test", KEY_PEM, b"mx.far.test",
                         include_headers=[b"from", b"to", b"subject"])
    sealed = b"".join(seal) + msg
    assert send(s, GOOD_IP, "list@far.test", sealed)[0] == 250
    ar = header(folder(s, "INBOX")[0], "Authentication-Results")
    assert "arc=pass" in ar[0], ar
    # A seal over a changed message fails.
    assert send(s, GOOD_IP, "list@far.test", sealed.replace(b"Hello Alice.", b"Hello Bob.")
                )[0] == 250
    ar = header(folder(s, "INBOX")[1], "Authentication-Results")
    assert "arc=neutral" in ar[0] or "arc=fail" in ar[0], ar[0]


def test_connection_rate_per_ip(make_server):
    s = make_server(listeners=("smtp",), extra_config="[smtp]\nmax_connection_rate_per_ip = 3\npregreet_wait_ms = 0")
    s.start()
    greetings = []
    for _ in range(5):  # bounded
        with socket.create_connection(("127.0.0.1", s.port("smtp")), timeout=10) as c:
            greetings.append(c.makefile("rb").readline())
    assert all(g.startswith(b"220 ") for g in greetings[:2]), greetings
    assert greetings[4].startswith(b"421 4.7.0") and b"this minute" in greetings[4], greetings
    # Other addresses are not held back.
    with socket.create_connection(("127.0.0.1", s.port("smtp")), timeout=10, source_address=("127.0.0.8", 0)) as c:
        assert c.makefile("rb").readline().startswith(b"220 ")


def test_no_vacation_or_forged_results_for_junk_and_submissions(trust):
    dns, make = trust
    s = make()
    s.cli("sieve", "put", ALICE, "away", "-", "--activate",
          input='require "vacation"; vacation :days 1 "Away.";')
    # Junk (SPF fail, no DMARC): no reply to its probably forged sender. (The trace tells:
    # the queue may already have given up on these made-up domains.)
    def told(what):
        return what in s.cli("trace", "--to", ALICE).stdout

    assert send(s, BAD_IP, "x@loose.test", message("x@loose.test", "junk"))[0] == 250
    assert told("no vacation reply: the message looks like junk")
    assert not told("sends a vacation reply to x@loose.test")
    # Ordinary mail gets its reply.
    assert send(s, BAD_IP, "y@nowhere.test", message("y@nowhere.test", "hello"))[0] == 250
    assert told("sends a vacation reply to y@nowhere.test")
    assert "vacation reply for y@nowhere.test" in s.cli("trace", "--to", "y@nowhere.test").stdout
    # A vacation :from that is not the user's own address sends nothing.
    s.cli("sieve", "put", ALICE, "away", "-", "--activate",
          input='require "vacation"; vacation :from "ceo@bank.test" "Wire the money.";')
    assert send(s, BAD_IP, "z@nowhere.test", message("z@nowhere.test", "hi"))[0] == 250
    assert told("is not one of the user's addresses")
    assert not told("sends a vacation reply to z@nowhere.test")
    # A logged-in user cannot slip in results in our name either.
    import helpers
    helpers.submit(s, ALICE, [ALICE], message(ALICE, "self", extra=(
        "Authentication-Results: mail.example.test; dmarc=pass header.from=bank.test\r\n")))
    got = [m for m in folder(s, "INBOX") if b"Subject: self" in m][0]
    assert b"bank.test" not in got and header(got, "Authentication-Results") == []


def test_large_spooled_message_checked_by_its_header(trust):
    dns, make = trust
    s = make(extra='[storage]\nspool_threshold = "4K"\n[inbound]\nmax_verify_size = "8K"')
    body = "".join(f"line {i:05d} of a large message\r\n" for i in range(3000))
    m = message("y@nowhere.test", "large", extra=(
        "Authentication-Results: mail.example.test; dkim=pass header.d=bank.test\r\n")
    ).replace(b"Hello Alice.\r\n", body.encode())
    assert send(s, BAD_IP, "y@nowhere.test", m)[0] == 250
    got = folder(s, "INBOX")[0]
    ar = header(got, "Authentication-Results")
    assert len(ar) == 1 and "bank.test" not in ar[0] and "spf=none" in ar[0], ar
    assert got.endswith(body.encode()), "the body streamed through whole"
    assert got.count(b"Subject: large") == 1


def test_postmaster_and_abuse_take_mail_from_anyone(trust):
    """RFC 5321 4.5.1 and RFC 2142: postmaster (bare and at every local domain) and abuse@
    accept mail whatever the sender checks say; with no account of that name it reaches the
    postmaster account (here the first web admin, alice)."""
    dns, make = trust
    s = make(extra='[inbound]\nblock = ["spam.test"]\n[http]\nadmins = ["alice@example.test"]')

    def deliver(ip, sender, rcpts, msg):
        with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=60, local_hostname="mx.far.test",
                          source_address=(ip, 0)) as c:
            c.ehlo("mx.far.test")
            assert c.mail(sender)[0] == 250
            for r in rcpts:
                code, text = c.rcpt(r)
                assert code == 250, (r, code, text)
            return c.data(msg)

    # A sender the administrator blocks, telling postmaster about it.
    assert deliver(GOOD_IP, "x@spam.test", ["postmaster"], message("x@spam.test", "to postmaster bare"))[0] == 250
    # Failing DMARC where the domain asks for rejection: refused for alice, taken for abuse@ (Junk).
    tampered = signed(message("bob@far.test", "forged report")).replace(b"Hello Alice.", b"Send money.")
    code, text = send(s, BAD_IP, "bob@far.test", tampered)
    assert code == 550 and b"p=reject" in text, text
    assert deliver(BAD_IP, "bob@far.test", ["abuse@example.test", "Postmaster@example.test"], tampered)[0] == 250
    inbox, junk = folder(s, "INBOX"), folder(s, "Junk")
    assert [b"to postmaster bare" in m for m in inbox] == [True]
    assert len(junk) == 1 and b"Send money." in junk[0]
    # An account named postmaster takes its own mail.
    s.add_user("postmaster@example.test")
    assert deliver(GOOD_IP, "bob@far.test", ["postmaster@example.test"], signed(message("bob@far.test", "own")))[0] == 250
    assert len(folder(s, "INBOX")) == 1, "alice got nothing more"
    with imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx()) as c:
        c.login("postmaster@example.test", PASSWORD)
        c.select("INBOX", readonly=True)
        typ, data = c.fetch("1:*", "(BODY.PEEK[])")
        got = [d[1] for d in data if isinstance(d, tuple)]
    assert len(got) == 1 and b"own" in got[0]
