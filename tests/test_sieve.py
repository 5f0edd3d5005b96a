"""Sieve filters (RFC 5228 and extensions) at delivery, managed over ManageSieve (RFC 5804) with
real clients (sievelib, sieve-connect) and with `postern sieve`."""

import imaplib
import smtplib
import socket
import subprocess

import pytest

from conftest import DOMAIN, PASSWORD
from helpers import ALICE, BOB, inbox, insecure_ctx, mx_send, submit, wait_for

from sievelib.managesieve import Client

LISTENERS = ("smtp", "submissions", "imaps", "pop3s", "managesieve")


@pytest.fixture
def sieve_server(make_server):
    s = make_server(listeners=LISTENERS)
    s.add_user(ALICE)
    s.add_user(BOB)
    s.start()
    return s


def put(server, user, script, name="main"):
    return server.cli("sieve", "put", user, name, "-", "--activate", input=script)


def folder(server, name, user=ALICE):
    """(flags, raw) of every message in a folder, over IMAP."""
    with imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx()) as c:
        c.login(user, PASSWORD)
        typ, _ = c.select(f'"{name}"', readonly=True)
        if typ != "OK":
            return None
        typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[])")
        out = []
        for item in data:
            if isinstance(item, tuple):
                out.append((item[0].decode(), item[1]))
        return out


def msg(subject, frm="carol@far.test", extra=""):
    return (f"From: {frm}\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@far.test>\r\n{extra}\r\nHello.\r\n").encode()


def raw_session(server):
    sock = socket.create_connection(("127.0.0.1", server.port("managesieve")), timeout=10)
    f = sock.makefile("rb")
    greeting = b""
    while not greeting.endswith(b"OK\r\n"):
        greeting += f.readline()
    return sock, f, greeting


def test_managesieve_with_sievelib(sieve_server):
    s = sieve_server
    # Before TLS: no password may be sent, and the greeting says to start TLS.
    sock, f, greeting = raw_session(s)
    assert b'"IMPLEMENTATION" "Postern"' in greeting and b'"STARTTLS"' in greeting
    assert b'"SASL" ""' in greeting
    sock.sendall(b'AUTHENTICATE "PLAIN" "AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ="\r\n')
    assert f.readline().startswith(b"NO (ENCRYPT-NEEDED)")
    sock.sendall(b"LISTSCRIPTS\r\n")
    assert f.readline().startswith(b"NO")
    sock.close()

    c = Client("127.0.0.1", s.port("managesieve"))
    assert c.connect(ALICE, PASSWORD, starttls=True, authmech="PLAIN")
    assert c.get_implementation() == "Postern"
    ext = c.get_sieve_capabilities()
    for x in ("fileinto", "vacation", "imap4flags", "reject", "envelope", "body", "variables"):
        assert x in ext, ext
    assert "enotify" not in ext
    assert c.listscripts() == (None, [])
    script = 'require "fileinto";\r\nif header :contains "subject" "invoice" { fileinto "Invoices"; }\r\n'
    assert c.havespace("main", len(script))
    assert not c.havespace("main", 10 << 20), "larger than sieve.max_script_size"
    assert c.putscript("main", script)
    assert not c.putscript("broken", "if true { keep"), "a script that does not compile is refused"
    assert not c.checkscript('require "enotify"; keep;'), "extensions not offered are refused"
    assert c.checkscript("keep;")
    assert c.setactive("main")
    assert c.putscript("spare", "keep;")
    active, others = c.listscripts()
    assert active == "main" and others == ["spare"]
    assert c.getscript("main").replace("\n", "\r\n").rstrip("\r\n") == script.rstrip("\r\n")
    assert not c.deletescript("main"), "the active script cannot be deleted"
    assert c.renamescript("spare", "old")
    assert c.deletescript("old")
    assert not c.setactive("nonexistent")
    c.logout()
    # The script now files Alice's invoices.
    assert mx_send(s, "carol@far.test", [ALICE], msg("Your invoice 42")) == {}
    assert len(folder(s, "Invoices") or []) == 0, "no such folder: kept in INBOX"
    assert len(inbox(s, ALICE)) == 1
    # Wrong password: NO, and the session goes on.
    c = Client("127.0.0.1", s.port("managesieve"))
    assert not c.connect(ALICE, "wrong-password", starttls=True, authmech="PLAIN")


def test_managesieve_with_sieve_connect(sieve_server, tmp_path):
    s = sieve_server
    local = tmp_path / "vacation.siv"
    local.write_text('require "vacation";\nvacation :days 1 "Away until Monday.";\n')

    def sc(*args):
        return subprocess.run(
            ["sieve-connect", "--server", "127.0.0.1", "--port", str(s.port("managesieve")),
             "--nosrv", "--user", BOB, "--passwordfd", "0", "--notlsverify", *args],
            input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)

    r = sc("--localsieve", str(local), "--remotesieve", "away", "--upload")
    assert r.returncode == 0, r.stderr
    r = sc("--remotesieve", "away", "--activate")
    assert r.returncode == 0, r.stderr
    r = sc("--list")
    assert r.returncode == 0 and "away" in r.stdout and "ACTIVE" in r.stdout, r.stdout + r.stderr
    assert "away  ACTIVE" in s.cli("sieve", "list", BOB).stdout
    r = sc("--remotesieve", "away", "--download", "--localsieve", str(tmp_path / "back.siv"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back.siv").read_text() == local.read_text()


def test_fileinto_flags_discard_and_subaddress(sieve_server):
    s = sieve_server
    put(s, ALICE, r'''require ["fileinto", "imap4flags", "mailbox", "envelope", "subaddress",
                                "body", "relational", "comparator-i;ascii-numeric"];
if header :contains "subject" "report" {
    fileinto :create :flags ["\\Flagged", "$Report"] "Reports/Weekly";
} elsif envelope :detail "to" "news" {
    fileinto :create "News";
} elsif body :text :contains "casino" {
    discard;
} elsif header :value "ge" :comparator "i;ascii-numeric" "X-Priority" "5" {
    addflag "\\Seen";
    keep;
}
''')
    assert mx_send(s, "carol@far.test", [ALICE], msg("Weekly report")) == {}
    got = folder(s, "Reports/Weekly")
    assert len(got) == 1 and "\\Flagged" in got[0][0] and "$Report" in got[0][0], got
    assert mx_send(s, "carol@far.test", ["alice+news@" + DOMAIN], msg("Newsletter")) == {}
    assert len(folder(s, "News")) == 1
    spam = msg("Win").replace(b"Hello.", b"Best casino in town")
    assert mx_send(s, "carol@far.test", [ALICE], spam) == {}, "discarded, yet accepted"
    assert mx_send(s, "carol@far.test", [ALICE], msg("Low priority", extra="X-Priority: 5\r\n")) == {}
    inbox_msgs = folder(s, "INBOX")
    assert len(inbox_msgs) == 1 and "\\Seen" in inbox_msgs[0][0], inbox_msgs
    assert b"Low priority" in inbox_msgs[0][1]
    # The trace tells what the filter did.
    t = s.cli("trace", "--to", ALICE).stdout
    assert 'Sieve script "main" files it into Reports/Weekly' in t, t
    assert 'Sieve script "main" discards it' in t, t
    out = s.cli("route", ALICE).stdout
    assert 'Sieve script "main" then decides' in out, out


def test_reject_vacation_and_redirect(sieve_server):
    s = sieve_server
    put(s, ALICE, '''require ["reject", "vacation", "copy"];
if header :contains "subject" "sell" { reject "No sales calls, please."; stop; }
if header :contains "subject" "for bob" { redirect "bob@example.test"; stop; }
if header :contains "subject" "copy bob" { redirect :copy "bob@example.test"; }
vacation :days 2 :subject "Out of office" "I am away until Monday.";
''')
    # Alice alone: refused during the SMTP dialogue, with her reason.
    with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=30) as c:
        c.ehlo("client.test")
        c.mail("carol@far.test")
        c.rcpt(ALICE)
        code, text = c.data(msg("We sell things"))
    assert code == 550 and b"5.7.1" in text and b"No sales calls, please." in text, text
    assert inbox(s, ALICE) == []
    # Alice and Bob: Bob gets it; Bob (the sender) is told Alice's filter rejected it.
    submit(s, BOB, [ALICE, BOB], msg("we sell more", frm=BOB), user=BOB)
    bob = wait_for(lambda: len(inbox(s, BOB)) >= 2 and inbox(s, BOB))
    notice = [m for m in bob if b"was rejected" in m]
    assert len(notice) == 1 and b"No sales calls, please." in notice[0], bob
    assert b"Auto-Submitted: auto-replied" in notice[0]
    assert inbox(s, ALICE) == []
    # Vacation: one reply per sender within the days, from Alice, to the envelope sender.
    before = len(inbox(s, BOB))
    submit(s, BOB, [ALICE], msg("Lunch?", frm=BOB), user=BOB)
    wait_for(lambda: len(inbox(s, BOB)) == before + 1)
    reply = inbox(s, BOB)[-1]
    assert b"Subject: Out of office" in reply and b"I am away until Monday." in reply, reply
    assert b"Auto-Submitted: auto-replied" in reply and b"In-Reply-To: <Lunch?@far.test>" in reply
    assert b"Return-Path: <>" in reply, "vacation replies have the null sender"
    submit(s, BOB, [ALICE], msg("Lunch again?", frm=BOB), user=BOB)
    assert len(inbox(s, ALICE)) == 2
    assert len(inbox(s, BOB)) == before + 1, "no second vacation reply to the same sender"
    # Mailing-list and automatic mail gets none.
    mx_send(s, "list@far.test", [ALICE], msg("digest", frm="list@far.test", extra="List-Id: <l.far.test>\r\n"))
    mx_send(s, "robot@far.test", [ALICE], msg("auto", frm="robot@far.test",
                                             extra="Auto-Submitted: auto-generated\r\n"))
    assert s.cli("queue", "list").stdout.count("@far.test") == 0, s.cli("queue", "list").stdout
    # Redirect: Bob gets it instead of Alice; with :copy both do.
    n_alice, n_bob = len(inbox(s, ALICE)), len(inbox(s, BOB))
    mx_send(s, "dave@far.test", [ALICE], msg("for bob"))
    assert len(inbox(s, ALICE)) == n_alice and len(inbox(s, BOB)) == n_bob + 1
    mx_send(s, "dave@far.test", [ALICE], msg("copy bob"))
    assert len(inbox(s, ALICE)) == n_alice + 1 and len(inbox(s, BOB)) == n_bob + 2


def test_sieve_cli_and_failures(sieve_server):
    s = sieve_server
    r = s.cli("sieve", "put", ALICE, "bad", "-", input="if true { keep", check=False)
    assert r.returncode != 0 and "the script has an error" in r.stderr, r.stderr
    r = s.cli("sieve", "put", ALICE, "n", "-", input='require "enotify"; keep;', check=False)
    assert r.returncode != 0 and "not offered" in r.stderr, r.stderr
    r = s.cli("sieve", "put", ALICE, "main", "-", input="keep;")
    assert "not active" in r.stdout
    assert s.cli("sieve", "get", ALICE, "main").stdout.strip() == "keep;"
    s.cli("sieve", "activate", ALICE, "main")
    r = s.cli("sieve", "delete", ALICE, "main", check=False)
    assert r.returncode != 0 and "is active" in r.stderr
    s.cli("sieve", "activate", ALICE, "--none")
    s.cli("sieve", "delete", ALICE, "main")
    assert "no Sieve scripts" in s.cli("sieve", "list", ALICE).stdout
    # A script that fails while running keeps the message in the INBOX.
    put(s, ALICE, 'require "include"; include :personal "missing";')
    assert mx_send(s, "carol@far.test", [ALICE], msg("still here")) == {}
    assert len(inbox(s, ALICE)) == 1
    assert "failed" in s.cli("trace", "--to", ALICE).stdout
