"""Postern on PostgreSQL, as several nodes on one database: mail taken by one node is read on
another, and the outbound queue is worked by all of them with each message delivered once,
also when a node is killed in the middle of a delivery. PostgreSQL runs on 127.0.0.1:5432
(user postgres, trust); each test makes its own database and drops it."""

import os
import poplib
import smtplib
import re
import secrets
import shutil
import subprocess
import time

import pytest

from conftest import DOMAIN, PASSWORD, free_port
import imaplib

from helpers import ALICE, BOB, Raw, insecure_ctx, mx_send, pop3, submit, wait_for
from peers import Dns, Sink
from test_reports import report_mail

PG = os.environ.get("POSTERN_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")


def psql(sql):
    r = subprocess.run(["psql", PG, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def database():
    if not shutil.which("psql"):
        pytest.fail("psql is missing: PostgreSQL's client is needed for these tests")
    name = "postern_test_" + secrets.token_hex(8)
    psql(f"CREATE DATABASE {name}")
    yield PG.rsplit("/", 1)[0] + "/" + name
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def imap(server, user=ALICE):
    c = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=30)
    c.login(user, PASSWORD)
    return c


def node(make_server, url, extra="", **kw):
    s = make_server(**kw, extra_config=f"""
[storage]
backend = "postgres"
url = "{url}"
{extra}""")
    return s


def test_two_nodes_one_database(make_server, database):
    a = node(make_server, database)
    b = node(make_server, database)
    assert "added" in a.cli("domain", "add", DOMAIN).stdout
    a.add_user(ALICE)
    a.add_user(BOB)
    # Node B sees what node A wrote: the same accounts.
    assert ALICE in b.cli("user", "list").stdout
    a.start()
    b.start()
    mx_send(a, "someone@far.test", [ALICE], b"Subject: via node A\r\n\r\nHello.\r\n")
    c = imap(b)
    typ, data = c.select("INBOX")
    assert data[0] == b"1"
    typ, msg = c.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")
    assert b"via node A" in msg[0][1]
    # Searches by header, by date sent and by body, on PostgreSQL.
    assert c.search(None, "SUBJECT", '"via node"')[1] == [b"1"]
    assert c.search(None, "SUBJECT", "elsewhere")[1] == [b""]
    assert c.search(None, "SENTBEFORE", "1-Jan-2099")[1] == [b""], "no Date header: never sent"
    assert c.search(None, "BODY", "Hello")[1] == [b"1"]
    c.store("1", "+FLAGS", "(\\Flagged)")
    c.logout()
    p = pop3(a)
    assert p.stat()[0] == 1
    # One POP3 session per maildrop, across nodes.
    with pytest.raises(poplib.error_proto, match="IN-USE"):
        pop3(b)
    p.quit()

    def b_gets_it():
        try:
            pop3(b).quit()
            return True
        except poplib.error_proto:
            return False
    wait_for(b_gets_it, timeout=10)
    c = imap(a)
    c.select("INBOX")
    typ, flags = c.fetch("1", "(FLAGS)")
    assert b"\\Flagged" in flags[0], "a flag set on node B is seen on node A"
    c.logout()
    # IDLE on node B hears of a delivery made on node A.
    r = Raw(b.port("imaps"), tls=True)
    r.line()
    r.send(f'a LOGIN {ALICE} "{PASSWORD}"\r\nb SELECT INBOX\r\n'.encode())
    while not r.line().startswith(b"b OK"):
        pass
    r.send(b"c IDLE\r\n")
    assert r.line().startswith(b"+")
    mx_send(a, "someone@far.test", [ALICE], b"Subject: second\r\n\r\nHello again.\r\n")
    # Told without polling by the client (how fast is a benchmark's question, not this test's).
    r.sock.settimeout(30)
    assert r.line() == b"* 2 EXISTS"
    # Node A's session took message 1 as recent; the new one is this session's, whichever node
    # it arrived on.
    assert r.line() == b"* 1 RECENT"
    r.send(b"DONE\r\n")
    assert r.line().startswith(b"c OK")


def test_queue_worked_by_two_nodes_once_each_even_when_one_dies(make_server, database):
    dns = Dns(free_port())
    rport = free_port()
    dns.start(mx=[("far.test", "mx.far.test", 10)], a=[("mx.far.test", "127.0.0.5")])
    first_try = {}

    def stall_then_accept(cmd, line, sink):
        # The first connection of the run hangs at MAIL, so the node delivering it can be killed
        # before anything was accepted; later ones get through.
        if cmd == "MAIL" and not first_try:
            first_try["at"] = time.time()
            time.sleep(30)
            return "421 4.3.2 too late"
        return None

    sink = Sink("127.0.0.5", rport, script=stall_then_accept)
    extra = f"""[dns]
nameservers = ["127.0.0.1:{dns.port}"]
[delivery]
remote_port = {rport}
retry = ["1s"]
connect_timeout = "2s"
command_timeout = "60s"
claim_timeout = "4s"
"""
    a = node(make_server, database, extra)
    b = node(make_server, database, extra)
    a.cli("domain", "add", DOMAIN)
    a.add_user(ALICE)
    try:
        a.start()
        b.start()
        n = 12
        for i in range(n):
            submit(a, ALICE, [f"r{i}@far.test"], (f"From: {ALICE}\r\nTo: r{i}@far.test\r\nSubject: m{i}\r\n"
                                                 f"Message-ID: <m{i}@example.test>\r\n\r\nbody {i}\r\n").encode())
        # Whichever node took the stalled delivery dies now, before the remote accepted it.
        wait_for(lambda: first_try, timeout=30)
        time.sleep(0.5)
        a.kill()
        wait_for(lambda: len(sink.messages) >= n, timeout=90)
        # Once the surviving node's queue is empty nothing more can come: then count.
        wait_for(lambda: "the queue is empty" in b.cli("queue", "list").stdout, timeout=90)
        ids = sorted(m[2].split(b"Message-ID: <")[1].split(b">")[0].decode() for m in sink.messages)
        assert ids == sorted(f"m{i}@example.test" for i in range(n)), ids
    finally:
        sink.stop()
        dns.stop()


def test_embedded_store_moves_to_postgres(make_server, database):
    s = make_server()
    s.add_user(ALICE)
    s.add_user(BOB)
    s.cli("alias", "add", "info@" + DOMAIN, ALICE)
    script = s.root / "filter.sieve"
    script.write_text('require ["fileinto", "mailbox"]; '
                      'if header :contains "subject" "work" { fileinto :create "Work"; }\n')
    s.cli("sieve", "put", ALICE, "main", str(script), "--activate")
    s.start()
    for i in range(5):
        mx_send(s, "someone@far.test", [ALICE], f"Subject: note {i}\r\n\r\nHello {i}.\r\n".encode())
    mx_send(s, "someone@far.test", [ALICE], b"Subject: work item\r\n\r\nFiled.\r\n")
    # One message for two mailboxes: its bytes are kept once, in the copy too.
    mx_send(s, "someone@far.test", [ALICE, BOB], b"Subject: for both\r\n\r\nShared.\r\n")
    mx_send(s, "spammer@far.test", [ALICE], b"From: <spammer@far.test>\r\nSubject: junk\r\n\r\nBuy.\r\n")
    # A DMARC report about our domain, kept apart from the mail that brought it.
    mx_send(s, "noreply@reporter.test", ["postmaster@" + DOMAIN], report_mail("moved-1"))
    wait_for(lambda: "r" if "moved-1" in s.cli("reports", "list", "--json").stdout else None, timeout=10)
    c = imap(s)
    c.select("INBOX")
    c.store("2", "+FLAGS", "(\\Flagged $Label1)")
    # Alice teaches the junk filter about a sender by moving its mail to Junk.
    assert c.copy("7", "Junk")[0] == "OK"
    c.store("7", "+FLAGS", "(\\Deleted)")
    c.expunge()
    c.logout()
    s.stop()

    r = s.cli("storage", "export", database)
    assert "copied; the counts agree" in r.stdout, r.stdout + r.stderr
    assert re.search(r"messages\s+10\s+10", r.stdout), r.stdout
    assert re.search(r"received reports\s+1\s+1", r.stdout), r.stdout
    assert psql_in(database, "SELECT count(*) FROM messages").strip() == "10"
    assert psql_in(database, "SELECT count(*) FROM blobs").strip() == "9", "the shared message is stored once"
    assert psql_in(database, "SELECT sender, junk FROM senders").split() == ["spammer@far.test|t"]
    assert psql_in(database, "SELECT kind, domain FROM received_reports").split() == ["dmarc|example.test"]
    again = s.cli("storage", "export", database, check=False)
    assert again.returncode == 1 and "not empty" in again.stderr

    # The same server, now on PostgreSQL: the same mail, flags, folders, alias and filter.
    s.extra_config += f'\n[storage]\nbackend = "postgres"\nurl = "{database}"\n'
    s.write_config()
    s.start()
    c = imap(s)
    typ, data = c.select("INBOX")
    assert data[0] == b"7"
    typ, flags = c.fetch("2", "(FLAGS)")
    assert b"\\Flagged" in flags[0] and b"$Label1" in flags[0]
    typ, data = c.select("Work")
    assert data[0] == b"1", "the filtered message is in its folder"
    c.logout()
    assert "main" in s.cli("sieve", "list", ALICE).stdout
    assert "example.test: 1 DMARC and 0 TLS reports" in s.cli("reports", "list").stdout
    mx_send(s, "someone@far.test", ["info@" + DOMAIN], b"Subject: work again\r\n\r\nx\r\n")
    c = imap(s)
    wait_for(lambda: c.select("Work")[1][0] == b"2", timeout=10)
    c.logout()


def test_limits_lockouts_and_greylisting_are_shared_by_the_nodes(make_server, database):
    extra = """[auth]
max_failures = 3
lockout = "60s"
failure_delay_ms = 0
[smtp]
max_messages_per_hour = 4
[inbound]
check = false
greylist = true
greylist_delay = "2s"
"""
    a = node(make_server, database, extra, inbound_checks=True)
    b = node(make_server, database, extra, inbound_checks=True)
    a.cli("domain", "add", DOMAIN)
    a.add_user(ALICE)
    a.add_user(BOB)
    a.start()
    b.start()

    # Hourly sending limit: two messages through each node, then both refuse.
    for server in (a, b, a, b):
        assert submit(server, ALICE, [BOB], b"Subject: counted\r\n\r\nx\r\n") == {}
    for server in (a, b):
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            submit(server, ALICE, [BOB], b"Subject: one too many\r\n\r\nx\r\n")
        assert e.value.smtp_code == 451 and b"max_messages_per_hour" in e.value.smtp_error

    # Failed logins on node A lock the account out on node B too, even with the right password.
    for i in range(3):
        with pytest.raises(imaplib.IMAP4.error):
            imaplib.IMAP4_SSL("127.0.0.1", a.port("imaps"), ssl_context=insecure_ctx(),
                              timeout=30).login(BOB, f"wrong-{i}")
    with pytest.raises(poplib.error_proto, match="Too many failed logins"):
        pop3(b, user=BOB)
    # The address that failed is locked out on B as well, for any account.
    with pytest.raises(imaplib.IMAP4.error, match="Too many failed logins"):
        imap(b, user=ALICE)

    # Greylisting: a first try on node A is delayed; the retry on node B gets through.
    source = "127.0.0.9"

    def mx_try(server, subject):
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30,
                          source_address=(source, 0)) as c:
            c.ehlo("mx.far.test")
            assert c.mail("someone@far.test")[0] == 250
            code, text = c.rcpt(ALICE)
            if code != 250:
                return code, text
            return c.data(f"Subject: {subject}\r\n\r\nx\r\n".encode())

    code, text = mx_try(a, "first")
    assert code == 451 and b"Greylisted" in text, text
    code, text = mx_try(b, "too soon")
    assert code == 451 and b"Greylisted" in text, text
    time.sleep(2.2)
    assert mx_try(b, "retried")[0] == 250
    assert mx_try(a, "known now")[0] == 250


def test_web_sessions_are_shared_by_the_nodes(make_server, database):
    from test_web import BOSS, Browser
    extra = f'[http]\nadmins = ["{BOSS}"]\n'
    a = node(make_server, database, extra, listeners=("imaps", "https"))
    b = node(make_server, database, extra, listeners=("imaps", "https"))
    a.cli("domain", "add", DOMAIN)
    a.add_user(BOSS)
    a.start()
    b.start()
    browser = Browser(a)
    st, body = browser.login(BOSS)
    assert st == 200 and body["admin"] is True
    # The database keeps a digest of the token, never the cookie's token itself.
    token = browser.cookie.split("=", 1)[1]
    ids = psql_in(database, "SELECT id FROM web_sessions").split()
    assert len(ids) == 1 and token not in ids
    # The load balancer sends the next requests to node B: the same session, the same CSRF rule.
    browser.server = b
    st, body = browser.api("GET", "/session")
    assert st == 200 and body["address"] == BOSS
    st, r = browser.api("POST", "/domains", {"name": "second.test"}, csrf=False)
    assert st == 403 and "X-CSRF-Token" in r["error"]
    st, r = browser.api("POST", "/domains", {"name": "second.test"})
    assert st in (200, 201), r
    assert "second.test" in a.cli("domain", "list").stdout
    # Logging out on B ends the session on A too.
    assert browser.api("DELETE", "/session")[0] == 200
    browser.server = a
    assert browser.api("GET", "/session")[0] == 401


def psql_in(url, sql):
    r = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_doctor_reports_the_database(make_server, database, loopback_dns):
    # Its DNS checks get their answers (nothing published) at once.
    dns = f'[dns]\nnameservers = ["127.0.0.1:{loopback_dns.port}"]\n[doctor]\nntp_server = ""\nprobe_domain = ""'
    a = node(make_server, database, dns)
    a.cli("domain", "add", DOMAIN)
    a.start()
    r = a.cli("doctor", check=False)
    storage = next(b for b in r.stdout.split("\n\n") if "Storage" in b.splitlines()[0])
    assert re.search(r"PostgreSQL \d+.*schema version \d+; nodes running on this database: 1", storage), storage
    assert re.search(r"\d+ of PostgreSQL's \d+ connections in use", storage), storage
    # Backups: the database's own tools, and whether it archives its WAL.
    backups = next(b for b in r.stdout.split("\n\n") if b.startswith("Backups"))
    assert "does not archive its write-ahead log (archive_mode = off" in backups, backups
    assert "pg_dump" in backups and "pg_basebackup" in backups, backups
    r = a.cli("backup", a.root / "backups", check=False)
    assert r.returncode != 0 and "pg_dump" in r.stderr and "WAL archiving is off" in r.stderr, r.stderr
    # An account backup works on every backend.
    a.add_user(ALICE)
    r = a.cli("backup", a.root / "backups", "--user", ALICE)
    assert f"of {ALICE}" in r.stdout and "verified" in r.stdout, r.stdout
    # A database that is not there: said plainly, with what to check.
    gone = database.rsplit("/", 1)[0] + "/postern_missing_" + secrets.token_hex(4)
    b = node(make_server, gone, dns)
    r = b.cli("doctor", check=False)
    assert r.returncode != 0
    assert "cannot use the PostgreSQL database of storage.url" in r.stdout, r.stdout
    assert "pg_hba.conf" in r.stdout


def test_sharing_on_two_nodes(make_server, database):
    """A grant made on node A shows on node B; taking it away on node A ends node B's session
    on the folder at once, in IDLE."""
    a = node(make_server, database, listeners=("imaps",))
    b = node(make_server, database, listeners=("imaps",))
    a.cli("domain", "add", DOMAIN)
    a.add_user(ALICE)
    a.add_user(BOB)
    a.start()
    b.start()
    alice = imap(a, ALICE)
    assert alice.create("Shared-box")[0] == "OK"
    msg = b"From: x@far.test\r\nSubject: s\r\n\r\nbody\r\n"
    assert alice.append("Shared-box", None, None, msg)[0] == "OK"
    assert alice.setacl("Shared-box", BOB, "lrs")[0] == "OK"
    bob = imap(b, BOB)
    box = f'"Shared/{ALICE}/Shared-box"'
    assert bob.select(box)[0] == "OK"
    assert bob.fetch("1", "(BODY[])")[0] == "OK"
    assert alice.select("Shared-box")[0] == "OK"
    assert b"\\Seen" not in alice.fetch("1", "(FLAGS)")[1][0], "bob's \\Seen is his own"
    tag = bob._new_tag()
    bob.send(tag + b" IDLE\r\n")
    assert bob._get_line().startswith(b"+")
    assert alice.deleteacl("Shared-box", BOB)[0] == "OK"
    bob.sock.settimeout(30)
    line = bob._get_line()
    assert line.startswith(b"* BYE [NOPERM]"), line
    alice.logout()
