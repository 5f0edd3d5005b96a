"""METADATA (RFC 5464) and SAVEDATE (RFC 8514) with imaplib against the real server: private
and shared entries on folders and on the server, DEPTH and MAXSIZE, NIL removal, the limits
with their response codes, entries kept through a rename and gone with a delete, rights on a
folder shared with another user; save dates after APPEND, COPY and MOVE, and searches by
them."""

import imaplib
import re
import time

from conftest import DOMAIN, PASSWORD
from helpers import ALICE, BOB, insecure_ctx
from test_postgres import database, node  # noqa: F401 (a fixture)

LIMITS = """[imap]
metadata_max_value = "1K"
metadata_max_entries = 10
metadata_max_total = "4K"
metadata_admin = "mailto:help@example.test"
"""


def login(server, user=ALICE):
    c = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=30)
    c.login(user, PASSWORD)
    return c


def cmd(c, *args):
    """A raw command: (status, untagged lines, tagged text). Bytes arguments go as they are."""
    tag = c._new_tag()
    parts = [a if isinstance(a, bytes) else a.encode() for a in args]
    c.send(tag + b" " + b" ".join(parts) + b"\r\n")
    lines = []
    while True:
        line = c._get_line()
        if line.startswith(tag + b" "):
            status, _, text = line[len(tag) + 1:].decode().partition(" ")
            return status, lines, text
        m = re.search(rb"\{(\d+)\}$", line)
        if m:
            line += b"\r\n" + c.read(int(m.group(1))) + c._get_line()
        lines.append(line.decode(errors="replace"))


def ok(res):
    status, lines, text = res
    assert status == "OK", (status, lines, text)
    return lines


def getmeta(c, mailbox, entries, options=""):
    """The entries a GETMETADATA answers, as {name: value or None}, and its tagged text."""
    args = ["GETMETADATA"] + ([options] if options else []) + [mailbox, entries]
    status, lines, text = cmd(c, *args)
    assert status == "OK", (status, lines, text)
    found = {}
    for l in lines:
        m = re.match(r'\* METADATA ("[^"]*"|\S+) \((.*)\)$', l, re.S)
        assert m, l
        body = m.group(2)
        for name, quoted, lit, nil in re.findall(
                r'(\S+) (?:"((?:[^"\\]|\\.)*)"|\{\d+\}\r\n(.*?)(?= /|$)|(NIL))', body, re.S):
            found[name] = None if nil else (lit if lit else quoted.replace('\\"', '"'))
    return found, text


def test_private_and_shared_entries_on_a_folder_and_the_server(make_server):
    s = make_server(extra_config=LIMITS)
    s.add_user(ALICE)
    s.add_user(BOB)
    s.start()
    c = login(s)
    assert "METADATA" in c.capabilities and "METADATA-SERVER" in c.capabilities
    ok(cmd(c, "SETMETADATA", "INBOX", '(/private/comment "My own comment" /shared/comment "For all")'))
    found, _ = getmeta(c, "INBOX", "(/private/comment /shared/comment)")
    assert found == {"/private/comment": "My own comment", "/shared/comment": "For all"}
    # Names are case-insensitive; an entry without a value answers NIL.
    found, _ = getmeta(c, "INBOX", "/PRIVATE/Comment")
    assert found == {"/private/comment": "My own comment"}
    found, _ = getmeta(c, "INBOX", "/private/nothing")
    assert found == {"/private/nothing": None}
    # A value over several lines goes as a literal, and comes back as one.
    ok(cmd(c, "SETMETADATA", "INBOX", b"(/private/multi {12+}\r\nline1\r\nline2)"))
    status, lines, _ = cmd(c, "GETMETADATA", "INBOX", "/private/multi")
    assert status == "OK" and "line1\r\nline2" in lines[0], lines

    # DEPTH 0, 1, infinity.
    ok(cmd(c, "SETMETADATA", "INBOX",
           '(/private/filters/values/small "SMALLER 5000" /private/filters/values/boss "FROM boss"'
           ' /private/filters/values/boss/deep "x")'))
    found, _ = getmeta(c, "INBOX", "/private/filters/values", "(DEPTH 1)")
    assert found == {"/private/filters/values/small": "SMALLER 5000",
                     "/private/filters/values/boss": "FROM boss"}, found
    found, _ = getmeta(c, "INBOX", "/private/filters/values", "(DEPTH infinity)")
    assert len(found) == 3 and "/private/filters/values/boss/deep" in found
    found, _ = getmeta(c, "INBOX", "/private/filters/values")
    assert found == {"/private/filters/values": None}

    # MAXSIZE leaves out larger values and says how large the largest was.
    found, text = getmeta(c, "INBOX", "(/private/comment /shared/comment)", "(MAXSIZE 10)")
    assert found == {"/shared/comment": "For all"}, found
    assert "[METADATA LONGENTRIES 14]" in text, text

    # NIL removes.
    ok(cmd(c, "SETMETADATA", "INBOX", "(/private/comment NIL)"))
    found, _ = getmeta(c, "INBOX", "/private/comment")
    assert found == {"/private/comment": None}

    # The server: the admin contact from the config, read-only; the user's own entries.
    found, _ = getmeta(c, '""', "/shared/admin")
    assert found == {"/shared/admin": "mailto:help@example.test"}
    status, _, text = cmd(c, "SETMETADATA", '""', '(/shared/admin "mailto:me@example.test")')
    assert status == "NO" and "NOPERM" in text, text
    ok(cmd(c, "SETMETADATA", '""', '(/shared/comment "Server note" /private/vendor/x/y "z")'))
    found, _ = getmeta(c, '""', "(/shared/comment /private/vendor/x/y)")
    assert found == {"/shared/comment": "Server note", "/private/vendor/x/y": "z"}

    # Bad names and options are BAD; the session goes on.
    for bad in ("/other/x", "/privatex", '"/private/a*"', "/shared//x"):
        status, _, text = cmd(c, "GETMETADATA", "INBOX", bad)
        assert status == "BAD", (bad, text)
    status, _, text = cmd(c, "SETMETADATA", '""', '(/private "x")')
    assert status == "BAD", text
    # Every entry of a kind, with DEPTH.
    found, _ = getmeta(c, '""', "/private", "(DEPTH infinity)")
    assert found == {"/private/vendor/x/y": "z"}, found
    found, _ = getmeta(c, '""', "/shared", "(DEPTH 1)")
    assert found == {"/shared/admin": "mailto:help@example.test", "/shared/comment": "Server note"}
    status, _, text = cmd(c, "GETMETADATA", "(DEPTH 2)", "INBOX", "/private/comment")
    assert status == "BAD", text
    status, _, text = cmd(c, "SETMETADATA", "Nowhere", '(/private/comment "x")')
    assert status == "NO" and "NONEXISTENT" in text, text
    ok(cmd(c, "NOOP"))

    # Another user's entries are theirs: bob sees none of alice's.
    b = login(s, BOB)
    found, _ = getmeta(b, "INBOX", "(/shared/comment /private/filters/values/small)")
    assert found == {"/shared/comment": None, "/private/filters/values/small": None}
    found, _ = getmeta(b, '""', "/shared/comment")
    assert found == {"/shared/comment": None}
    c.logout()
    b.logout()


def test_limits_answer_with_their_response_codes(make_server):
    s = make_server(extra_config=LIMITS)
    s.add_user(ALICE)
    s.start()
    c = login(s)
    big = "x" * 1025
    status, _, text = cmd(c, "SETMETADATA", "INBOX", f'(/private/ok "fine" /private/big "{big}")')
    assert status == "NO" and "[METADATA MAXSIZE 1024]" in text, text
    # Nothing of a refused command is kept.
    found, _ = getmeta(c, "INBOX", "/private/ok")
    assert found == {"/private/ok": None}
    entries = " ".join(f'/private/e{i} "v"' for i in range(10))
    ok(cmd(c, "SETMETADATA", "INBOX", f"({entries})"))
    status, _, text = cmd(c, "SETMETADATA", "INBOX", '(/private/eleven "v")')
    assert status == "NO" and "[METADATA TOOMANY]" in text, text
    # Replacing one at the limit is fine, and so is removing.
    ok(cmd(c, "SETMETADATA", "INBOX", '(/private/e0 "new")'))
    ok(cmd(c, "SETMETADATA", "INBOX", "(/private/e9 NIL)"))
    ok(cmd(c, "SETMETADATA", "INBOX", '(/private/eleven "v")'))
    # The total of all entries: 4K in all.
    kb = "y" * 1000
    ok(cmd(c, "CREATE", "Big"))
    ok(cmd(c, "SETMETADATA", "Big", f'(/private/a "{kb}" /private/b "{kb}" /private/c "{kb}")'))
    status, _, text = cmd(c, "SETMETADATA", '""', f'(/private/d "{kb}")')
    assert status == "NO" and "[METADATA TOOMANY]" in text, text
    c.logout()


def test_entries_follow_a_rename_and_go_with_a_delete(server):
    c = login(server)
    ok(cmd(c, "CREATE", "Projects"))
    ok(cmd(c, "CREATE", "Projects/Old"))
    ok(cmd(c, "SETMETADATA", "Projects", '(/private/comment "current work")'))
    ok(cmd(c, "SETMETADATA", "Projects/Old", '(/shared/comment "archive")'))
    ok(cmd(c, "RENAME", "Projects", "Work"))
    found, _ = getmeta(c, "Work", "/private/comment")
    assert found == {"/private/comment": "current work"}
    found, _ = getmeta(c, "Work/Old", "/shared/comment")
    assert found == {"/shared/comment": "archive"}
    ok(cmd(c, "DELETE", "Work/Old"))
    ok(cmd(c, "CREATE", "Work/Old"))
    found, _ = getmeta(c, "Work/Old", "/shared/comment")
    assert found == {"/shared/comment": None}, "a new folder of the same name starts empty"
    # Renaming INBOX moves its messages, and its entries are copied: INBOX keeps them too.
    ok(cmd(c, "SETMETADATA", "INBOX", '(/private/comment "inbox note")'))
    ok(cmd(c, "RENAME", "INBOX", "Old-Inbox"))
    for box in ("INBOX", "Old-Inbox"):
        found, _ = getmeta(c, box, "/private/comment")
        assert found == {"/private/comment": "inbox note"}, box
    c.logout()


def test_rights_on_a_shared_folder(server):
    alice, bob = login(server, ALICE), login(server, BOB)
    box = f'"Shared/{ALICE}/Team"'
    ok(cmd(alice, "CREATE", "Team"))
    ok(cmd(alice, "SETMETADATA", "Team", '(/shared/comment "team folder" /private/comment "alice only")'))
    status, _, text = cmd(bob, "GETMETADATA", box, "/shared/comment")
    assert status == "NO" and "NONEXISTENT" in text, text
    # l alone is not enough to read entries (RFC 5464 3.3).
    ok(cmd(alice, "SETACL", "Team", BOB, "l"))
    status, _, text = cmd(bob, "GETMETADATA", box, "/shared/comment")
    assert status == "NO" and "NOPERM" in text, text
    ok(cmd(alice, "SETACL", "Team", BOB, "lr"))
    found, _ = getmeta(bob, box, "(/shared/comment /private/comment)")
    assert found == {"/shared/comment": "team folder", "/private/comment": None}
    # His own private entry is his; the shared one needs w.
    ok(cmd(bob, "SETMETADATA", box, '(/private/comment "bob only")'))
    status, _, text = cmd(bob, "SETMETADATA", box, '(/shared/comment "changed")')
    assert status == "NO" and "NOPERM" in text, text
    ok(cmd(alice, "SETACL", "Team", BOB, "lrw"))
    ok(cmd(bob, "SETMETADATA", box, '(/shared/comment "changed by bob")'))
    found, _ = getmeta(alice, "Team", "(/shared/comment /private/comment)")
    assert found == {"/shared/comment": "changed by bob", "/private/comment": "alice only"}
    found, _ = getmeta(bob, box, "/private/comment")
    assert found == {"/private/comment": "bob only"}
    alice.logout()
    bob.logout()


def savedate(c, n):
    typ, data = c.fetch(str(n), "(SAVEDATE INTERNALDATE)")
    assert typ == "OK", data
    m = re.search(rb'SAVEDATE "([^"]+)"', data[0])
    assert m, data
    return time.mktime(imaplib.Internaldate2tuple(b'INTERNALDATE "' + m.group(1) + b'"'))


def test_savedate_after_append_copy_and_move(server):
    c = login(server)
    assert "SAVEDATE" in c.capabilities
    msg = b"From: x@far.test\r\nSubject: old mail\r\n\r\nbody\r\n"
    # An internal date years ago: the save date is now.
    typ, data = c.append("INBOX", None, imaplib.Time2Internaldate(time.time() - 5 * 365 * 86400), msg)
    assert typ == "OK", data
    before = time.time()
    ok(cmd(c, "SELECT", "INBOX"))
    c.state = "SELECTED"
    saved = savedate(c, 1)
    assert abs(saved - before) < 120, (saved, before)
    typ, data = c.fetch("1", "(INTERNALDATE)")
    assert b"INTERNALDATE" in data[0]
    time.sleep(1.2)
    ok(cmd(c, "CREATE", "Kept"))
    typ, data = c.copy("1", "Kept")
    assert typ == "OK", data
    ok(cmd(c, "EXAMINE", "Kept"))
    copied = savedate(c, 1)
    assert copied >= saved + 1, (copied, saved)
    # Searches by the save date, not the internal date.
    today = time.strftime("%d-%b-%Y", time.gmtime())
    yesterday = time.strftime("%d-%b-%Y", time.gmtime(time.time() - 86400))
    assert c.search(None, "SAVEDSINCE", today)[1][0] == b"1"
    assert c.search(None, "SAVEDON", today)[1][0] == b"1"
    assert c.search(None, "SAVEDBEFORE", today)[1][0] == b""
    assert c.search(None, "SAVEDSINCE", yesterday)[1][0] == b"1"
    assert c.search(None, "SINCE", yesterday)[1][0] == b"", "the internal date is years ago"
    assert c.search(None, "SAVEDATESUPPORTED")[1][0] == b"1"
    assert c.uid("SEARCH", "NOT", "SAVEDSINCE", today)[1][0] == b""
    # MOVE saves it anew in the folder it goes to.
    time.sleep(1.2)
    ok(cmd(c, "SELECT", "Kept"))
    status, _, text = cmd(c, "MOVE", "1", "INBOX")
    assert status == "OK", text
    ok(cmd(c, "SELECT", "INBOX"))
    assert savedate(c, 2) >= copied + 1
    status, _, text = cmd(c, "SEARCH", "SAVEDON", "bad-date")
    assert status == "BAD", text
    c.logout()


def test_entries_and_save_dates_on_postgres(make_server, database):
    """Two nodes on one database: what one keeps, the other reads; the limits hold there too."""
    a = node(make_server, database, extra=LIMITS)
    b = node(make_server, database, extra=LIMITS)
    a.cli("domain", "add", DOMAIN)
    a.add_user(ALICE)
    a.start()
    b.start()
    ca, cb = login(a), login(b)
    ok(cmd(ca, "SETMETADATA", "INBOX", '(/private/comment "from node A" /shared/comment "both")'))
    found, _ = getmeta(cb, "INBOX", "(/private/comment /shared/comment)")
    assert found == {"/private/comment": "from node A", "/shared/comment": "both"}
    status, _, text = cmd(cb, "SETMETADATA", '""', f'(/private/big "{"x" * 1025}")')
    assert status == "NO" and "[METADATA MAXSIZE 1024]" in text, text
    ok(cmd(cb, "CREATE", "Gone"))
    ok(cmd(cb, "SETMETADATA", "Gone", '(/private/comment "bye")'))
    ok(cmd(ca, "DELETE", "Gone"))
    ok(cmd(ca, "CREATE", "Gone"))
    found, _ = getmeta(cb, "Gone", "/private/comment")
    assert found == {"/private/comment": None}
    typ, data = ca.append("INBOX", None, imaplib.Time2Internaldate(time.time() - 3 * 86400),
                          b"Subject: s\r\n\r\nbody\r\n")
    assert typ == "OK", data
    ok(cmd(cb, "SELECT", "INBOX"))
    cb.state = "SELECTED"
    assert abs(savedate(cb, 1) - time.time()) < 120
    today = time.strftime("%d-%b-%Y", time.gmtime())
    assert cb.search(None, "SAVEDON", today)[1][0] == b"1"
    assert cb.search(None, "ON", today)[1][0] == b""
    ca.logout()
    cb.logout()
