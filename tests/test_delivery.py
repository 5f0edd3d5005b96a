"""Outbound delivery against real peers: a DNS server on loopback (dnsmasq) publishing MX, A,
TXT and null MX records; Postfix + Dovecot as a destination; a scriptable SMTP server for
failures. Every test binds to loopback only."""

import email
import re

import pytest

from conftest import free_port
from helpers import ALICE, BOB, dkim_key_record, dkim_verify, inbox, mx_send, submit, wait_for
from peers import Dns, Pki, Sink


@pytest.fixture
def net(make_server):
    """dnsmasq and a Postern that sends through it to port `rport` of whatever the MX says."""
    dns = Dns(free_port())
    rport = free_port()

    def make(**kw):
        extra = kw.pop("extra", "")
        s = make_server(extra_config=f"""
[dns]
nameservers = ["127.0.0.1:{dns.port}"]
[delivery]
remote_port = {rport}
retry = ["1s"]
connect_timeout = "2s"
command_timeout = "20s"
{extra}""")
        s.add_user(ALICE)
        s.add_user(BOB)
        return s

    yield dns, rport, make
    dns.stop()


def queue_list(server):
    return server.cli("queue", "list").stdout


def msg(subject, body="Hello.\r\n"):
    return (f"From: Alice <{ALICE}>\r\nTo: someone@far.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@example.test>\r\n\r\n{body}").encode()


def test_temporary_failure_then_success(net):
    dns, rport, make = net
    dns.start(mx=[("far.test", "mx.far.test", 10)], a=[("mx.far.test", "127.0.0.3")])
    tries = []

    def flaky(cmd, line, sink):
        if cmd == "RCPT":
            tries.append(line)
            if len(tries) == 1:
                return "451 4.7.1 Greylisted, try again"
        return None

    sink = Sink("127.0.0.3", rport, script=flaky)
    s = make()
    s.start()
    try:
        submit(s, ALICE, ["someone@far.test"], msg("greylisted"))
        wait_for(lambda: sink.messages, timeout=30)
        assert len(sink.messages) == 1
        mail, rcpts, data = sink.messages[0]
        assert (mail, rcpts) == (ALICE, ["someone@far.test"])
        assert b"Subject: greylisted" in data and b"Return-Path" not in data
        assert len(tries) == 2, "one deferral, then success"
        wait_for(lambda: "the queue is empty" in queue_list(s), timeout=10)
        log = s.log_text()
        assert "deferred" in log and "451 4.7.1 Greylisted" in log and "delivered" in log
    finally:
        sink.stop()


def test_permanent_failure_returns_a_dsn(net):
    dns, rport, make = net
    dns.start(mx=[("far.test", "mx.far.test", 10)], a=[("mx.far.test", "127.0.0.3")])
    sink = Sink("127.0.0.3", rport, script=lambda cmd, line, sink: "550 5.1.1 No such user here" if cmd == "RCPT" else None)
    s = make()
    s.start()
    try:
        submit(s, ALICE, ["ghost@far.test"], msg("to a ghost"))
        got = wait_for(lambda: inbox(s, ALICE), timeout=30)
        dsn = email.message_from_bytes(got[0])
        assert dsn["Subject"] == "Undelivered Mail Returned to Sender"
        assert dsn.get_content_type() == "multipart/report"
        text = got[0].decode()
        assert "550 5.1.1 No such user here" in text
        assert "What it likely means: The address does not exist" in text
        assert "Final-Recipient: rfc822; ghost@far.test" in text and "Action: failed" in text
        assert "Subject: to a ghost" in text, "the original is attached"
        assert "Return-Path: <>" in text, "notifications come from the null sender"
        wait_for(lambda: "the queue is empty" in queue_list(s), timeout=10)
    finally:
        sink.stop()


def test_null_mx_bounces_at_once(net):
    dns, rport, make = net
    dns.start(null_mx=["nomail.test"])
    s = make()
    s.start()
    submit(s, ALICE, ["x@nomail.test"], msg("null mx"))
    got = wait_for(lambda: inbox(s, ALICE), timeout=30)
    assert b"null MX" in got[0] and b"RFC 7505" in got[0]


def test_no_mx_falls_back_to_a_and_multiple_mx_first_down(net):
    dns, rport, make = net
    dns.start(mx=[("two.test", "mx1.two.test", 10), ("two.test", "mx2.two.test", 20)],
              a=[("amx.test", "127.0.0.4"), ("mx1.two.test", "127.0.0.5"), ("mx2.two.test", "127.0.0.6")])
    a_sink = Sink("127.0.0.4", rport)
    second = Sink("127.0.0.6", rport)
    s = make()
    s.start()
    try:
        submit(s, ALICE, ["x@amx.test", "y@two.test"], msg("fallbacks"))
        wait_for(lambda: a_sink.messages and second.messages, timeout=30)
        assert a_sink.messages[0][1] == ["x@amx.test"]
        assert second.messages[0][1] == ["y@two.test"]
    finally:
        a_sink.stop()
        second.stop()


def test_smarthost_with_auth(net, tmp_root):
    dns, rport, make = net
    dns.start()
    # Without TLS the password is never sent: the mail waits and the queue says why.
    plain = Sink("127.0.0.7", rport, auth=("relayuser", "relay-pass"))
    s = make(extra=f'[relay]\nhost = "127.0.0.7:{rport}"\nusername = "relayuser"\npassword = "relay-pass"\ntls = "opportunistic"\n')
    s.start()
    try:
        submit(s, ALICE, ["anyone@anywhere.test"], msg("via smarthost"))
        wait_for(lambda: "our password was not sent in the clear" in queue_list(s), timeout=30)
        assert not any(c.startswith("AUTH") for c in plain.commands) and not plain.messages
    finally:
        plain.stop()
    sink = Sink("127.0.0.7", rport, auth=("relayuser", "relay-pass"),
                tls=Pki(tmp_root).issue(["smarthost.test"], self_signed=True)[1])
    try:
        s.cli("queue", "retry", "--all")
        wait_for(lambda: sink.messages, timeout=30)
        assert any(c.startswith("AUTH PLAIN") for c in sink.commands)
        assert sink.messages[0][1] == ["anyone@anywhere.test"] and sink.secure == [True]
    finally:
        sink.stop()


def test_smarthost_certificate_is_checked(net, tmp_root):
    dns, rport, make = net
    dns.start(a=[("relay.test", "127.0.0.9")])
    pki = Pki(tmp_root)
    # A certificate nobody vouches for: the mail waits, and the queue says why.
    forged = Sink("127.0.0.9", rport, tls=pki.issue(["relay.test"], self_signed=True)[1])
    # The first line of `extra` still belongs to [delivery].
    s = make(extra=f'ca_file = "{pki.ca_file}"\n[relay]\nhost = "relay.test:{rport}"\ntls = "starttls"\n')
    s.start()
    try:
        submit(s, ALICE, ["anyone@anywhere.test"], msg("checked smarthost"))
        wait_for(lambda: "invalid peer certificate" in queue_list(s), timeout=30)
        assert not forged.messages
    finally:
        forged.stop()
    # One from the authority in delivery.ca_file, for the smarthost's name: delivered.
    good = Sink("127.0.0.9", rport, tls=pki.issue(["relay.test"])[1])
    try:
        s.cli("queue", "retry", "--all")
        wait_for(lambda: good.messages, timeout=30)
        assert good.secure == [True]
    finally:
        good.stop()


DOTS_BODY = (".leading dot\r\n..two dots\r\n.\r\nnot the end\r\n"
             "text\r\n.\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<user2@bench.test>\r\nDATA\r\nSmuggled\r\n")


def dot_stuffed(text: bytes) -> bytes:
    """RFC 5321 4.5.2, written out here: every line that starts with "." gets one more."""
    return b"".join(b"." + l if l.startswith(b".") else l for l in text.splitlines(keepends=True))


def test_dot_stuffing_on_the_wire_and_no_smuggling(net):
    """What Postern sends after DATA, byte for byte as it crossed the socket, is the body
    stuffed by the rule above; the lines that look like commands stay inside the message."""
    dns, rport, make = net
    dns.start(mx=[("far.test", "mx.far.test", 10)], a=[("mx.far.test", "127.0.0.8")])
    sink = Sink("127.0.0.8", rport)
    s = make()
    s.start()
    try:
        submit(s, ALICE, ["someone@far.test"], msg("dots", DOTS_BODY))
        wait_for(lambda: sink.messages, timeout=30)
        wait_for(lambda: "the queue is empty" in queue_list(s), timeout=30)
        assert len(sink.wire) == 1, "one message in, one message out"
        wire = sink.wire[0]
        assert wire.endswith(b"\r\n\r\n" + dot_stuffed(DOTS_BODY.encode())), wire[-300:]
        assert b"\r\n.\r\n" not in wire and not wire.startswith(b".\r\n"), "no line is a lone dot"
        assert [c.split(":")[0] for c in sink.commands if c.startswith(("MAIL", "RCPT", "DATA"))] == \
            ["MAIL FROM", "RCPT TO", "DATA"], sink.commands
    finally:
        sink.stop()


def test_dots_reach_postfix_and_dovecot_unchanged(net, postfix_dovecot):
    """The same body through a real Postfix into Dovecot: the reader sees what was written,
    and the command-like lines never became a second message."""
    import imaplib
    dns, rport, make = net
    dns.start(mx=[("bench.test", "mx.bench.test", 10)], a=[("mx.bench.test", "127.0.0.1")])
    peer = postfix_dovecot(ports={"smtp": rport})
    s = make()
    s.start()
    submit(s, ALICE, ["user1@bench.test"], msg("dots", DOTS_BODY).replace(b"someone@far.test", b"user1@bench.test"))
    wait_for(lambda: peer.maildir_files(1), timeout=60)
    wait_for(lambda: "the queue is empty" in queue_list(s), timeout=30)
    with imaplib.IMAP4("127.0.0.1", peer.ports["imap"]) as c:
        c.login(peer.address(1), peer.password)
        assert c.select("INBOX", readonly=True)[1] == [b"1"]
        typ, data = c.fetch("1", "(BODY.PEEK[TEXT])")
        assert typ == "OK" and data[0][1] == DOTS_BODY.encode(), data
        c.logout()
    assert peer.maildir_files(2) == [], "nothing was smuggled to user2"
    log = peer.postfix_log.read_text()
    assert "evil@x.test" not in log and log.count("status=sent") == 1, log


def test_restart_mid_queue_delivers_each_once(net):
    dns, rport, make = net
    dns.start(mx=[("far.test", "mx.far.test", 10)], a=[("mx.far.test", "127.0.0.9")])
    s = make()
    s.start()
    for i in range(5):
        submit(s, ALICE, [f"r{i}@far.test"], msg(f"queued {i}"))
    # Nobody listens yet: everything waits on the queue, each after a failed attempt.
    wait_for(lambda: queue_list(s).count("cannot connect") == 5, timeout=30)
    assert queue_list(s).count("pending") == 5
    s.kill()
    sink = Sink("127.0.0.9", rport)
    try:
        s.start()
        wait_for(lambda: len(sink.messages) >= 5, timeout=30)
        # Once the queue is empty nothing more can come: then count.
        wait_for(lambda: "the queue is empty" in queue_list(s), timeout=30)
        subjects = sorted(re.search(rb"Subject: (queued \d)", m[2]).group(1) for m in sink.messages)
        assert subjects == [f"queued {i}".encode() for i in range(5)], "each exactly once"
    finally:
        sink.stop()


def test_queue_commands(net):
    dns, rport, make = net
    dns.start(mx=[("far.test", "mx.far.test", 10)], a=[("mx.far.test", "127.0.0.10")])
    s = make(extra="")
    s.start()
    submit(s, ALICE, ["a@far.test"], msg("one"))
    submit(s, ALICE, ["b@far.test"], msg("two"))
    out = wait_for(lambda: (lambda o: o if o.count("cannot connect") == 2 else None)(queue_list(s)), timeout=30)
    ids = [int(l.split("\t")[0]) for l in out.splitlines() if l and l[0].isdigit()]
    assert len(ids) == 2, out
    assert "a@far.test\tpending\t" in out
    show = s.cli("queue", "show", str(ids[0])).stdout
    assert "a@far.test" in show
    s.cli("queue", "delete", str(ids[0]))
    s.cli("queue", "bounce", str(ids[1]))
    got = wait_for(lambda: inbox(s, ALICE), timeout=30)
    assert b"returned to the sender by the mail administrator" in got[0]
    wait_for(lambda: "the queue is empty" in queue_list(s), timeout=30)
    # Read back over POP3: one notice, for the bounced message only; the deleted one is gone
    # without a notice.
    got = inbox(s, ALICE)
    assert len(got) == 1 and b"Final-Recipient: rfc822; b@far.test" in got[0], got
    assert b"a@far.test" not in got[0]
    r = s.cli("queue", "show", "999", check=False)
    assert r.returncode != 0 and "no queued message 999" in r.stderr


def test_delivers_to_postfix_by_mx_with_a_valid_dkim_signature(net, postfix_dovecot):
    """Postern looks up the MX, delivers to a real Postfix over STARTTLS, Postfix hands it to
    Dovecot; dkimpy (an outside verifier) checks Postern's signature in the delivered file."""
    dns, rport, make = net
    s = make()
    selector, record = dkim_key_record(s)
    # The record `postern init` tells the user to publish is the key's.
    assert f'{selector}._domainkey.example.test.  TXT  "{record}"' in s.init_output
    dns.start(mx=[("bench.test", "mx.bench.test", 10)], a=[("mx.bench.test", "127.0.0.1")],
              txt=[(f"{selector}._domainkey.example.test", record)])
    peer = postfix_dovecot(ports={"smtp": rport})
    s.start()
    m = (f"From: Alice <{ALICE}>\r\nTo: user1@bench.test\r\nSubject: signed\r\n"
         f"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <signed@example.test>\r\n\r\nSigned body.\r\n").encode()
    submit(s, ALICE, ["user1@bench.test"], m)
    [path] = wait_for(lambda: peer.maildir_files(1), timeout=60)
    got = path.read_bytes().replace(b"\n", b"\r\n")
    assert b"DKIM-Signature:" in got and b"d=example.test" in got and f"s={selector}".encode() in got
    assert dkim_verify(got, dns), got[:1500]
    # The signature breaks when the body or a signed header changes.
    assert not dkim_verify(got.replace(b"Signed body.", b"Changed body"), dns)
    assert not dkim_verify(got.replace(b"Subject: signed", b"Subject: signed!"), dns)
    # Postern took the STARTTLS Postfix offered: Postfix's Received header and its log say so.
    head = got.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n\t", " ").replace("\r\n ", " ")
    postfix = [l for l in head.split("\r\n") if l.startswith("Received: from mail.example.test ")]
    assert len(postfix) == 1, head
    assert "(using TLSv1.3 with cipher" in postfix[0] or "(using TLSv1.2 with cipher" in postfix[0], postfix
    assert "by mx.bench.test (Postfix) with ESMTPS" in postfix[0], postfix
    assert "Anonymous TLS connection established from" in peer.postfix_log.read_text()
    wait_for(lambda: "the queue is empty" in queue_list(s), timeout=30)


def test_one_connection_carries_several_messages(net):
    dns, rport, make = net
    dns.start(mx=[("far.test", "mx.far.test", 10)], a=[("mx.far.test", "127.0.0.11")])
    sink = Sink("127.0.0.11", rport)
    s = make()
    s.start()
    try:
        for i in range(3):
            submit(s, ALICE, [f"r{i}@far.test"], msg(f"reuse {i}"))
            wait_for(lambda: len(sink.messages) == i + 1, timeout=20)
        assert sink.connections == 1, "the connection was kept and reused"
        assert sum(1 for c in sink.commands if c == "RSET") >= 2
    finally:
        sink.stop()


def trace(server, *args):
    return server.cli("trace", *args).stdout


def trace_until(server, trace_id, text, timeout=30):
    def check():
        out = trace(server, "--id", trace_id)
        return out if text in out else None
    return wait_for(check, timeout=timeout)


def test_trace_local_deferral_success_and_bounce(net):
    from helpers import submit_id
    dns, rport, make = net
    dns.start(mx=[("far.test", "mx.far.test", 10), ("bad.test", "mx.bad.test", 10)],
              a=[("mx.far.test", "127.0.0.12"), ("mx.bad.test", "127.0.0.13")])
    tries = []

    def flaky(cmd, line, sink):
        if cmd == "RCPT":
            tries.append(line)
            if len(tries) == 1:
                return "451 4.7.1 Greylisted, come back later"
        return None

    good = Sink("127.0.0.12", rport, script=flaky)
    bad = Sink("127.0.0.13", rport, script=lambda cmd, line, sink: "550 5.1.1 Unknown user" if cmd == "RCPT" else None)
    s = make()
    s.start()
    try:
        local = submit_id(s, ALICE, [BOB], msg("to bob"))
        out = trace(s, "--id", local)
        assert f"Message {local}" in out
        assert re.search(r"received\s+on submission from .* \[127\.0\.0\.1\] as alice@example\.test over TLS", out)
        assert "sender <alice@example.test>, 1 recipient(s): bob@example.test" in out
        assert "Message-ID <to-bob@example.test>" in out
        assert re.search(r"delivered\s+to bob@example.test, folder INBOX", out)

        remote = submit_id(s, ALICE, ["carol@far.test"], msg("to carol"))
        wait_for(lambda: good.messages, timeout=30)
        out = trace_until(s, remote, "delivered  to carol")
        assert re.search(r"queued\s+for carol@far.test", out)
        assert re.search(r"deferred\s+to carol@far.test: mx.far.test\[127.0.0.12\] said: 451 4.7.1 Greylisted", out)
        assert re.search(r"delivered\s+to carol@far.test: mx.far.test\[127.0.0.12\] said: 250 2.0.0 queued", out)
        kinds = re.findall(r"^\s+\S+ \S+\s+(\w+)", out, re.M)
        assert kinds == ["received", "queued", "deferred", "delivered"], kinds

        bounced = submit_id(s, ALICE, ["dan@bad.test"], msg("to dan"))
        out = trace_until(s, bounced, "notified")
        assert re.search(r"bounced\s+to dan@bad.test: 550 5.1.1 Unknown user", out)
        dsn_id = re.search(r"notification (\w+) sent to <alice@example.test>", out).group(1)
        out = trace(s, "--id", dsn_id)
        assert f"about message {bounced}" in out and re.search(r"delivered\s+to alice@example.test", out)
        # Finding messages without their id.
        assert remote in trace(s, "--to", "carol@far.test")
        assert local in trace(s, "--message-id", "<to-bob@example.test>")
        by_sender = trace(s, "--from", ALICE, "--since", "1h")
        assert local in by_sender and remote in by_sender and bounced in by_sender
        assert local not in trace(s, "--from", ALICE, "--to", "carol@far.test")
    finally:
        good.stop()
        bad.stop()


def test_forwarding_with_srs_and_the_bounce_back(net):
    import smtplib
    from helpers import mx_send
    dns, rport, make = net
    dns.start(mx=[("far.test", "mx.far.test", 10), ("other.test", "mx.other.test", 10)],
              a=[("mx.far.test", "127.0.0.3"), ("mx.other.test", "127.0.0.4")])
    far, other = Sink("127.0.0.3", rport), Sink("127.0.0.4", rport)
    s = make()
    s.start()
    try:
        r = s.cli("forward", "set", ALICE, "carol@far.test", "--keep-copy")
        assert "now goes to carol@far.test and stays in its INBOX too" in r.stdout
        assert "alice@example.test is a user who forwards to carol@far.test, keeping a copy" in \
            s.cli("route", ALICE).stdout
        # Mail from another domain leaves with a sender of ours (SRS), so SPF passes at far.test.
        assert mx_send(s, "dave@other.test", [ALICE], msg("forward me")) == {}
        wait_for(lambda: far.messages, timeout=30)
        mail, rcpts, data = far.messages[0]
        assert rcpts == ["carol@far.test"] and b"Subject: forward me" in data
        assert re.fullmatch(r"srs0=[a-z2-7]{6}=[a-z2-7]{2}=other\.test=dave@example\.test", mail), mail
        assert len(inbox(s, ALICE)) == 1, "the copy kept"
        # far.test bounces it: the bounce reaches the original sender through us.
        assert mx_send(s, "", [mail], b"Subject: Undelivered Mail\r\n\r\nno such user\r\n") == {}
        wait_for(lambda: other.messages, timeout=30)
        assert other.messages[0][0] == "" and other.messages[0][1] == ["dave@other.test"]
        assert "back to dave@other.test" in s.cli("route", mail).stdout
        # A made-up or tampered SRS address is nobody, and a real one takes bounces only:
        # no relaying through it.
        for sender, fake in (("", mail.replace("dave", "eve")),
                             ("", "srs0=aaaaaa=aa=victim.test=bob@example.test"),
                             ("spammer@far.test", mail)):
            with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=30) as c:
                c.ehlo("client.test")
                c.mail(sender)
                code, text = c.rcpt(fake)
                assert code == 550 and b"5.1.1" in text, fake
        # Without a copy; and a local sender's mail is forwarded with its own sender.
        s.cli("forward", "set", BOB, "carol@far.test")
        submit(s, ALICE, [BOB], msg("from alice"))
        wait_for(lambda: len(far.messages) >= 2, timeout=30)
        got = {m[2].split(b"Subject: ")[1].split(b"\r\n")[0]: m[0] for m in far.messages}
        assert got[b"from alice"] == ALICE
        assert inbox(s, BOB) == []
        s.cli("forward", "clear", BOB)
        assert "bob@example.test is a user: delivered to its INBOX" in s.cli("route", BOB).stdout
        r = s.cli("forward", "set", BOB, BOB, check=False)
        assert r.returncode != 0 and "itself" in r.stderr
    finally:
        far.stop()
        other.stop()


def test_sieve_redirect_and_vacation_to_other_domains(net):
    """A Sieve redirect to another domain leaves with an SRS sender; a vacation reply with the
    null sender, once per sender."""
    dns, rport, make = net
    dns.start(mx=[("far.test", "mx.far.test", 10), ("other.test", "mx.other.test", 10)],
              a=[("mx.far.test", "127.0.0.3"), ("mx.other.test", "127.0.0.4")])
    far, other = Sink("127.0.0.3", rport), Sink("127.0.0.4", rport)
    s = make()
    s.start()
    try:
        s.cli("sieve", "put", ALICE, "main", "-", "--activate", input='''require ["vacation", "copy"];
redirect :copy "carol@far.test";
vacation :days 7 :subject "Away" "Back next week.";
''')
        def to_alice(subject):
            return (f"From: Dave <dave@other.test>\r\nTo: Alice <{ALICE}>\r\nSubject: {subject}\r\n"
                    f"Message-ID: <{subject.replace(' ', '-')}@other.test>\r\n\r\nHello.\r\n").encode()

        assert mx_send(s, "dave@other.test", [ALICE], to_alice("hello alice")) == {}
        wait_for(lambda: far.messages and other.messages, timeout=30)
        mail, rcpts, data = far.messages[0]
        assert rcpts == ["carol@far.test"] and b"Subject: hello alice" in data
        assert re.fullmatch(r"srs0=[a-z2-7]{6}=[a-z2-7]{2}=other\.test=dave@example\.test", mail), mail
        assert not data.startswith(b"Return-Path:"), "our Return-Path line is not sent on"
        mail, rcpts, data = other.messages[0]
        assert mail == "" and rcpts == ["dave@other.test"], (mail, rcpts)
        assert b"Subject: Away" in data and b"Auto-Submitted: auto-replied" in data
        assert b"In-Reply-To: <hello-alice@other.test>" in data
        assert len(inbox(s, ALICE)) == 1, ":copy keeps it"
        # Another message from the same sender: redirected again, no second reply.
        assert mx_send(s, "dave@other.test", [ALICE], to_alice("hello again")) == {}
        wait_for(lambda: len(far.messages) == 2, timeout=30)
        # Everything the second message caused has left once the queue is empty.
        wait_for(lambda: "the queue is empty" in queue_list(s), timeout=30)
        assert len(other.messages) == 1
        trace = s.cli("trace", "--to", ALICE).stdout
        assert "redirects it to carol@far.test" in trace and "vacation reply" in trace, trace
    finally:
        far.stop()
        other.stop()


LONG = "".join(f"word{i:05d} " for i in range(2000))[:20000]


def imap_messages(server, user):
    """Every INBOX message, whole (POP3 clients refuse lines this long; IMAP literals do not)."""
    import imaplib
    from conftest import PASSWORD
    from helpers import insecure_ctx
    with imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx()) as c:
        c.login(user, PASSWORD)
        c.select("INBOX", readonly=True)
        typ, data = c.fetch("1:*", "(BODY.PEEK[])")
        return [d[1] for d in data if isinstance(d, tuple)]


def test_long_lines_delivered_intact_and_reencoded_when_we_sign(net):
    """A 20,000-octet line: delivered locally as sent; a user's message with one leaves with
    every line within 998 octets (quoted-printable) and a DKIM signature dkimpy verifies."""
    dns, rport, make = net
    s = make()
    selector, record = dkim_key_record(s)
    dns.start(mx=[("far.test", "mx.far.test", 10)], a=[("mx.far.test", "127.0.0.14")],
              txt=[(f"{selector}._domainkey.example.test", record)])
    sink = Sink("127.0.0.14", rport)
    s.start()
    try:
        body = f"Before.\r\n{LONG}\r\nAfter.\r\n"
        mx_send(s, "x@far.test", [ALICE], msg("long line in", body))
        [got] = imap_messages(s, ALICE)
        assert got.endswith(body.encode()), "stored as sent"
        submit(s, ALICE, ["someone@far.test", BOB], msg("long line out", body))
        wait_for(lambda: sink.messages, timeout=30)
        out = sink.wire[0]
        assert max(len(l) for l in out.split(b"\r\n")) <= 998
        assert b"Content-Transfer-Encoding: quoted-printable" in out
        parsed = email.message_from_bytes(out.replace(b"\r\n..", b"\r\n."))
        assert parsed.get_payload(decode=True).decode() == body.replace("\r\n", "\n").replace("\n", "\r\n")
        assert dkim_verify(out.replace(b"\r\n..", b"\r\n."), dns), out[:1500]
        # The local copy is the same message: what leaves is what Bob reads.
        bobs = imap_messages(s, BOB)
        assert len(bobs) == 1 and b"quoted-printable" in bobs[0]
    finally:
        sink.stop()


def test_mail_passing_through_is_reencoded_only_when_refused_for_its_lines(net):
    """Forwarded mail goes out as it came; a server that refuses its long lines gets it again,
    re-encoded, once."""
    dns, rport, make = net
    s = make()
    s.cli("alias", "add", "fwd@example.test", "someone@far.test")
    dns.start(mx=[("far.test", "mx.far.test", 10)], a=[("mx.far.test", "127.0.0.15")])

    def strict(cmd, line, sink):
        if cmd == "END" and any(len(l) > 998 for l in sink.current.split(b"\r\n")):
            return "550 5.5.2 Line too long"
        return None

    sink = Sink("127.0.0.15", rport, script=strict)
    s.start()
    try:
        body = f"{LONG}\r\n"
        mx_send(s, "x@far.test", ["fwd@example.test"], msg("forwarded", body))
        wait_for(lambda: sink.messages, timeout=30)
        wait_for(lambda: "the queue is empty" in queue_list(s), timeout=30)
        assert len(sink.refused) == 1 and len(sink.wire) == 1, "refused once, then taken"
        assert LONG.encode() in sink.refused[0], "first as it came"
        assert b"quoted-printable" in sink.wire[0] and max(len(l) for l in sink.wire[0].split(b"\r\n")) <= 998
    finally:
        sink.stop()
