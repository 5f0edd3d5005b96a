"""Sharing over IMAP (RFC 4314 ACL, RFC 2342 NAMESPACE) with real imaplib clients, owner and
member: a grant makes a folder appear under Shared/owner/, each reader has their own \\Seen,
other flags are everyone's, every command is limited by the rights given, and a reader who
loses the right to read is told (BYE) at once, in IDLE or at their next command. The ACL
commands are sent as Thunderbird and Roundcube send them."""

import imaplib
import re
import socket
import ssl
import time

from conftest import DOMAIN, PASSWORD
from helpers import ALICE, BOB, insecure_ctx

CAROL = "carol@" + DOMAIN
SHARED = f"Shared/{ALICE}"


def login(server, user):
    c = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=30)
    c.login(user, PASSWORD)
    return c


def ok(res):
    typ, data = res
    assert typ == "OK", data
    return data


def cmd(c, *args):
    """A raw command: (status, untagged lines, tagged text)."""
    tag = c._new_tag()
    c.send(tag + b" " + " ".join(args).encode() + b"\r\n")
    lines = []
    while True:
        line = c._get_line()
        if line.startswith(tag + b" "):
            status, _, text = line[len(tag) + 1:].decode().partition(" ")
            return status, lines, text
        lines.append(line.decode(errors="replace"))


def append(c, box, subject, flags=None):
    msg = f"From: x@far.test\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n".encode()
    ok(c.append(box, flags, None, msg))


def flags_of(c, n=1):
    data = ok(c.fetch(str(n), "(FLAGS)"))
    return re.search(rb"FLAGS \(([^)]*)\)", data[0]).group(1).decode().split()


def listed(c, pattern="*"):
    status, lines, text = cmd(c, "LIST", '""', f'"{pattern}"')
    assert status == "OK", text
    out = {}
    for l in lines:
        m = re.match(r'\* LIST \(([^)]*)\) "/" "?(.*?)"?$', l)
        out[m.group(2)] = m.group(1).split()
    return out


def status_unseen(c, box):
    data = ok(c.status(f'"{box}"', "(MESSAGES UNSEEN)"))
    return int(re.search(rb"UNSEEN (\d+)", data[0]).group(1))


def test_a_grant_shows_the_folder_and_each_reader_keeps_their_own_seen(server):
    server.add_user(CAROL)
    alice, bob, carol = login(server, ALICE), login(server, BOB), login(server, CAROL)
    assert "ACL" in alice.capabilities and "RIGHTS=TEXK" in alice.capabilities
    ok(alice.create("Projects"))
    append(alice, "Projects", "one")
    append(alice, "Projects", "two")
    # Nothing shared yet: bob cannot know the folder exists.
    assert not any(n.startswith("Shared") for n in listed(bob))
    status, _, text = cmd(bob, "SELECT", f'"{SHARED}/Projects"')
    assert status == "NO" and "NONEXISTENT" in text

    status, _, text = cmd(alice, "SETACL", "Projects", BOB, "lrs")
    assert status == "OK", text
    ok(alice.setacl("Projects", CAROL, "lrs"))
    status, lines, _ = cmd(bob, "NAMESPACE")
    assert lines == ['* NAMESPACE (("" "/")) (("Shared/" "/")) NIL'], lines
    names = listed(bob)
    assert f"{SHARED}/Projects" in names, names
    assert "\\Noselect" in names["Shared"] and "\\Noselect" in names[SHARED], names
    assert f"{SHARED}/INBOX" not in names, "only what was shared is listed"
    assert set(listed(bob, "Shared/%")) == {SHARED}
    status, lines, _ = cmd(bob, "MYRIGHTS", f'"{SHARED}/Projects"')
    assert lines == [f'* MYRIGHTS "{SHARED}/Projects" "lrs"'], lines

    ok(bob.select(f'"{SHARED}/Projects"'))
    ok(bob.fetch("1", "(BODY[])"))
    assert "\\Seen" in flags_of(bob, 1)
    # bob's reading is his own: alice and carol still see it unread.
    ok(alice.select("Projects"))
    assert "\\Seen" not in flags_of(alice, 1)
    assert status_unseen(carol, f"{SHARED}/Projects") == 2
    assert status_unseen(bob, f"{SHARED}/Projects") == 1
    ok(alice.store("2", "+FLAGS", "(\\Seen)"))
    assert status_unseen(bob, f"{SHARED}/Projects") == 1, "alice's \\Seen is hers"
    ok(carol.select(f'"{SHARED}/Projects"'))
    ok(carol.store("2", "+FLAGS", "(\\Seen)"))
    assert ok(carol.search(None, "UNSEEN"))[0] == b"1"
    assert ok(bob.search(None, "UNSEEN"))[0] == b"2"
    ok(bob.store("1", "-FLAGS", "(\\Seen)"))
    assert ok(bob.search(None, "SEEN"))[0] == b""

    # Without w, other flags are left as they are; with it they are everyone's.
    ok(bob.store("1", "+FLAGS", "(\\Flagged)"))
    ok(alice.noop())
    assert "\\Flagged" not in flags_of(alice, 1)
    ok(alice.setacl("Projects", BOB, "lrswite"))
    ok(bob.store("1", "+FLAGS", "(\\Flagged)"))
    ok(alice.noop())
    assert "\\Flagged" in flags_of(alice, 1)
    assert "\\Flagged" in flags_of(carol, 1)
    for c in (alice, bob, carol):
        c.logout()


def test_each_command_is_limited_by_the_rights_given(server):
    alice, bob = login(server, ALICE), login(server, BOB)
    ok(alice.create("Team"))
    append(alice, "Team", "first")
    ok(alice.setacl("Team", BOB, "lr"))
    box = f'"{SHARED}/Team"'
    # Read-only without a right to change anything.
    status, _, text = cmd(bob, "SELECT", box)
    assert status == "OK" and text.startswith("[READ-ONLY]"), text
    bob.state = "SELECTED"
    ok(bob.fetch("1", "(BODY[])"))
    ok(bob.close())
    status, _, text = cmd(bob, "APPEND", box, "{5+}\r\nhello")
    assert status == "NO" and "NOPERM" in text, text
    status, _, text = cmd(bob, "CREATE", f'"{SHARED}/Team/sub"')
    assert status == "NO" and "NOPERM" in text, text
    status, _, text = cmd(bob, "DELETE", box)
    assert status == "NO" and "NOPERM" in text, text
    status, _, text = cmd(bob, "GETACL", box)
    assert status == "NO" and "NOPERM" in text, text

    ok(alice.setacl("Team", BOB, "lrswipkxte"))
    append(bob, f"{SHARED}/Team", "from bob")
    ok(alice.select("Team"))
    assert ok(alice.search(None, "ALL"))[0] == b"1 2"
    # A folder bob makes inside is alice's, and shared as its parent is.
    ok(bob.create(f'"{SHARED}/Team/Notes"'))
    assert "Team/Notes" in listed(alice)
    assert f"{SHARED}/Team/Notes" in listed(bob)
    # Copy out to his own folders, move within, expunge.
    ok(bob.select(box))
    ok(bob.copy("1", "INBOX"))
    status, _, text = cmd(bob, "MOVE", "2", f'"{SHARED}/Team/Notes"')
    assert status == "OK", text
    ok(alice.noop())
    assert ok(alice.search(None, "ALL"))[0] == b"1"
    ok(bob.store("1", "+FLAGS", "(\\Deleted)"))
    ok(bob.expunge())
    ok(alice.noop())
    assert ok(alice.search(None, "ALL"))[0] == b""
    ok(bob.select("INBOX"))
    assert ok(bob.search(None, "ALL"))[0] == b"1"
    ok(bob.delete(f'"{SHARED}/Team/Notes"'))
    assert "Team/Notes" not in listed(alice)
    # His own names cannot take the shared prefix.
    status, _, text = cmd(bob, "CREATE", "Shared/mine")
    assert status == "NO", text
    alice.logout()
    bob.logout()


def test_acl_commands_as_mail_programs_send_them(server):
    """Thunderbird asks MYRIGHTS for each folder and GETACL for its Sharing tab; Roundcube's
    ACL plugin sends MYRIGHTS, GETACL, LISTRIGHTS, SETACL and DELETEACL."""
    alice, bob = login(server, ALICE), login(server, BOB)
    status, lines, _ = cmd(alice, "MYRIGHTS", '"INBOX"')
    assert lines == ['* MYRIGHTS "INBOX" "lrswipkxteacd"'], lines
    status, lines, _ = cmd(alice, "GETACL", '"INBOX"')
    assert lines == [f'* ACL "INBOX" "{ALICE}" lrswipkxteacd'], lines
    status, lines, _ = cmd(alice, "LISTRIGHTS", '"INBOX"', f'"{BOB}"')
    assert status == "OK"
    assert lines == ['* LISTRIGHTS "INBOX" "%s" "" l r s w i p k x t e a' % BOB], lines
    status, lines, _ = cmd(alice, "LISTRIGHTS", '"INBOX"', f'"{ALICE}"')
    assert lines == [f'* LISTRIGHTS "INBOX" "{ALICE}" lrswipkxtea'], lines

    assert cmd(alice, "SETACL", '"INBOX"', f'"{BOB}"', "lr")[0] == "OK"
    assert cmd(alice, "SETACL", '"INBOX"', f'"{BOB}"', "+sw")[0] == "OK"
    assert cmd(alice, "SETACL", '"INBOX"', f'"{BOB}"', "-w")[0] == "OK"
    # RFC 2086 letters: c is k, d is x t e.
    assert cmd(alice, "SETACL", '"INBOX"', f'"${DOMAIN}"', "lrcd")[0] == "OK"
    status, lines, _ = cmd(alice, "GETACL", "INBOX")
    assert lines == [f'* ACL "INBOX" "{ALICE}" lrswipkxteacd "${DOMAIN}" "lrkxtecd" "{BOB}" "lrs"'], lines
    status, lines, _ = cmd(bob, "MYRIGHTS", f'"{SHARED}/INBOX"')
    assert lines == [f'* MYRIGHTS "{SHARED}/INBOX" "lrskxtecd"'], lines
    assert cmd(alice, "DELETEACL", '"INBOX"', f'"${DOMAIN}"')[0] == "OK"
    status, lines, _ = cmd(alice, "GETACL", "INBOX")
    assert lines == [f'* ACL "INBOX" "{ALICE}" lrswipkxteacd "{BOB}" "lrs"'], lines
    # Mistakes get the reply RFC 4314 asks for, with a reason.
    status, _, text = cmd(alice, "SETACL", "INBOX", BOB, "lrz")
    assert status == "BAD" and "z" in text, text
    status, _, text = cmd(alice, "SETACL", "INBOX", "nobody@" + DOMAIN, "lr")
    assert status == "NO" and "no account" in text, text
    status, _, text = cmd(alice, "SETACL", "INBOX", "$nowhere.test", "lr")
    assert status == "NO" and "no domain" in text, text
    status, _, text = cmd(alice, "SETACL", "INBOX", ALICE, "lr")
    assert status == "NO" and "owner" in text, text
    status, _, text = cmd(alice, "GETACL", "Nope")
    assert status == "NO" and "NONEXISTENT" in text, text
    # Giving and taking back through the same client call imaplib has.
    ok(alice.deleteacl("INBOX", BOB))
    status, _, text = cmd(bob, "MYRIGHTS", f'"{SHARED}/INBOX"')
    assert status == "NO" and "NONEXISTENT" in text, text
    alice.logout()
    bob.logout()


def test_groups_domains_and_anyone(server):
    server.add_user(CAROL)
    server.cli("alias", "add", "team@" + DOMAIN, BOB)
    alice, bob, carol = login(server, ALICE), login(server, BOB), login(server, CAROL)
    ok(alice.create("Family"))
    ok(alice.setacl("Family", "$team@" + DOMAIN, "lr"))
    assert f"{SHARED}/Family" in listed(bob)
    assert f"{SHARED}/Family" not in listed(carol)
    ok(alice.setacl("Family", "anyone", "l"))
    assert f"{SHARED}/Family" in listed(carol)
    status, lines, _ = cmd(carol, "MYRIGHTS", f'"{SHARED}/Family"')
    assert lines == [f'* MYRIGHTS "{SHARED}/Family" "l"'], lines
    status, _, text = cmd(carol, "SELECT", f'"{SHARED}/Family"')
    assert status == "NO" and "NOPERM" in text, text
    for c in (alice, bob, carol):
        c.logout()


def test_losing_the_right_to_read_ends_the_session_in_idle_and_between_commands(server):
    alice, bob = login(server, ALICE), login(server, BOB)
    ok(alice.create("Private"))
    append(alice, "Private", "secret")
    ok(alice.setacl("Private", BOB, "lrs"))
    ok(bob.select(f'"{SHARED}/Private"'))
    # In IDLE: told at once.
    tag = bob._new_tag()
    bob.send(tag + b" IDLE\r\n")
    assert bob._get_line().startswith(b"+")
    ok(alice.deleteacl("Private", BOB))
    bob.sock.settimeout(10)
    line = bob._get_line()
    assert line.startswith(b"* BYE [NOPERM]") and b"withdrawn" in line, line

    # Between commands: the next command's answer is followed by BYE.
    bob = login(server, BOB)
    ok(alice.setacl("Private", BOB, "lrs"))
    ok(bob.select(f'"{SHARED}/Private"'))
    ok(alice.setacl("Private", BOB, "l"))
    status, lines, text = cmd(bob, "NOOP")
    tail = bob._get_line()
    assert tail.startswith(b"* BYE [NOPERM]"), (status, lines, text, tail)
    # Losing only some rights keeps the session: the rest are enforced.
    bob = login(server, BOB)
    ok(alice.setacl("Private", BOB, "lrsw"))
    ok(bob.select(f'"{SHARED}/Private"'))
    ok(alice.setacl("Private", BOB, "lr"))
    ok(bob.noop())
    status, _, text = cmd(bob, "STORE", "1", "+FLAGS", "(\\Flagged)")
    assert status == "NO" and "NOPERM" in text, text
    alice.logout()


def test_condstore_and_qresync_in_a_shared_folder(server):
    alice, bob = login(server, ALICE), login(server, BOB)
    ok(alice.create("Sync"))
    for i in range(3):
        append(alice, "Sync", f"m{i}")
    ok(alice.setacl("Sync", BOB, "lrsw"))
    status, _, _ = cmd(bob, "ENABLE", "QRESYNC")
    status, lines, text = cmd(bob, "SELECT", f'"{SHARED}/Sync"')
    hms = int(re.search(r"HIGHESTMODSEQ (\d+)", " ".join(lines)).group(1))
    uv = int(re.search(r"UIDVALIDITY (\d+)", " ".join(lines)).group(1))
    ok(alice.select("Sync"))
    ok(alice.store("2", "+FLAGS", "(\\Flagged)"))
    ok(alice.store("3", "+FLAGS", "(\\Deleted)"))
    ok(alice.expunge())
    bob.logout()
    bob = login(server, BOB)
    cmd(bob, "ENABLE", "QRESYNC")
    status, lines, text = cmd(bob, "SELECT", f'"{SHARED}/Sync"', f"(QRESYNC ({uv} {hms}))")
    assert status == "OK", text
    joined = "\n".join(lines)
    assert "VANISHED (EARLIER) 3" in joined, joined
    assert re.search(r"\* 2 FETCH \(UID 2 FLAGS \(\\Flagged\) MODSEQ", joined), joined
    # bob's own \Seen moves the modseq he resyncs from.
    status, lines, _ = cmd(bob, "UID", "STORE", "1", "+FLAGS", "(\\Seen)")
    assert "MODSEQ" in " ".join(lines), lines
    ok(alice.noop())
    assert "\\Seen" not in flags_of(alice, 1)
    alice.logout()
    bob.logout()


def test_a_shared_info_mailbox_read_by_two_members_with_send_as(make_server):
    """info@ made with `postern mailbox add`: both members see it under Shared/info@, each with
    their own \\Seen and everyone's other flags; a member who may send as info@ does, and the
    copy lands in info@'s Sent, which the other member sees at once."""
    import smtplib
    s = make_server(listeners=("smtp", "submissions", "imaps"),
                    extra_config="[smtp]\npregreet_wait_ms = 0\n")
    s.add_user(ALICE)
    s.add_user(BOB)
    s.start()
    info = "info@" + DOMAIN
    s.cli("mailbox", "add", info, "--members", ALICE, BOB)
    s.cli("send-as", "add", info, ALICE)
    smtp = smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=30)
    smtp.sendmail("customer@far.test", [info], b"From: customer@far.test\r\nSubject: question\r\n\r\nhi\r\n")
    smtp.quit()
    alice, bob = login(s, ALICE), login(s, BOB)
    box = f"Shared/{info}"
    for c in (alice, bob):
        names = listed(c)
        assert {f"{box}/INBOX", f"{box}/Sent", f"{box}/Drafts"} <= set(names), names
    ok(alice.select(f'"{box}/INBOX"'))
    ok(bob.select(f'"{box}/INBOX"'))
    ok(alice.fetch("1", "(BODY[])"))
    assert "\\Seen" in flags_of(alice)
    assert "\\Seen" not in flags_of(bob), "alice's reading is hers"
    ok(alice.store("1", "+FLAGS", "(\\Answered)"))
    ok(bob.noop())
    assert "\\Answered" in flags_of(bob), "other flags are everyone's"
    # alice answers as info@; the copy is in info@'s Sent for bob too.
    sub = smtplib.SMTP_SSL("127.0.0.1", s.port("submissions"), context=insecure_ctx(), timeout=30)
    sub.login(ALICE, PASSWORD)
    sub.sendmail(info, ["customer@far.test"],
                 f"From: {info}\r\nTo: customer@far.test\r\nSubject: Re: question\r\n\r\nanswer\r\n".encode())
    sub.quit()
    ok(bob.select(f'"{box}/Sent"'))
    data = ok(bob.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])"))
    assert b"Re: question" in data[0][1] and info.encode() in data[0][1], data
    # bob may not send as info@.
    sub = smtplib.SMTP_SSL("127.0.0.1", s.port("submissions"), context=insecure_ctx(), timeout=30)
    sub.login(BOB, PASSWORD)
    try:
        sub.sendmail(BOB, ["customer@far.test"],
                     f"From: {info}\r\nTo: customer@far.test\r\nSubject: x\r\n\r\nx\r\n".encode())
        raise AssertionError("bob sent as info@ without a grant")
    except smtplib.SMTPDataError as e:
        assert e.smtp_code == 553, e
    sub.quit()
    alice.logout()
    bob.logout()
