"""NOTIFY (RFC 5465) against the real server over TLS: a watching session is told, without
sending a command and outside IDLE, of new and expunged messages and flag changes in the
selected folder (EXISTS, FETCH with the items asked, EXPUNGE at once with SELECTED, held for a
command with SELECTED-DELAYED), of other folders by STATUS, of folders made, renamed, deleted
and (un)subscribed by LIST, of METADATA entries by METADATA, of a folder shared with it, and
across two nodes on PostgreSQL. The command's checks answer BAD or NO [BADEVENT] as the RFC
says; NOTIFY NONE silences even IDLE."""

import imaplib
import re
import socket
import ssl
import time

from conftest import DOMAIN, PASSWORD
from helpers import ALICE, BOB, insecure_ctx, mx_send
from test_postgres import database, node  # noqa: F401 (a fixture)

imaplib.Commands.setdefault("SETMETADATA", ("AUTH", "SELECTED"))


class Watcher:
    """A raw IMAP session that reads whatever the server sends, asked or not."""

    def __init__(self, server, user=ALICE):
        raw = socket.create_connection(("127.0.0.1", server.port("imaps")), timeout=15)
        self.sock = insecure_ctx().wrap_socket(raw)
        self.buf = b""
        self.n = 0
        self.line(5)
        self.ok(f"LOGIN {user} {PASSWORD}")

    def line(self, timeout):
        end = time.time() + timeout
        while b"\r\n" not in self.buf:
            left = end - time.time()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLError):
                return None
            if not data:
                raise EOFError("connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        m = re.search(rb"\{(\d+)\}$", line)
        if m:
            n = int(m.group(1))
            while len(self.buf) < n + 2 or b"\r\n" not in self.buf[n:]:
                self.buf += self.sock.recv(65536)
            lit, self.buf = self.buf[:n], self.buf[n:]
            rest, self.buf = self.buf.split(b"\r\n", 1)
            line += b"\r\n" + lit + rest
        return line.decode(errors="replace")

    def cmd(self, text):
        """(status, untagged lines, tagged text)."""
        self.n += 1
        tag = f"W{self.n}"
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        lines = []
        while True:
            l = self.line(15)
            assert l is not None, (text, lines)
            if l.startswith(tag + " "):
                status, _, rest = l[len(tag) + 1:].partition(" ")
                return status, lines, rest
            lines.append(l)

    def ok(self, text):
        status, lines, rest = self.cmd(text)
        assert status == "OK", (text, status, lines, rest)
        return lines

    def expect(self, pattern, timeout=10):
        """The unsolicited lines up to the first matching `pattern`, which is returned last."""
        got = []
        end = time.time() + timeout
        while time.time() < end:
            l = self.line(end - time.time())
            if l is None:
                break
            got.append(l)
            if re.search(pattern, l):
                return got
        raise AssertionError(f"{pattern!r} not told; got {got}")

    def quiet(self, secs=1.0):
        """What arrives within `secs` unasked (expected: nothing)."""
        got = []
        end = time.time() + secs
        while (l := self.line(max(0.0, end - time.time()))) is not None:
            got.append(l)
        return got

    def close(self):
        self.sock.close()


def other(server, user=ALICE):
    c = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=30)
    c.login(user, PASSWORD)
    return c


def append(server, folder, subject, user=ALICE):
    c = other(server, user)
    c.append(folder, None, None, f"Subject: {subject}\r\n\r\nbody\r\n".encode())
    c.logout()


def test_the_command_is_checked_as_rfc_5465_says(server):
    w = Watcher.__new__(Watcher)
    raw = socket.create_connection(("127.0.0.1", server.port("imaps")), timeout=15)
    w.sock, w.buf, w.n = insecure_ctx().wrap_socket(raw), b"", 0
    assert "NOTIFY" in w.line(5)
    assert w.cmd("NOTIFY NONE")[0] == "BAD", "only after login"
    w.ok(f"LOGIN {ALICE} {PASSWORD}")
    w.ok("SELECT INBOX")
    # MessageNew, MessageExpunge and FlagChange alone are taken, as Dovecot takes them.
    cases = {
        "NOTIFY NONE": "OK",
        "NOTIFY SET (SELECTED (MessageNew MessageExpunge))": "OK",
        "notify set (selected-delayed (messagenew messageexpunge flagchange))": "OK",
        "NOTIFY SET (PERSONAL NONE)": "OK",
        "NOTIFY SET (SUBTREE INBOX (MailboxName))": "OK",
        'NOTIFY SET (MAILBOXES (INBOX "No such") (MessageNew MessageExpunge))': "OK",
        "NOTIFY SET (SELECTED (MessageNew (UID FLAGS) MessageExpunge)) (SUBSCRIBED (MessageNew MessageExpunge))": "OK",
        "NOTIFY SET STATUS (INBOXES (MessageNew MessageExpunge FlagChange))": "OK",
        "NOTIFY SET (PERSONAL (MailboxMetadataChange ServerMetadataChange))": "OK",
        "NOTIFY SET (SELECTED (MessageNew))": "OK",
        "NOTIFY SET (SELECTED (MessageExpunge))": "OK",
        "NOTIFY SET (PERSONAL (FlagChange))": "OK",
        "NOTIFY SET (SELECTED (MessageNew MessageExpunge)) (SELECTED-DELAYED (MessageNew MessageExpunge))": "BAD",
        "NOTIFY SET (SELECTED (MessageNew MessageExpunge MailboxName))": "BAD",
        "NOTIFY SET (PERSONAL (MessageNew (UID) MessageExpunge))": "BAD",
        "NOTIFY SET (BOGUS (MessageNew MessageExpunge))": "BAD",
        "NOTIFY SET": "BAD",
        "NOTIFY BOGUS": "BAD",
    }
    for c, want in cases.items():
        status, lines, text = w.cmd(c)
        assert status == want, (c, status, text)
    for c in ["NOTIFY SET (SELECTED (MessageNew MessageExpunge AnnotationChange))",
              "NOTIFY SET (PERSONAL (SomeVendorEvent))"]:
        status, _, text = w.cmd(c)
        assert status == "NO" and text.startswith(
            "[BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange "
            "MailboxMetadataChange ServerMetadataChange)]"), (c, status, text)
    w.close()


def test_selected_folder_is_told_at_once_without_a_command(server):
    w = Watcher(server)
    w.ok("CREATE Work")
    w.ok("SELECT INBOX")
    w.ok("NOTIFY SET (SELECTED (MessageNew (UID FLAGS BODY[HEADER.FIELDS (SUBJECT)]) MessageExpunge)) "
         "(PERSONAL (MessageNew MessageExpunge))")
    mx_send(server, "someone@far.test", [ALICE], b"Subject: pushed\r\n\r\nHello.\r\n")
    got = w.expect(r"^\* 1 FETCH ")
    assert "* 1 EXISTS" in got, got
    fetch = got[-1]
    assert re.search(r"UID \d+ FLAGS \(\\Recent\)", fetch), fetch
    assert "Subject: pushed" in fetch, fetch
    # Telling is not reading: the message stays unseen.
    c = other(server)
    c.select("INBOX")
    assert b"\\Seen" not in c.fetch("1", "(FLAGS)")[1][0]
    # Another folder: a STATUS, unasked.
    append(server, "Work", "filed")
    status = w.expect(r"^\* STATUS ")[-1]
    assert re.match(r'\* STATUS "Work" \(MESSAGES 1 UIDNEXT 2 UIDVALIDITY \d+ UNSEEN 1\)', status), status
    # A flag change is not asked for: not told now, but at the next command (no change lost).
    c.store("1", "+FLAGS", "(\\Flagged)")
    assert w.quiet(1.0) == []
    lines = w.ok("NOOP")
    assert any(re.search(r"FLAGS \(.*\\Flagged", l) for l in lines), lines
    # SELECTED: an expunge elsewhere is told at once.
    c.store("1", "+FLAGS", "(\\Deleted)")
    c.expunge()
    assert "* 1 EXPUNGE" in w.expect(r"EXPUNGE")
    c.logout()
    w.close()


def test_selected_delayed_holds_expunges_for_a_command_and_tells_flags(server):
    for i in range(2):
        append(server, "INBOX", f"m{i}")
    w = Watcher(server)
    w.ok("SELECT INBOX")
    w.ok("NOTIFY SET (SELECTED-DELAYED (MessageNew MessageExpunge FlagChange))")
    c = other(server)
    c.select("INBOX")
    c.store("2", "+FLAGS", "(\\Answered)")
    assert "\\Answered" in w.expect(r"^\* 2 FETCH")[-1]
    c.store("1", "+FLAGS", "(\\Deleted)")
    c.expunge()
    append(server, "INBOX", "late")
    # The arrival is told; the expunged message keeps its number until a command may say so.
    got = w.expect(r"^\* 3 EXISTS")
    assert not any("EXPUNGE" in l for l in got), got
    assert not any("EXPUNGE" in l for l in w.quiet(0.5))
    assert "* 1 EXPUNGE" in w.ok("NOOP")
    # Held again, and told as soon as IDLE begins.
    c.store("1", "+FLAGS", "(\\Deleted)")
    c.expunge()
    assert not any("EXPUNGE" in l for l in w.quiet(0.5))
    w.sock.sendall(b"I1 IDLE\r\n")
    got = w.expect(r"EXPUNGE")
    assert got[0].startswith("+") and got[-1] == "* 1 EXPUNGE", got
    w.sock.sendall(b"DONE\r\n")
    w.expect(r"^I1 OK")
    c.logout()
    w.close()


def test_folder_names_and_subscriptions_are_told_by_list(server):
    w = Watcher(server)
    w.ok("NOTIFY SET (PERSONAL (MailboxName SubscriptionChange))")
    c = other(server)
    c.create("Foo")
    assert w.expect(r"^\* LIST")[-1] == '* LIST () "/" "Foo"'
    c.rename("Foo", "Bar")
    assert w.expect(r"^\* LIST")[-1] == '* LIST () "/" "Bar" ("OLDNAME" ("Foo"))'
    c.subscribe("Bar")
    assert w.expect(r"^\* LIST")[-1] == '* LIST (\\Subscribed) "/" "Bar"'
    c.unsubscribe("Bar")
    assert w.expect(r"^\* LIST")[-1] == '* LIST () "/" "Bar"'
    c.delete("Bar")
    assert w.expect(r"^\* LIST")[-1] == '* LIST (\\NonExistent) "/" "Bar"'
    # Outside the filter: nothing.
    w.ok("NOTIFY SET (SUBTREE Projects (MailboxName))")
    c.create("Elsewhere")
    assert w.quiet(1.0) == []
    c.create("Projects/New")
    # The parent is made with it: both are told.
    got = w.expect(r'"Projects/New"')
    assert got == ['* LIST () "/" "Projects"', '* LIST () "/" "Projects/New"'], got
    # NONE: nothing at all.
    w.ok("NOTIFY NONE")
    c.create("Baz")
    assert w.quiet(1.0) == []
    c.logout()
    w.close()


def test_metadata_changes_are_told(server):
    w = Watcher(server)
    w.ok("NOTIFY SET (PERSONAL (MailboxMetadataChange ServerMetadataChange))")
    c = other(server)
    typ, _ = c._simple_command("SETMETADATA", "INBOX", '(/private/comment "mine")')
    assert typ == "OK"
    assert w.expect(r"^\* METADATA")[-1] == '* METADATA "INBOX" "/private/comment"'
    typ, _ = c._simple_command("SETMETADATA", '""', '(/shared/vendor/x "y")')
    assert typ == "OK"
    assert w.expect(r"^\* METADATA")[-1] == '* METADATA "" "/shared/vendor/x"'
    # Another user's private entries are theirs alone; bob's server entries are his.
    alice_share = other(server)
    alice_share.setacl("INBOX", BOB, "lr")
    b = other(server, BOB)
    typ, _ = b._simple_command("SETMETADATA", f'"Shared/{ALICE}/INBOX"', '(/private/note "bob")')
    assert typ == "OK", typ
    typ, _ = b._simple_command("SETMETADATA", '""', '(/private/x "bob")')
    assert typ == "OK", typ
    assert w.quiet(1.0) == []
    for s in (c, alice_share, b):
        s.logout()
    w.close()


def test_a_shared_folder_and_notify_set_status(server):
    w = Watcher(server, BOB)
    owner = other(server)
    owner.create("Team")
    owner.setacl("Team", BOB, "lrs")
    owner.append("Team", None, None, b"Subject: one\r\n\r\nx\r\n")
    lines = w.ok(f'NOTIFY SET STATUS (MAILBOXES "Shared/{ALICE}/Team" (MessageNew MessageExpunge))')
    assert any(re.match(rf'\* STATUS "Shared/{ALICE}/Team" \(MESSAGES 1 UIDNEXT 2 ', l) for l in lines), lines
    owner.append("Team", None, None, b"Subject: two\r\n\r\nx\r\n")
    status = w.expect(r"^\* STATUS")[-1]
    assert re.match(rf'\* STATUS "Shared/{ALICE}/Team" \(MESSAGES 2 UIDNEXT 3 UIDVALIDITY \d+ UNSEEN 2\)',
                    status), status
    # STATUS carries the modseq when flag changes are asked for (RFC 5465 5.1), not otherwise.
    o = Watcher(server)
    lines = o.ok("NOTIFY SET STATUS (MAILBOXES Team (FlagChange))")
    assert any(re.match(r'\* STATUS "Team" \(.*UIDVALIDITY \d+.* HIGHESTMODSEQ \d+\)', l) for l in lines), lines
    lines = o.ok("NOTIFY SET STATUS (MAILBOXES Team (MessageExpunge))")
    assert any(re.match(r'\* STATUS "Team" \(MESSAGES 2 ', l) for l in lines), lines
    assert not any("HIGHESTMODSEQ" in l for l in lines), lines
    o.close()
    # Mail for alice's INBOX is not bob's to hear of.
    mx_send(server, "someone@far.test", [ALICE], b"Subject: private\r\n\r\nx\r\n")
    assert w.quiet(1.0) == []
    owner.logout()
    w.close()


def test_none_silences_idle_until_a_command(server):
    w = Watcher(server)
    w.ok("SELECT INBOX")
    w.ok("NOTIFY NONE")
    w.sock.sendall(b"I1 IDLE\r\n")
    assert w.line(5).startswith("+")
    mx_send(server, "someone@far.test", [ALICE], b"Subject: quiet\r\n\r\nx\r\n")
    assert w.quiet(1.5) == []
    w.sock.sendall(b"DONE\r\n")
    got = w.expect(r"^I1 OK")
    assert "* 1 EXISTS" in got, got
    w.close()


def test_notify_across_two_nodes(make_server, database):
    a = node(make_server, database)
    b = node(make_server, database)
    assert "added" in a.cli("domain", "add", DOMAIN).stdout
    a.add_user(ALICE)
    a.start()
    b.start()
    w = Watcher(b)
    w.ok("SELECT INBOX")
    w.ok("NOTIFY SET (SELECTED (MessageNew (UID) MessageExpunge)) (PERSONAL (MessageNew MessageExpunge MailboxName))")
    mx_send(a, "someone@far.test", [ALICE], b"Subject: via A\r\n\r\nx\r\n")
    assert "* 1 EXISTS" in w.expect(r"^\* 1 FETCH \(UID \d+\)")
    c = other(a)
    c.create('"Made on A"')
    assert w.expect(r"^\* LIST")[-1] == '* LIST () "/" "Made on A"'
    c.append('"Made on A"', None, None, b"Subject: x\r\n\r\nx\r\n")
    assert w.expect(r"^\* STATUS")[-1].startswith('* STATUS "Made on A" (MESSAGES 1 UIDNEXT 2')
    c.logout()
    w.close()
