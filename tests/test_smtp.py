"""SMTP over real sockets with real clients: smtplib, swaks, raw scripts for the attacks."""

import base64
import email
import imaplib
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import DOMAIN, PASSWORD
from helpers import (ALICE, BOB, Raw, inbox, insecure_ctx, mx_send, smtp_raw, strip_trace,
                     submit, wait_for)

MSG = (b"From: Bob <bob@far.test>\r\nTo: alice@example.test\r\nSubject: hello\r\n"
       b"Message-ID: <1@far.test>\r\n\r\nHello Alice.\r\n..a line with a dot\r\n")


def test_mx_delivery_is_byte_exact(server):
    assert mx_send(server, "bob@far.test", [ALICE], MSG) == {}
    [raw] = inbox(server)
    assert raw.startswith(b"Return-Path: <bob@far.test>\r\nReceived: from ")
    assert strip_trace(raw) == MSG
    rec = raw.split(b"\r\n")[1:5]
    assert b"by mail.example.test (Postern) with ESMTP id " in b"".join(rec)


def test_mx_multiple_recipients_and_alias(server):
    server.cli("alias", "add", "team@example.test", ALICE, BOB)
    s = smtplib.SMTP("127.0.0.1", server.port("smtp"))
    s.ehlo("client.test")
    refused = s.sendmail("x@far.test", ["team@example.test", ALICE, "nobody@example.test"], MSG)
    assert list(refused) == ["nobody@example.test"]
    assert refused["nobody@example.test"][0] == 550
    s.quit()
    # alice was named twice (directly and via the alias): one copy.
    assert len(inbox(server, ALICE)) == 1
    assert len(inbox(server, BOB)) == 1


def test_submission_starttls_auth_plain_and_login(server):
    for mech in ("PLAIN", "LOGIN"):
        s = smtplib.SMTP("127.0.0.1", server.port("submission"))
        s.ehlo("client.test")
        assert not s.has_extn("auth"), "no AUTH offered before TLS"
        s.starttls(context=insecure_ctx())
        s.ehlo("client.test")
        assert "PLAIN" in s.esmtp_features["auth"]
        s.user, s.password = ALICE, PASSWORD
        code, resp = s.auth(mech, getattr(s, "auth_" + mech.lower()))
        assert code == 235, resp
        s.sendmail(ALICE, [BOB], MSG.replace(b"hello", mech.encode()))
        s.quit()
    subjects = [email.message_from_bytes(m)["Subject"] for m in inbox(server, BOB)]
    assert subjects == ["PLAIN", "LOGIN"]


def test_submissions_implicit_tls_to_local_and_remote(make_server):
    from conftest import free_port
    from peers import Dns
    # far.test's MX is on loopback, where nobody answers: the remote copy waits on the queue.
    dns = Dns(free_port())
    dns.start(mx=[("far.test", "mx.far.test", 10)], a=[("mx.far.test", "127.0.0.30")])
    try:
        server = make_server(extra_config=f"""
[dns]
nameservers = ["127.0.0.1:{dns.port}"]
[delivery]
remote_port = {free_port()}
retry = ["1h"]
connect_timeout = "2s"
""")
        server.add_user(ALICE)
        server.add_user(BOB)
        server.start()
        refused = submit(server, ALICE, [BOB, "carol@far.test"], MSG, port="submissions")
        assert refused == {}
        [raw] = inbox(server, BOB)
        head = raw.split(b"\r\n\r\n")[0]
        assert b"with ESMTPSA" in head
        assert b"(using TLS1.3 with cipher" in head
        assert b"(authenticated as alice@example.test)" in head
        # carol@far.test waits on the outbound queue: the queue says so (read back by the CLI),
        # and the sender got no notice.
        queue = wait_for(lambda: (lambda q: q if "cannot connect" in q else None)(server.cli("queue", "list").stdout),
                         timeout=30)
        assert queue.count("carol@far.test\tpending") == 1 and "bob@example.test" not in queue, queue
        assert inbox(server, ALICE) == []
    finally:
        dns.stop()


def test_bdat_chunking(server):
    r = smtp_raw(server)
    body = MSG
    r.send(b"MAIL FROM:<bob@far.test>\r\nRCPT TO:<alice@example.test>\r\n")
    assert r.reply()[0] == 250 and r.reply()[0] == 250
    r.send(b"BDAT %d\r\n" % 20 + body[:20])
    code, lines = r.reply()
    assert code == 250 and "20 octets" in lines[0]
    rest = body[20:]
    r.send(b"BDAT %d LAST\r\n" % len(rest) + rest)
    code, lines = r.reply()
    assert code == 250, lines
    assert r.cmd("QUIT")[0] == 221
    [raw] = inbox(server)
    assert strip_trace(raw) == body


def test_swaks_mx_and_submission(server):
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{server.port('smtp')}", "--from", "x@far.test",
                          "--to", ALICE, "--header", "Subject: via swaks", "--body", "swaks body"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{server.port('submission')}", "-tls",
                          "--auth", "LOGIN", "--auth-user", ALICE, "--auth-password", PASSWORD,
                          "--from", ALICE, "--to", BOB, "--header", "Subject: swaks sub"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert [email.message_from_bytes(m)["Subject"] for m in inbox(server)] == ["via swaks"]
    assert [email.message_from_bytes(m)["Subject"] for m in inbox(server, BOB)] == ["swaks sub"]


def test_replies_that_help(server):
    r = smtp_raw(server, "smtp")
    code, lines = r.cmd("EHLO c")
    assert not any("AUTH" in l for l in lines), "no AUTH on the MX listener"
    assert r.cmd("AUTH PLAIN")[0] == 503
    assert r.cmd("MAIL FROM:<x@far.test>")[0] == 250
    code, lines = r.cmd("RCPT TO:<ghost@example.test>")
    assert (code, lines[0][:9]) == (550, "550 5.1.1")
    code, lines = r.cmd("RCPT TO:<someone@far.test>")
    assert (code, lines[0][:9]) == (554, "554 5.7.1") and "Relay access denied" in lines[0]
    r.close()
    r = smtp_raw(server, "submission")
    code, lines = r.cmd("MAIL FROM:<alice@example.test>")
    assert code == 530 and "5.7.0" in lines[0] and "STARTTLS" in lines[0]
    r.close()
    s = smtplib.SMTP_SSL("127.0.0.1", server.port("submissions"), context=insecure_ctx())
    s.ehlo()
    code, msg = s.mail(ALICE)
    assert code == 530 and b"my outgoing server requires authentication" in msg
    s.rset()
    s.login(ALICE, PASSWORD)
    code, msg = s.mail(BOB)
    assert code == 553 and msg.startswith(b"5.7.1") and b"not yours" in msg
    server.cli("alias", "add", "sales@example.test", ALICE)
    assert s.mail("sales@example.test")[0] == 250, "an alias of the user may be used"
    s.quit()


RELAY_TRICKS = [
    "user%far.test@example.test",
    '"user@far.test"@example.test',
    "@example.test:user@far.test",
    "far.test!user@example.test",
    "user@far.test@example.test",
    "user@[127.0.0.1]",
    "user@far.test",
    "alice@example.test.far.test",
]


@pytest.mark.parametrize("sender", ["", "alice@example.test", "someone@far.test"])
def test_never_an_open_relay(server, sender):
    r = smtp_raw(server, "smtp")
    for trick in RELAY_TRICKS:
        assert r.cmd(f"MAIL FROM:<{sender}>")[0] == 250
        code, lines = r.cmd(f"RCPT TO:<{trick}>")
        assert code >= 500, (trick, lines)
        assert r.cmd("RSET")[0] == 250
    # The transaction that was never refused goes through: the tricks were judged, not the
    # connection.
    assert r.cmd(f"MAIL FROM:<{sender}>")[0] == 250
    assert r.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: the only one\r\n\r\nx\r\n.\r\n")
    assert r.reply()[0] == 250
    r.close()
    # Nothing went to the queue, and no mailbox but alice's got anything.
    assert "the queue is empty" in server.cli("queue", "list").stdout
    assert [email.message_from_bytes(m)["Subject"] for m in inbox(server, ALICE)] == ["the only one"]
    assert inbox(server, BOB) == []


SMUGGLES = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r.\r\n", b"\n.\r", b"\r\n.\r"]


@pytest.mark.parametrize("fake", SMUGGLES, ids=[repr(s) for s in SMUGGLES])
def test_smtp_smuggling_is_refused(server, fake):
    r = smtp_raw(server)
    assert r.cmd("MAIL FROM:<bob@far.test>")[0] == 250
    assert r.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    smuggled = (b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<" + BOB.encode() + b">\r\nDATA\r\n"
                b"Subject: smuggled\r\n\r\nevil\r\n")
    r.send(b"Subject: innocent\r\n\r\nhi" + fake + smuggled + b".\r\n")
    code, lines = r.reply()
    assert code == 550 and "5.6.11" in lines[0], lines
    # Exactly one reply for all of it: the smuggled commands never ran.
    assert r.cmd("NOOP")[0] == 250
    r.cmd("QUIT")
    assert inbox(server, ALICE) == [] and inbox(server, BOB) == []


def test_bare_lf_in_bdat_is_refused(server):
    r = smtp_raw(server)
    r.send(b"MAIL FROM:<bob@far.test>\r\nRCPT TO:<alice@example.test>\r\n")
    r.reply(), r.reply()
    body = b"Subject: x\r\n\r\nline\n.\nMAIL FROM:<a@b.test>\r\n"
    r.send(b"BDAT %d LAST\r\n" % len(body) + body)
    code, lines = r.reply()
    assert code == 550 and "5.6.11" in lines[0]
    assert inbox(server) == []


def test_starttls_injection_is_discarded(server):
    r = smtp_raw(server, "submission")
    # Pipelined after STARTTLS in the same packet: must never run after the handshake.
    r.send(b"STARTTLS\r\nAUTH PLAIN " + base64.b64encode(b"\0" + ALICE.encode() + b"\0" + PASSWORD.encode())
           + b"\r\nMAIL FROM:<alice@example.test>\r\n")
    code, _ = r.reply()
    assert code == 220
    r.starttls()
    code, lines = r.cmd("EHLO client.test")
    assert code == 250 and any(l.endswith("AUTH PLAIN LOGIN") for l in lines), "not authenticated"
    code, lines = r.cmd("MAIL FROM:<alice@example.test>")
    assert code == 530, "the injected AUTH and MAIL never ran"
    r.close()


def test_state_reset_after_starttls(server):
    r = smtp_raw(server, "smtp")
    assert r.cmd("MAIL FROM:<x@far.test>")[0] == 250
    assert r.cmd("STARTTLS")[0] == 220
    r.starttls()
    assert r.cmd(f"RCPT TO:<{ALICE}>")[0] == 503, "the transaction was forgotten"
    assert r.cmd("MAIL FROM:<x@far.test>")[0] == 503, "EHLO is needed again"
    assert r.cmd("EHLO c")[0] == 250
    r.close()


def test_pipelining(server):
    r = smtp_raw(server)
    r.send(b"MAIL FROM:<bob@far.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<ghost@example.test>\r\n"
           b"RCPT TO:<bob@example.test>\r\nDATA\r\n")
    codes = [r.reply()[0] for _ in range(5)]
    assert codes == [250, 250, 550, 250, 354]
    r.send(b"Subject: p\r\n\r\nx\r\n.\r\nMAIL FROM:<bob@far.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert [r.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    r.send(b"Subject: q\r\n\r\ny\r\n.\r\nQUIT\r\n")
    assert [r.reply()[0] for _ in range(2)] == [250, 221]
    assert len(inbox(server)) == 2 and len(inbox(server, BOB)) == 1


def test_content_pipelined_after_refused_data_never_runs(server):
    r = smtp_raw(server)
    r.send(b"MAIL FROM:<bob@far.test>\r\nRCPT TO:<ghost@example.test>\r\nDATA\r\n"
           b"RSET\r\nMAIL FROM:<bob@far.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: x\r\n\r\n.\r\n")
    assert [r.reply()[0] for _ in range(4)] == [250, 550, 554, 421]
    assert r.closed()
    assert inbox(server) == []


def test_talking_before_the_banner_is_dropped(server):
    s = socket.create_connection(("127.0.0.1", server.port("smtp")))
    s.sendall(b"EHLO eager.test\r\n")
    data = b""
    s.settimeout(5)
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
    assert data.startswith(b"554 5.5.0") and b"220" not in data


def test_message_size_limit(make_server):
    s = make_server(extra_config="[smtp]\nmax_message_size = \"10K\"\n")
    s.add_user(ALICE)
    s.start()
    r = smtp_raw(s)
    code, lines = r.cmd("EHLO c")
    assert "250-SIZE 10240" in lines
    assert r.cmd("MAIL FROM:<b@far.test> SIZE=20000")[0] == 552
    assert r.cmd("MAIL FROM:<b@far.test>")[0] == 250
    assert r.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    # Over the limit, with command-shaped lines inside: read to the end, never run.
    big = b"Subject: big\r\n\r\n" + (b"RSET\r\nQUIT\r\n" * 2000) + b".\r\n"
    r.send(big)
    code, lines = r.reply()
    assert code == 552 and "5.3.4" in lines[0]
    assert r.cmd("NOOP")[0] == 250, "the connection continues after the refusal"
    r.close()
    # BDAT announcing more than the limit: refused at once, connection closed.
    r = smtp_raw(s)
    r.send(b"MAIL FROM:<b@far.test>\r\nRCPT TO:<alice@example.test>\r\nBDAT 1000000000 LAST\r\n")
    assert [r.reply()[0] for _ in range(3)] == [250, 250, 552]
    assert r.closed()
    assert inbox(s) == []


def test_mail_loop(server):
    hops = b"".join(b"Received: from hop%d.test by hop%d.test; Sat, 1 Jan 2026 00:00:00 +0000\r\n" % (i, i)
                    for i in range(101))
    with pytest.raises(smtplib.SMTPDataError) as e:
        mx_send(server, "x@far.test", [ALICE], hops + MSG)
    assert e.value.smtp_code == 554 and b"5.4.6" in e.value.smtp_error
    hops = hops.split(b"\r\n", 1)[1]
    assert mx_send(server, "x@far.test", [ALICE], hops + MSG) == {}, "100 hops are fine"


def test_limits_recipients_lines_errors(make_server):
    s = make_server(extra_config="[smtp]\nmax_recipients = 2\nmax_errors = 5\n")
    s.add_user(ALICE)
    s.start()
    r = smtp_raw(s)
    assert r.cmd("MAIL FROM:<b@far.test>")[0] == 250
    assert r.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
    assert r.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
    code, lines = r.cmd(f"RCPT TO:<{ALICE}>")
    assert code == 452 and "4.5.3" in lines[0]
    assert r.cmd("RSET")[0] == 250
    code, lines = r.cmd("NOOP " + "x" * 600)
    assert code == 500 and "5.5.6" in lines[0]
    code, lines = r.cmd("X" * 20000)
    assert code == 500
    for _ in range(2):
        assert r.cmd("BOGUS")[0] == 500
    code, lines = r.cmd("BOGUS")
    assert code == 421 and "Too many errors" in lines[0]
    assert r.closed()


def test_long_text_lines_are_accepted_and_stored_intact(server):
    """Real senders (HTML newsletters, some phones) send lines over 1,000 octets; Postfix and
    Exchange take them, so do we (docs/smtp.md)."""
    body = b"Subject: long\r\n\r\n" + b"a" * 1200 + b"\r\n"
    mx_send(server, "x@far.test", [ALICE], body)
    m = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx())
    m.login(ALICE, PASSWORD)
    m.select("INBOX", readonly=True)
    typ, data = m.fetch("1", "(BODY.PEEK[TEXT])")
    m.logout()
    assert data[0][1] == b"a" * 1200 + b"\r\n"


def test_line_ends_in_commands_and_data(make_server):
    """One rule (docs/smtp.md, "Line ends"): a line ends at LF, with or without the CR before
    it, in commands and in message data; a CR anywhere else is no line end (refused in a
    command); the data ends only at CRLF.CRLF. With reject_bare_lf (the default) a bare CR or
    LF refuses the message; without, they are stored as CRLF."""
    s = make_server(listeners=("smtp", "imaps"), extra_config="[smtp]\nreject_bare_lf = false\npregreet_wait_ms = 0\n")
    s.add_user(ALICE)
    s.start()
    r = smtp_raw(s)
    # Two commands on bare LF line ends, one reply each.
    r.send(b"MAIL FROM:<bob@far.test>\nRCPT TO:<alice@example.test>\n")
    assert r.reply()[0] == 250 and r.reply()[0] == 250
    # A bare CR does not end a command: the whole line is refused.
    code, lines = r.cmd("NOOP\rRSET")
    assert code == 500 and "5.5.2" in lines[0], lines
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: ends\r\n\r\none\ntwo\rthree\r\n\n.\nfour\r\n.\r\n")
    assert r.reply()[0] == 250
    r.cmd("QUIT")
    m = imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx())
    m.login(ALICE, PASSWORD)
    m.select("INBOX", readonly=True)
    typ, data = m.fetch("1", "(BODY.PEEK[TEXT])")
    m.logout()
    assert data[0][1] == b"one\r\ntwo\r\nthree\r\n\r\n.\r\nfour\r\n", data[0][1]


def test_auth_failures_are_delayed_counted_and_locked_out(make_server):
    s = make_server(extra_config="[auth]\nmax_failures = 3\nfailure_delay_ms = 300\n")
    s.add_user(ALICE)
    s.start()
    c = smtplib.SMTP_SSL("127.0.0.1", s.port("submissions"), context=insecure_ctx())
    c.ehlo()

    def plain(user, password):
        c.user, c.password = user, password
        return c.auth("PLAIN", c.auth_plain)

    for i in range(2):
        t = time.time()
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            plain(ALICE, "wrong-password")
        assert e.value.smtp_code == 535 and b"full email address" in e.value.smtp_error
        assert time.time() - t >= 0.25, "failures are delayed"
    with pytest.raises(smtplib.SMTPAuthenticationError):
        plain("ghost@example.test", "wrong-password")
    # Locked out now, even with the right password.
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        plain(ALICE, PASSWORD)
    assert e.value.smtp_code == 454 and b"try again in" in e.value.smtp_error


@pytest.mark.parametrize("creds", [b"\0alice@example.test\0pass\r\nword", b"\0alice@exa\nmple.test\0x",
                                   b"\0alice@example.test\0pw\0extra", b"bob@example.test\0alice@example.test\0pw"])
def test_malformed_credentials_rejected(server, creds):
    r = smtp_raw(server, "submissions")
    code, lines = r.cmd("AUTH PLAIN " + base64.b64encode(creds).decode())
    assert code == 501, lines
    code, lines = r.cmd("AUTH PLAIN !!notbase64")
    assert code == 501
    r.close()


def test_connections_per_ip(make_server):
    s = make_server(extra_config="[smtp]\nmax_connections_per_ip = 2\npregreet_wait_ms = 0\n")
    s.start()
    # The start-up probe's connection may still be counted for a moment.
    for _ in range(50):
        a, b = Raw(s.port("smtp")), Raw(s.port("smtp"))
        if a.reply()[0] == 220 and b.reply()[0] == 220:
            break
        a.close()
        b.close()
        time.sleep(0.1)
    else:
        raise AssertionError("two connections from one address were never both taken")
    c = Raw(s.port("smtp"))
    code, lines = c.reply()
    assert code == 421 and "from your IP address" in lines[0]
    c.close()
    # A connection that ends frees its place: a new one is taken once the server saw it go.
    a.close()

    def taken():
        d = Raw(s.port("smtp"))
        code, _ = d.reply()
        d.close()
        return code == 220
    wait_for(taken, timeout=30, step=0.1)
    b.close()


def test_vrfy_expn_help_noop_rset(server):
    r = smtp_raw(server)
    assert r.cmd("VRFY alice")[0] == 252
    assert r.cmd("EXPN team")[0] == 502
    assert r.cmd("HELP")[0] == 214
    assert r.cmd("NOOP")[0] == 250
    assert r.cmd("RSET")[0] == 250
    assert r.cmd("QUIT")[0] == 221


def test_postmaster_without_domain(server):
    server.add_user("postmaster@example.test")
    r = smtp_raw(server)
    assert r.cmd("MAIL FROM:<>")[0] == 250
    assert r.cmd("RCPT TO:<Postmaster>")[0] == 250
    r.close()


def test_smtputf8(server):
    server.cli("alias", "add", "info@example.test", ALICE)
    r = smtp_raw(server)
    code, _ = r.cmd("MAIL FROM:<jörg@far.test>")
    assert code == 553
    assert r.cmd("MAIL FROM:<jörg@far.test> SMTPUTF8 BODY=8BITMIME")[0] == 250
    assert r.cmd("RCPT TO:<info@example.test>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send("Subject: grüße\r\n\r\nÜmlauts\r\n.\r\n".encode())
    assert r.reply()[0] == 250
    [raw] = inbox(server)
    assert "with UTF8SMTP id".encode() in raw
    assert "Ümlauts".encode() in raw


def test_graceful_shutdown_keeps_accepted_mail(server):
    r = smtp_raw(server)
    assert r.cmd("MAIL FROM:<x@far.test>")[0] == 250
    assert r.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: in flight\r\n\r\n")
    server.proc.send_signal(15)
    # The rest of the message comes once the server is shutting down.
    wait_for(lambda: "shutting down" in server.log_text(), timeout=30)
    r.send(b"body\r\n.\r\n")
    code, _ = r.reply()
    assert code == 250, "the message in flight is finished"
    code, lines = r.cmd("NOOP")
    assert code == 421, "then the session is told the server is going away"
    assert server.proc.wait(30) == 0
    server.start()
    assert [email.message_from_bytes(m)["Subject"] for m in inbox(server)] == ["in flight"]


def test_relay_networks_only_as_configured(make_server):
    s = make_server(extra_config='[smtp]\nrelay_networks = ["127.0.0.0/8"]\n')
    s.add_user(ALICE)
    s.start()
    r = smtp_raw(s)
    assert r.cmd("MAIL FROM:<printer@office.test>")[0] == 250
    assert r.cmd("RCPT TO:<someone@far.test>")[0] == 250, "a trusted network may relay"
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: scan\r\n\r\nscanned\r\n.\r\n")
    code, lines = r.reply()
    assert code == 250 and "queued" in lines[0]
    assert "someone@far.test\tpending" in s.cli("queue", "list").stdout
    other = make_server(extra_config='[smtp]\nrelay_networks = ["10.0.0.0/8"]\n')
    other.start()
    r = smtp_raw(other)
    assert r.cmd("MAIL FROM:<printer@office.test>")[0] == 250
    assert r.cmd("RCPT TO:<someone@far.test>")[0] == 554, "other networks may not"
