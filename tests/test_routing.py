"""Address routing over real SMTP: catch-all and its precedence, domain aliases, sub-address
separators, and `postern route` explaining each case."""

import smtplib

import pytest

from conftest import DOMAIN, PASSWORD
from helpers import ALICE, BOB, inbox, insecure_ctx, mx_send

MSG = b"Subject: routing\r\n\r\nhello\r\n"


def refused(server, rcpt):
    """The RCPT reply code and text for one recipient over the MX listener."""
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        s.mail("x@far.test")
        return s.rcpt(rcpt)


def route(server, address):
    return server.cli("route", address).stdout


def test_catch_all_and_its_precedence(server):
    r = server.cli("alias", "add", "@" + DOMAIN, BOB)
    assert "catch-all" in r.stdout
    # Unknown addresses go to the catch-all; real ones, with or without a detail, do not.
    assert mx_send(server, "x@far.test", ["nobody@" + DOMAIN, ALICE, "alice+news@" + DOMAIN], MSG) == {}
    assert len(inbox(server, BOB)) == 1
    assert len(inbox(server, ALICE)) == 1, "alice got one copy for her address and its detail"
    out = route(server, "nobody@" + DOMAIN)
    assert "catch-all of example.test takes it" in out and "=> bob@example.test: INBOX" in out
    out = route(server, "alice+news@" + DOMAIN)
    assert "+news is a detail" in out and "=> alice@example.test: INBOX" in out and "catch-all" not in out
    # A catch-all must lead somewhere real, and only local domains have one.
    r = server.cli("alias", "add", "@" + DOMAIN, "ghost@" + DOMAIN, check=False)
    assert r.returncode != 0 and "neither a user nor an alias" in r.stderr
    r = server.cli("alias", "add", "@far.test", BOB, check=False)
    assert r.returncode != 0 and "postern domain add far.test" in r.stderr
    # Without it, unknown addresses are refused at RCPT again.
    server.cli("alias", "del", "@" + DOMAIN)
    code, text = refused(server, "nobody@" + DOMAIN)
    assert code == 550 and b"5.1.1" in text
    assert "refused when the sender names it (550 5.1.1)" in route(server, "nobody@" + DOMAIN)


def test_domain_alias(server):
    server.cli("domain", "add", "example.org")
    r = server.cli("alias", "add", "@example.org", "@" + DOMAIN)
    assert "same address of example.test" in r.stdout
    assert mx_send(server, "x@far.test", ["alice@example.org", "alice+x@example.org", "BOB@Example.Org"], MSG) == {}
    assert len(inbox(server, ALICE)) == 1 and len(inbox(server, BOB)) == 1
    code, text = refused(server, "nobody@example.org")
    assert code == 550 and b"5.1.1" in text
    out = route(server, "alice+x@example.org")
    assert "example.org is an alias of the domain example.test" in out
    assert out.strip().endswith("=> alice@example.test: INBOX")
    # Alice may send as her address in the alias domain, not as Bob's.
    with smtplib.SMTP_SSL("127.0.0.1", server.port("submissions"), context=insecure_ctx(), timeout=30) as s:
        s.login(ALICE, PASSWORD)
        assert s.mail("alice@example.org")[0] == 250
        s.rset()
        code, text = s.mail("bob@example.org")
        assert code == 553 and b"5.7.1" in text
    # One target, another domain.
    r = server.cli("alias", "add", "@example.org", "@example.org", check=False)
    assert r.returncode != 0
    r = server.cli("alias", "add", "@example.org", "@" + DOMAIN, ALICE, check=False)
    assert r.returncode != 0 and "exactly one target" in r.stderr
    assert "@example.org\t-> @example.test" in server.cli("alias", "list").stdout


def test_catch_all_does_not_let_users_send_as_anyone(server):
    server.cli("alias", "add", "@" + DOMAIN, ALICE)
    with smtplib.SMTP_SSL("127.0.0.1", server.port("submissions"), context=insecure_ctx(), timeout=30) as s:
        s.login(ALICE, PASSWORD)
        code, text = s.mail("ceo@" + DOMAIN)
        assert code == 553 and b"5.7.1" in text
        s.rset()
        assert s.mail("alice+shop@" + DOMAIN)[0] == 250


@pytest.mark.parametrize("sep", ["-", ""])
def test_subaddress_separator(make_server, sep):
    s = make_server(extra_config=f'[routing]\nsubaddress_separator = "{sep}"\n')
    s.add_user(ALICE)
    s.start()
    code, _ = refused(s, "alice+news@" + DOMAIN)
    assert code == 550, "+ is not a separator here"
    if sep:
        assert mx_send(s, "x@far.test", ["alice-news@" + DOMAIN], MSG) == {}
        assert len(inbox(s)) == 1
        assert "-news is a detail" in route(s, "alice-news@" + DOMAIN)
    else:
        assert refused(s, "alice-news@" + DOMAIN)[0] == 550


def test_bad_separator_is_a_config_error(make_server):
    s = make_server(extra_config='[routing]\nsubaddress_separator = "ab"\n')
    r = s.cli("config", "check", check=False)
    assert r.returncode != 0 and "subaddress_separator" in (r.stderr + r.stdout)


def test_route_explains_aliases_loops_and_remote(server):
    server.cli("alias", "add", "all@" + DOMAIN, BOB)
    server.cli("alias", "add", "team@" + DOMAIN, ALICE, "all@" + DOMAIN, "carol@far.test")
    server.cli("alias", "add", "all@" + DOMAIN, "team@" + DOMAIN)  # a cycle
    out = route(server, "team@" + DOMAIN)
    assert "team@example.test is an alias for alice@example.test, all@example.test, carol@far.test" in out
    assert "  alice@example.test is a user: delivered to its INBOX" in out
    assert "team@example.test: already expanded (a loop), skipped" in out
    assert "carol@far.test is on another domain" in out
    finals = [l for l in out.splitlines() if l.startswith("=> ")]
    assert finals == ["=> alice@example.test: INBOX", "=> bob@example.test: INBOX",
                      "=> carol@far.test: outbound queue"]
    out = route(server, "someone@far.test")
    assert "far.test is not one of our domains" in out and "=> someone@far.test: outbound queue" in out
    assert "is not a mail address" in route(server, "no-at-sign")
    # Delivery follows the same path: each person once, despite the loop.
    assert mx_send(server, "x@far.test", ["team@" + DOMAIN], MSG) == {}
    assert len(inbox(server, ALICE)) == 1 and len(inbox(server, BOB)) == 1


def submit_as(server, user, rcpts):
    with smtplib.SMTP_SSL("127.0.0.1", server.port("submissions"), context=insecure_ctx(), timeout=30) as s:
        s.login(user, PASSWORD)
        return s.sendmail(user, rcpts, MSG)


def test_groups_and_who_may_send_to_them(server):
    team = "team@" + DOMAIN
    server.add_user("carol@" + DOMAIN)
    carol = "carol@" + DOMAIN
    r = server.cli("group", "add", team, ALICE, BOB)
    assert "only logged-in users of example.test may send to it" in r.stdout, "the default policy"
    assert server.cli("group", "members", team).stdout.split() == [ALICE, BOB]
    assert f"{team}\t(only logged-in users of example.test may send to it)\t-> {ALICE}, {BOB}" in \
        server.cli("group", "list").stdout
    # domain: users who logged in, whoever they are in the group; outsiders, even with a
    # forged envelope sender of the domain, are refused at RCPT.
    assert submit_as(server, carol, [team]) == {}
    assert len(inbox(server, ALICE)) == 1 and len(inbox(server, BOB)) == 1
    for sender in ("x@far.test", ALICE):
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
            s.ehlo("client.test")
            s.mail(sender)
            code, text = s.rcpt(team)
            assert code == 550 and b"5.7.1" in text and b"only logged-in users of example.test" in text
    # members: its members and no one else. Local members prove it by logging in: on the
    # MX anyone could claim their address.
    server.cli("group", "policy", team, "members")
    assert submit_as(server, BOB, [team]) == {}
    assert refused_from(server, BOB, team)[0] == 550
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        submit_as(server, carol, [team])
    assert b"only its members may send to it" in e.value.recipients[team][1]
    server.cli("group", "add-member", team, "dave@far.test")
    assert refused_from(server, "dave@far.test", team)[0] == 250, "an outside member, by envelope"
    server.cli("group", "del-member", team, "dave@far.test")
    # Nested in an alias, the group's policy still holds.
    server.cli("alias", "add", "all@" + DOMAIN, team, carol)
    code, text = refused_from(server, "x@far.test", "all@" + DOMAIN)
    assert code == 550 and b"team@example.test is a group" in text
    # senders: exactly those listed.
    server.cli("group", "policy", team, "senders", "--sender", "boss@far.test")
    assert mx_send(server, "boss@far.test", [team], MSG) == {}
    assert refused_from(server, BOB, team)[0] == 550
    # anyone: a plain list.
    server.cli("group", "policy", team, "anyone")
    assert mx_send(server, "x@far.test", [team], MSG) == {}
    assert len(inbox(server, ALICE)) == 1 + 1 + 1 + 1
    out = route(server, team)
    assert "team@example.test is a group (anyone may send to it)" in out
    # Members come and go; bad policies are explained.
    server.cli("group", "del-member", team, BOB)
    server.cli("group", "add-member", team, carol)
    assert server.cli("group", "members", team).stdout.split() == [ALICE, carol]
    r = server.cli("group", "policy", team, "friends", check=False)
    assert r.returncode != 0 and "use anyone, members, domain" in r.stderr
    r = server.cli("group", "policy", team, "senders", check=False)
    assert r.returncode != 0 and "--sender" in r.stderr
    server.cli("group", "del", team)
    assert team not in server.cli("group", "list").stdout


def refused_from(server, sender, rcpt):
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        s.mail(sender)
        return s.rcpt(rcpt)


def test_quota_messages_warning_at_90_percent_and_recovery(server):
    r = server.cli("user", "quota", ALICE, "100K", "--messages", "10")
    assert "quota of alice@example.test set" in r.stdout
    small = b"Subject: fill\r\n\r\n" + b"x" * 100 + b"\r\n"
    for _ in range(8):
        assert mx_send(server, "x@far.test", [ALICE], small) == {}
    assert not any(b"90% full" in m for m in inbox(server)), "no warning below 90%"
    # The ninth message crosses 90%: the owner is told, once, in the INBOX (which counts).
    assert mx_send(server, "x@far.test", [ALICE], small) == {}
    box = inbox(server)
    notes = [m for m in box if b"Subject: Your mailbox is 90% full" in m]
    assert len(notes) == 1 and b"9 of 10 messages" in notes[0] and b"Auto-Submitted: auto-generated" in notes[0]
    assert len(box) == 10
    # Full: refused at RCPT as a temporary failure, so the sender's server tries again later.
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        s.mail("x@far.test")
        code, text = s.rcpt(ALICE)
        assert code == 452 and b"4.2.2" in text and b"Mailbox full" in text
    # IMAP shows the message quota too.
    import imaplib
    m = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx())
    m.login(ALICE, PASSWORD)
    typ, data = m.getquotaroot("INBOX")
    assert b"MESSAGE 10 10" in data[1][0]
    # Deleting makes room at once.
    m.select("INBOX")
    m.store("1:3", "+FLAGS", r"(\Deleted)")
    m.expunge()
    m.logout()
    assert mx_send(server, "x@far.test", [ALICE], small) == {}
    assert len([m for m in inbox(server) if b"90% full" in m]) == 1
    # Back at 90% with the next one: a new crossing, a new note.
    assert mx_send(server, "x@far.test", [ALICE], small) == {}
    assert len([m for m in inbox(server) if b"90% full" in m]) == 2
    # A byte quota crossing warns the same way.
    server.cli("user", "quota", BOB, "10K")
    assert mx_send(server, "x@far.test", [BOB], b"Subject: big\r\n\r\n" + (b"y" * 94 + b"\r\n") * 100) == {}
    notes = [m for m in inbox(server, BOB) if b"90% full" in m]
    assert len(notes) == 1 and b"KB of 10.0 KB" in notes[0]


def test_subaddress_into_its_folder(make_server):
    import imaplib
    s = make_server(extra_config="[routing]\nsubaddress_folder = true\n")
    s.add_user(ALICE)
    s.start()
    m = imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx())
    m.login(ALICE, PASSWORD)
    m.create("News")
    assert mx_send(s, "x@far.test", ["alice+news@" + DOMAIN, "alice+nofolder@" + DOMAIN], MSG) == {}
    assert mx_send(s, "x@far.test", ["alice+NEWS@" + DOMAIN], MSG) == {}

    def count(box):
        typ, data = m.status(box, "(MESSAGES)")
        return int(data[0].split(b"MESSAGES ")[1].rstrip(b")"))

    # One message to two details of one person is stored once: the first detail's folder.
    assert (count("News"), count("INBOX")) == (2, 0)
    assert mx_send(s, "x@far.test", ["alice+nofolder@" + DOMAIN], MSG) == {}
    assert (count("News"), count("INBOX")) == (2, 1)
    # Strangers cannot file mail into Sent, Drafts or Trash by naming them.
    assert mx_send(s, "x@far.test", ["alice+sent@" + DOMAIN, "alice+trash@" + DOMAIN], MSG) == {}
    assert (count("Sent"), count("Trash"), count("INBOX")) == (0, 0, 2)
    m.logout()
