"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 4) over imaplib against the real server: SEARCH
and SORT with RETURN (UPDATE) telling of changes to their result as the mailbox changes
(ADDTO, REMOVEFROM; removals of expunged messages before their EXPUNGE), in this session, from
another one and in IDLE, until CANCELUPDATE; sorted results keeping positions; RETURN (PARTIAL)
with ranges from the start and, as RFC 9394 allows, from the end; bad ranges refused."""

import imaplib
import re

from conftest import PASSWORD
from helpers import ALICE, insecure_ctx
from test_imap_sort import tagged

imaplib.Commands.setdefault("CANCELUPDATE", ("SELECTED",))


class Client(imaplib.IMAP4_SSL):
    """imaplib, keeping every line the server sent, in order."""

    def __init__(self, server):
        self.lines = []
        super().__init__("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=30)

    def _get_line(self):
        line = super()._get_line()
        self.lines.append(line.decode(errors="replace"))
        return line

    def run(self, *args):
        """A command: (type, tagged data, the untagged lines it brought)."""
        start = len(self.lines)
        typ, data = tagged(self, *args)
        return typ, data, [l for l in self.lines[start:] if l.startswith("* ")]


def login(server):
    c = Client(server)
    c.login(ALICE, PASSWORD)
    return c


def msg(subject, n=0):
    return f"From: x{n}@far.test\r\nSubject: {subject}\r\n\r\nbody {subject}\r\n".encode()


def fill(c, subjects, flags=None):
    for i, s in enumerate(subjects):
        assert c.append("INBOX", flags, None, msg(s, i))[0] == "OK"


def updates(lines, tag):
    """The ESEARCH updates for the search tagged so, as [(item, position, set)]."""
    out = []
    for l in lines:
        m = re.fullmatch(r'\* ESEARCH \(TAG "' + re.escape(tag) + r'"\)( UID)?((?: (?:ADDTO|REMOVEFROM) \(\d+ [0-9:,]+\))+)', l)
        if m:
            out += [(k, int(p), s) for k, p, s in re.findall(r"(ADDTO|REMOVEFROM) \((\d+) ([0-9:,]+)\)", m.group(2))]
    return out


def test_search_update_tells_of_changes_until_cancelled(server):
    c = login(server)
    for cap in ("CONTEXT=SEARCH", "CONTEXT=SORT", "ESEARCH"):
        assert cap in c.capabilities, c.capabilities
    fill(c, ["a", "b", "c", "d", "e"])
    c.select("INBOX")
    typ, data, u = c.run("SEARCH", "RETURN", "(UPDATE)", "SEEN")
    assert typ == "OK", data
    tag = re.match(r'\* ESEARCH \(TAG "([^"]+)"\)$', u[0]).group(1)
    assert len(u) == 1, u
    # This session's own STORE.
    typ, _, u = c.run("STORE", "1,2,4", "+FLAGS", "(\\Seen)")
    assert updates(u, tag) == [("ADDTO", 0, "1:2,4")], u
    typ, _, u = c.run("STORE", "1", "-FLAGS", "(\\Seen)")
    assert updates(u, tag) == [("REMOVEFROM", 0, "1")], u
    # Another session's change, seen at the next command.
    other = login(server)
    other.select("INBOX")
    other.store("5", "+FLAGS", "(\\Seen)")
    typ, _, u = c.run("NOOP")
    assert updates(u, tag) == [("ADDTO", 0, "5")], u
    # An expunge: the removal is said while its sequence number still holds, before EXPUNGE.
    other.store("2", "+FLAGS", "(\\Deleted)")
    other.expunge()
    typ, _, u = c.run("NOOP")
    assert u[0] == f'* ESEARCH (TAG "{tag}") REMOVEFROM (0 2)' and u[1] == "* 2 EXPUNGE", u
    # A new message that matches: after EXISTS, by its new number.
    assert other.append("INBOX", "(\\Seen)", None, msg("f"))[0] == "OK"
    typ, _, u = c.run("NOOP")
    assert u.index("* 5 EXISTS") < u.index(f'* ESEARCH (TAG "{tag}") ADDTO (0 5)'), u
    # Messages that match no more and messages that match now, in one response.
    other.store("2", "+FLAGS", "(\\Seen)")
    other.store("3", "-FLAGS", "(\\Seen)")
    typ, _, u = c.run("NOOP")
    assert updates(u, tag) == [("REMOVEFROM", 0, "3"), ("ADDTO", 0, "2")], u
    typ, data, _ = c.run("CANCELUPDATE", f'"{tag}"')
    assert typ == "OK", data
    other.store("1", "+FLAGS", "(\\Seen)")
    typ, _, u = c.run("NOOP")
    assert not any("ESEARCH" in l for l in u), u
    typ, data, _ = c.run("CANCELUPDATE", f'"{tag}"')
    assert typ == "NO", data
    other.logout()


def test_uid_search_update_in_idle_and_with_sequence_numbers(server):
    c = login(server)
    fill(c, ["a", "b", "c", "d"])
    c.select("INBOX")
    uids = [int(x) for x in c.uid("SEARCH", "ALL")[1][0].split()]
    # Sequence numbers in the keys name the messages they named when the search ran.
    typ, data, u = c.run("UID", "SEARCH", "RETURN", "(UPDATE ALL)", "2:4", "UNSEEN")
    tag = re.match(r'\* ESEARCH \(TAG "([^"]+)"\) UID ALL (\S+)$', u[0])
    assert tag and tag.group(2) == f"{uids[1]}:{uids[3]}", u
    tag = tag.group(1)
    other = login(server)
    other.select("INBOX")
    other.store("1", "+FLAGS", "(\\Deleted)")
    other.expunge()
    other.store("1", "+FLAGS", "(\\Seen)")  # uids[1], now number 1
    typ, _, u = c.run("NOOP")
    assert updates(u, tag) == [("REMOVEFROM", 0, str(uids[1]))] and "* 1 EXPUNGE" in u, u
    # In IDLE, as they happen.
    c.send(b"i1 IDLE\r\n")
    assert c.readline().startswith(b"+")
    assert other.append("INBOX", None, None, msg("e"))[0] == "OK"  # unseen, but not one of 2:4
    other.store("1", "-FLAGS", "(\\Seen)")
    seen = []
    while True:
        line = c.readline().decode().strip()
        seen.append(line)
        if "ADDTO" in line:
            break
    c.send(b"DONE\r\n")
    while not c.readline().startswith(b"i1 OK"):
        pass
    assert updates(seen, tag) == [("ADDTO", 0, str(uids[1]))], seen
    assert "* 4 EXISTS" in seen, seen
    other.logout()


def test_sort_update_keeps_positions(server):
    c = login(server)
    fill(c, ["delta", "alpha", "echo", "charlie"])
    c.select("INBOX")
    # By subject: alpha(2) charlie(4) delta(1) echo(3).
    typ, data, u = c.run("SORT", "RETURN", "(UPDATE ALL)", "(SUBJECT)", "UTF-8", "UNDELETED")
    m = re.match(r'\* ESEARCH \(TAG "([^"]+)"\) ALL (\S+)$', u[0])
    assert m and m.group(2) == "2,4,1,3", u
    tag = m.group(1)
    # New ones go where they sort (alpha beta bravo charlie delta echo foxtrot): beta and
    # bravo side by side from position 2, foxtrot last.
    other = login(server)
    fill(other, ["bravo", "foxtrot", "beta"])
    typ, _, u = c.run("NOOP")
    assert updates(u, tag) == [("ADDTO", 2, "7,5"), ("ADDTO", 7, "6")], u
    # Leaving: each run at its position once the runs before it are gone.
    typ, _, u = c.run("STORE", "2,5,3", "+FLAGS.SILENT", "(\\Deleted)")
    assert updates(u, tag) == [("REMOVEFROM", 1, "2"), ("REMOVEFROM", 2, "5"), ("REMOVEFROM", 4, "3")], u
    typ, data, u = c.run("SORT", "RETURN", "(ALL)", "(SUBJECT)", "UTF-8", "UNDELETED")
    assert u[0].endswith(" ALL 7,4,1,6"), u
    # An expunge of messages no longer in the result says nothing of it.
    typ, _, u = c.run("EXPUNGE")
    assert not updates(u, tag) and u[:3] == ["* 5 EXPUNGE", "* 3 EXPUNGE", "* 2 EXPUNGE"], u
    typ, data, _ = c.run("CANCELUPDATE", f'"{tag}"')
    assert typ == "OK", data
    other.logout()


def test_at_most_ten_updating_searches(server):
    c = login(server)
    fill(c, ["a"])
    c.select("INBOX")
    tags = []
    for _ in range(10):
        typ, data, u = c.run("SEARCH", "RETURN", "(UPDATE)", "ALL")
        assert typ == "OK" and len(u) == 1, u
        tags.append(re.search(r'TAG "([^"]+)"', u[0]).group(1))
    typ, data, u = c.run("SEARCH", "RETURN", "(UPDATE COUNT)", "ALL")
    assert typ == "OK", data
    assert re.fullmatch(r'\* ESEARCH \(TAG "[^"]+"\) COUNT 1', u[0]), u
    assert re.fullmatch(r'\* NO \[NOUPDATE "[^"]+"\] .*', u[1]), u
    other = login(server)
    fill(other, ["b"])
    other.logout()
    typ, _, u = c.run("NOOP")
    assert sorted(re.search(r'TAG "([^"]+)"', l).group(1) for l in u if "ADDTO (0 2)" in l) == sorted(tags)
    typ, data, _ = c.run("CANCELUPDATE", *[f'"{t}"' for t in tags])
    assert typ == "OK", data
    # Closing the mailbox ends them too.
    typ, data, u = c.run("SEARCH", "RETURN", "(UPDATE)", "ALL")
    tag = re.search(r'TAG "([^"]+)"', u[0]).group(1)
    c.close()
    c.select("INBOX")
    typ, data, _ = c.run("CANCELUPDATE", f'"{tag}"')
    assert typ == "NO", data


def test_partial_results(server):
    c = login(server)
    fill(c, ["e", "d", "c", "b", "a"])
    c.select("INBOX")

    def answer(*args):
        typ, data, u = c.run(*args)
        assert typ == "OK", data
        return re.sub(r'^\* ESEARCH \(TAG "[^"]+"\)', "", u[0]).strip()

    assert answer("SEARCH", "RETURN", "(PARTIAL 1:2)", "ALL") == "PARTIAL (1:2 1:2)"
    assert answer("SEARCH", "RETURN", "(PARTIAL 4:2)", "ALL") == "PARTIAL (2:4 2:4)"
    assert answer("SEARCH", "RETURN", "(PARTIAL 4:10 COUNT)", "ALL") == "PARTIAL (4:10 4:5) COUNT 5"
    assert answer("SEARCH", "RETURN", "(PARTIAL 6:9)", "ALL") == "PARTIAL (6:9 NIL)"
    # From the end (RFC 9394): -1 is the last.
    assert answer("SEARCH", "RETURN", "(PARTIAL -1:-2)", "ALL") == "PARTIAL (-1:-2 4:5)"
    assert answer("SEARCH", "RETURN", "(PARTIAL -10:-4)", "ALL") == "PARTIAL (-4:-10 1:2)"
    assert answer("SEARCH", "RETURN", "(PARTIAL 1:2)", "2,4:5") == "PARTIAL (1:2 2,4)"
    uid = answer("UID", "SEARCH", "RETURN", "(PARTIAL 2:2)", "ALL")
    assert re.fullmatch(r"UID PARTIAL \(2:2 \d+\)", uid), uid
    # In sort order: by subject a(5) b(4) c(3) d(2) e(1).
    assert answer("SORT", "RETURN", "(PARTIAL 1:3)", "(SUBJECT)", "UTF-8", "ALL") == "PARTIAL (1:3 5,4,3)"
    assert answer("SORT", "RETURN", "(PARTIAL -1:-2 MIN)", "(SUBJECT)", "UTF-8", "ALL") == "PARTIAL (-1:-2 2,1) MIN 5"
    for bad in ["(PARTIAL 1)", "(PARTIAL 1:*)", "(PARTIAL *:1)", "(PARTIAL 0:3)", "(PARTIAL -1:3)",
                "(ALL PARTIAL 1:3)", "(UPDATE PARTIAL 1:3)"]:
        typ, data, _ = c.run("SEARCH", "RETURN", bad, "ALL")
        assert typ == "BAD", (bad, data)
    typ, _ = c.noop()
    assert typ == "OK"
