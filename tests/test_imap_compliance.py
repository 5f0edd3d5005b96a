"""IMAP behaviours Dovecot's compliance suite (imaptest) checks, as regression tests CI runs:
\\Recent, keywords announced before they are shown, CONDSTORE turned on by its first use,
ESEARCH with MODSEQ, SENT* search by the Date header's own day, ENVELOPE addresses, BINARY of
message parts and BINARY APPEND, mailbox names that are not modified UTF-7, subscriptions as
names of their own (RFC 9051 6.3.9, RFC 5258), and FETCH of messages another session expunged.
Real sockets against the real binary; what depends on the store runs on both backends."""

import base64
import contextlib
import os
import re
import secrets
import shutil
import subprocess

import pytest

from conftest import DOMAIN, PASSWORD
from helpers import ALICE, Raw, mx_send

PG = os.environ.get("POSTERN_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")


class Session:
    """A raw IMAP session over TLS: a command in, (untagged responses, tagged line) out;
    literals (also literal8, `~{n}`) are joined into the response they belong to."""

    def __init__(self, server, user=ALICE):
        self.r = Raw(server.port("imaps"), tls=True)
        self.n = 0
        assert self.r.line().startswith(b"* OK")
        self.ok(f"LOGIN {user} {PASSWORD}")

    def response(self) -> bytes:
        line = self.r.line()
        while True:
            m = re.search(rb"\{(\d+)\}$", line)
            if not m:
                return line
            n = int(m.group(1))
            while len(self.r.buf) < n:
                data = self.r.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed inside a literal")
                self.r.buf += data
            data, self.r.buf = self.r.buf[:n], self.r.buf[n:]
            line = line + b"\r\n" + data + self.r.line()

    def send(self, data: bytes) -> str:
        self.n += 1
        tag = f"c{self.n}"
        self.r.send(tag.encode() + b" " + data)
        return tag

    def finish(self, tag):
        untagged = []
        while True:
            line = self.response()
            if line.startswith(tag.encode() + b" "):
                return untagged, line.decode(errors="replace")
            untagged.append(line.decode("utf-8", errors="surrogateescape"))

    def cmd(self, c):
        tag = self.send((c if isinstance(c, bytes) else c.encode()) + b"\r\n")
        return self.finish(tag)

    def ok(self, c):
        u, t = self.cmd(c)
        assert " OK " in t, (c, u, t)
        return u

    def close(self):
        self.r.close()


def numbers(lines, prefix):
    """The numbers of the first response starting with `prefix` ("* SEARCH")."""
    for l in lines:
        if l.startswith(prefix):
            return [int(x) for x in l[len(prefix):].split()]
    raise AssertionError(f"no {prefix!r} in {lines}")


def deliver(server, subject, body="text", extra=""):
    mx_send(server, "x@far.test", [ALICE],
            f"From: x@far.test\r\nSubject: {subject}\r\n{extra}\r\n{body}\r\n".encode())


def append(s, mailbox, message: bytes, flags="", binary=False):
    """APPEND with a synchronizing literal (literal8 when `binary`)."""
    marker = b"~{%d}" % len(message) if binary else b"{%d}" % len(message)
    tag = s.send(f'APPEND "{mailbox}" ({flags}) '.encode() + marker + b"\r\n")
    assert s.r.line().startswith(b"+")
    s.r.send(message + b"\r\n")
    return s.finish(tag)


# \Recent (RFC 3501 2.3.2): the first session told of a message sees it recent.

def test_recent_goes_to_the_first_session_told(server):
    for i in range(2):
        deliver(server, f"old {i}")
    a = Session(server)
    u = a.ok("SELECT INBOX")
    assert "* 2 RECENT" in u
    u = a.ok("FETCH 1:2 FLAGS")
    assert all("\\Recent" in l for l in u) and len(u) == 2
    b = Session(server)
    assert "* 0 RECENT" in b.ok("SELECT INBOX"), "the first session took them"
    assert "\\Recent" not in " ".join(b.ok("FETCH 1:2 FLAGS"))
    # A new message: A hears of it first.
    deliver(server, "new")
    u = a.ok("NOOP")
    assert "* 3 EXISTS" in u and "* 3 RECENT" in u
    assert "\\Recent" in a.ok("FETCH 3 FLAGS")[0]
    u = b.ok("NOOP")
    assert "* 3 EXISTS" in u and "* 0 RECENT" in u
    assert "\\Recent" not in b.ok("FETCH 3 FLAGS")[0]
    # SEARCH RECENT, NEW (recent and unseen) and OLD.
    a.ok("STORE 2 +FLAGS.SILENT (\\Seen)")
    assert numbers(a.ok("SEARCH RECENT"), "* SEARCH") == [1, 2, 3]
    assert numbers(a.ok("SEARCH NEW"), "* SEARCH") == [1, 3]
    assert numbers(a.ok("SEARCH OLD"), "* SEARCH") == []
    assert numbers(b.ok("SEARCH RECENT"), "* SEARCH") == []
    assert numbers(b.ok("SEARCH OLD"), "* SEARCH") == [1, 2, 3]
    a.close()
    b.close()


def test_examine_leaves_recent_and_status_counts_it(server):
    deliver(server, "one")
    c = Session(server)
    assert re.search(r"RECENT 1\b", c.ok("STATUS INBOX (RECENT MESSAGES)")[0])
    u = c.ok("EXAMINE INBOX")
    assert "* 1 RECENT" in u, "EXAMINE shows it recent"
    assert "\\Recent" in c.ok("FETCH 1 FLAGS")[0]
    d = Session(server)
    assert "* 1 RECENT" in d.ok("SELECT INBOX"), "EXAMINE did not take it"
    assert re.search(r"RECENT 0\b", c.ok("STATUS INBOX (RECENT)")[0]), "SELECT took it"
    # IMAP4rev2 sessions have no \Recent.
    e = Session(server)
    e.ok("ENABLE IMAP4rev2")
    deliver(server, "two")
    u = e.ok("SELECT INBOX")
    assert not any("RECENT" in l for l in u) and "* 2 EXISTS" in u
    assert "\\Recent" not in " ".join(e.ok("FETCH 1:* FLAGS"))
    for s in (c, d, e):
        s.close()


# Keywords (RFC 9051 7.3.5): a keyword is in FLAGS before a message shows it.

def test_new_keywords_are_announced_before_they_are_shown(server):
    deliver(server, "k")
    a = Session(server)
    b = Session(server)
    u = a.ok("SELECT INBOX")
    b.ok("SELECT INBOX")
    assert not any("$Project" in l for l in u)
    u = a.ok("STORE 1 +FLAGS ($Project)")
    flags = next(i for i, l in enumerate(u) if l.startswith("* FLAGS ("))
    perm = next(i for i, l in enumerate(u) if "[PERMANENTFLAGS (" in l)
    fetch = next(i for i, l in enumerate(u) if l.startswith("* 1 FETCH"))
    assert "$Project" in u[flags] and "$Project" in u[perm] and "\\*" in u[perm]
    assert flags < fetch and perm < fetch and "$Project" in u[fetch]
    # The other session is told of the keyword too, before the change that shows it.
    u = b.ok("NOOP")
    flags = next(i for i, l in enumerate(u) if l.startswith("* FLAGS (") and "$Project" in l)
    fetch = next(i for i, l in enumerate(u) if l.startswith("* 1 FETCH") and "$Project" in l)
    assert flags < fetch
    assert any("[PERMANENTFLAGS (" in l and "$Project" in l for l in u)
    # Announced once: the next change with it says nothing of FLAGS.
    u = a.ok("STORE 1 -FLAGS ($Project)")
    u = a.ok("STORE 1 +FLAGS ($Project)")
    assert not any(l.startswith("* FLAGS") for l in u)
    # A new session learns of it from SELECT.
    c = Session(server)
    assert any(l.startswith("* FLAGS (") and "$Project" in l for l in c.ok("SELECT INBOX"))
    for s in (a, b, c):
        s.close()


# CONDSTORE (RFC 7162 3.1): the first command that uses it turns it on.

@pytest.mark.parametrize("first", [
    "FETCH 1 (FLAGS MODSEQ)",
    "FETCH 1:* (FLAGS) (CHANGEDSINCE 1)",
    "SEARCH MODSEQ 1",
    "STORE 1 (UNCHANGEDSINCE 1000000) +FLAGS (\\Answered)",
])
def test_first_condstore_command_reports_highestmodseq(server, first):
    for i in range(2):
        deliver(server, f"m{i}")
    s = Session(server)
    u = s.ok("SELECT INBOX")
    highest = int(re.search(r"HIGHESTMODSEQ (\d+)", " ".join(u)).group(1))
    u = s.ok(first)
    assert u[0] == f"* OK [HIGHESTMODSEQ {highest}] Highest", u
    u = s.ok("STORE 2 +FLAGS (\\Flagged)")
    m = re.fullmatch(r"\* 2 FETCH \(FLAGS \((?:\\Recent )?(?:\\Answered )?\\Flagged\) MODSEQ \((\d+)\)\)", u[0])
    assert m and int(m.group(1)) > highest, u
    assert not any("HIGHESTMODSEQ" in l for l in u), "said once"
    s.close()


def test_store_without_condstore_has_no_modseq(server):
    deliver(server, "plain")
    s = Session(server)
    s.ok("SELECT INBOX")
    u = s.ok("STORE 1 +FLAGS (\\Flagged)")
    assert u == ["* 1 FETCH (FLAGS (\\Recent \\Flagged))"]
    s.close()


def test_esearch_min_max_report_their_modseq(server):
    for i in range(4):
        deliver(server, f"m{i}")
    s = Session(server)
    s.ok("ENABLE CONDSTORE")
    s.ok("SELECT INBOX")
    modseq = {}
    for n in (1, 3, 2, 4):
        u = s.ok(f"STORE {n} +FLAGS (\\Seen)")
        modseq[n] = int(re.search(rf"\* {n} FETCH .*MODSEQ \((\d+)\)", " ".join(u)).group(1))
    assert modseq[1] < modseq[3] < modseq[2] < modseq[4]

    def esearch(c):
        u = s.ok(c)
        return re.sub(r'^\* ESEARCH \(TAG "[^"]+"\) ?', "", u[0])

    assert esearch('SEARCH RETURN (MIN) 1:3 MODSEQ "/flags/\\\\seen" all 1') == f"MIN 1 MODSEQ {modseq[1]}"
    assert esearch('SEARCH RETURN (MAX) 1:3 MODSEQ "/flags/\\\\seen" all 1') == f"MAX 3 MODSEQ {modseq[3]}"
    assert esearch('SEARCH RETURN () 1:3 MODSEQ "/flags/\\\\seen" all 1') == f"ALL 1:3 MODSEQ {modseq[2]}"
    assert esearch('SEARCH RETURN (MIN MAX) 2:3 MODSEQ "/flags/\\\\seen" all 1') == f"MIN 2 MAX 3 MODSEQ {modseq[2]}"
    assert esearch(f"SEARCH RETURN (ALL) 2:3 MODSEQ {modseq[2]}") == f"ALL 2 MODSEQ {modseq[2]}"
    assert esearch(f"SEARCH RETURN (ALL) 2:3 MODSEQ {modseq[4]}") == ""
    s.close()


# SENTBEFORE, SENTON, SENTSINCE (RFC 9051 6.4.4): the Date header's own day, zone ignored.

def test_sent_searches_use_the_date_headers_own_day(server):
    dates = [
        "Sat, 24 Mar 2007 23:00:00 +0200",  # 21:00 UTC the same day
        "Sun, 25 Mar 2007 00:30:00 +0300",  # 24 Mar in UTC: still the 25th here
        "Sun, 25 Mar 2007 23:59:59 -1100",  # the 26th in UTC
        "Mon, 26 Mar 2007 01:00:00 +1400",  # the 25th in UTC
    ]
    for i, d in enumerate(dates):
        deliver(server, f"d{i}", extra=f"Date: {d}\r\n")
    deliver(server, "no date")
    s = Session(server)
    s.ok("SELECT INBOX")
    search = lambda k: numbers(s.ok(f"SEARCH {k}"), "* SEARCH")
    assert search("SENTON 24-Mar-2007") == [1]
    assert search("SENTON 25-Mar-2007") == [2, 3]
    assert search("SENTON 26-Mar-2007") == [4]
    assert search("SENTBEFORE 25-Mar-2007") == [1]
    assert search("SENTBEFORE 26-Mar-2007") == [1, 2, 3]
    assert search("SENTSINCE 25-Mar-2007") == [2, 3, 4]
    assert search("SENTSINCE 27-Mar-2007") == []
    assert search("NOT SENTON 25-Mar-2007") == [1, 4, 5], "no Date header: never sent on a day"
    s.close()


# ENVELOPE (RFC 9051 7.5.2): display names from comments, source routes, groups.

def test_envelope_addresses(server):
    for m in (b"From: user@domain (Real Name)\r\nTo: Real Two <two@domain>\r\nSubject: comment\r\n\r\nb\r\n",
              b"From: <@route:user@domain>\r\nSender: <@r1,@r2:s@d.org>\r\nSubject: route\r\n\r\nb\r\n",
              b"From: x@far.test\r\nTo: group: g1@d1.org, g2@d2.org;, empty:;\r\nSubject: group\r\n\r\nb\r\n"):
        mx_send(server, "x@far.test", [ALICE], m)
    s = Session(server)
    s.ok("SELECT INBOX")
    u = s.ok("FETCH 1:3 ENVELOPE")
    assert '"comment" (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) ' in u[0], u[0]
    assert '(("Real Two" NIL "two" "domain"))' in u[0], u[0]
    assert '"route" ((NIL "@route" "user" "domain")) ((NIL "@r1,@r2" "s" "d.org")) ' in u[1], u[1]
    assert ('((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")(NIL NIL "g2" "d2.org")(NIL NIL NIL NIL)'
            '(NIL NIL "empty" NIL)(NIL NIL NIL NIL))') in u[2], u[2]
    appended = (b"Date: Thu, 15 Feb 2007 01:02:03 +0200\r\nFrom: user@domain (Real Name)\r\n"
                b"Reply-To: <@route:user@domain>\r\n\r\nbody\r\n")
    _, t = append(s, "INBOX", appended)
    assert " OK " in t
    u = s.ok("FETCH 4 ENVELOPE")
    assert u[0] == ('* 4 FETCH (ENVELOPE ("Thu, 15 Feb 2007 01:02:03 +0200" NIL (("Real Name" NIL "user" "domain")) '
                    '(("Real Name" NIL "user" "domain")) ((NIL "@route" "user" "domain")) NIL NIL NIL NIL NIL))'), u[0]
    s.close()


# BINARY (RFC 3516).

INNER = b"Subject: inner\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n"
NESTED = (b"Subject: outer\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
          b"--b\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
          b"--b\r\nContent-Type: message/rfc822\r\n\r\n" + INNER + b"\r\n--b--\r\n")


def literal(f: bytes, label: bytes) -> bytes:
    """The bytes of the literal after `label` in a FETCH response."""
    m = re.search(re.escape(label) + rb" ~?\{(\d+)\}\r\n", f)
    assert m, (label, f)
    return f[m.end():m.end() + int(m.group(1))]


def test_binary_of_a_message_part_is_its_bytes(server):
    s = Session(server)
    _, t = append(s, "INBOX", NESTED)
    assert " OK " in t
    s.ok("SELECT INBOX")
    u = s.ok("FETCH 1 (BODY.PEEK[2] BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[2.1])")
    f = u[0].encode("utf-8", "surrogateescape")
    part = literal(f, b"BODY[2]")
    assert part.startswith(INNER), part
    assert literal(f, b"BINARY[2]") == part, "a message part has no encoding of its own to undo"
    assert b"BINARY.SIZE[2] %d" % len(part) in f
    # A part inside it is decoded as its own transfer encoding says.
    assert literal(f, b"BINARY[2.1]").startswith("café".encode())
    s.close()


def test_binary_append_keeps_the_bytes_and_shows_base64(server):
    part = b"\x00\x01 binary\r\n\xff\xfe"
    msg = (b"From: user@domain.org\r\nSubject: bin\r\nMime-Version: 1.0\r\n"
           b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n" + part)
    empty = (b"From: user@domain.org\r\nSubject: empty\r\nMime-Version: 1.0\r\n"
             b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n")
    s = Session(server)
    for m in (msg, empty):
        _, t = append(s, "INBOX", m, binary=True)
        assert "[APPENDUID" in t, t
    s.ok("SELECT INBOX")
    u = s.ok("FETCH 1 (BODY.PEEK[1] BINARY.PEEK[1] BINARY.SIZE[1] BODYSTRUCTURE)")
    f = u[0].encode("utf-8", "surrogateescape")
    text = literal(f, b"BODY[1]")
    assert b"\x00" not in text and base64.b64decode(text) == part, "stored as base64"
    assert b'BODYSTRUCTURE ("application" "octet-stream" NIL NIL NIL "base64" 20 ' in f, f
    assert b"BINARY[1] ~{%d}\r\n" % len(part) + part in f, f
    assert b"BINARY.SIZE[1] %d" % len(part) in f
    u = s.ok("FETCH 2 (BINARY.PEEK[1] BINARY.SIZE[1])")
    assert u[0] == "* 2 FETCH (BINARY[1] {0}\r\n BINARY.SIZE[1] 0)", u
    s.close()


# Mailbox names: a name that is not modified UTF-7 names no mailbox.

def test_a_name_not_in_modified_utf7_is_no_mailbox(server):
    s = Session(server)
    for name in ('"&Jjo"', '"&AGE-"', "!#$&'+,-.0123456789:;<=>?@^_`|[}"):
        u, t = s.cmd(f"SELECT {name}")
        assert re.match(r"c\d+ NO ", t), (name, t)
    assert s.ok('LIST "" ~foo') == []
    u, t = s.cmd("SELECT ~foo")
    assert re.match(r"c\d+ NO ", t)
    assert any('"INBOX"' in l for l in s.ok('LIST "" INBOX')), "the session goes on"
    s.close()


# What depends on the store runs on both backends.

@contextlib.contextmanager
def pg_database():
    """The URL of a PostgreSQL database made for the test, dropped after it."""
    if not shutil.which("psql"):
        pytest.fail("psql is missing: PostgreSQL's client is needed for these tests")
    name = "postern_test_" + secrets.token_hex(8)

    def psql(sql):
        subprocess.run(["psql", PG, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
                       capture_output=True, text=True, timeout=60, check=True)

    psql(f"CREATE DATABASE {name}")
    try:
        yield PG.rsplit("/", 1)[0] + "/" + name
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def on_postgres(url):
    return f'[storage]\nbackend = "postgres"\nurl = "{url}"\n'


@pytest.fixture(params=["embedded", "postgres"])
def backend(request, make_server):
    """A running server with alice@, on each storage backend."""
    if request.param == "embedded":
        s = make_server()
        s.add_user(ALICE)
        s.start()
        yield s
        return
    with pg_database() as url:
        s = make_server(extra_config=on_postgres(url))
        s.cli("domain", "add", DOMAIN)
        s.add_user(ALICE)
        s.start()
        yield s
        s.kill()


def listed(lines, verb="LIST"):
    """{name: (attributes, rest)} of LIST/LSUB responses."""
    out = {}
    for l in lines:
        m = re.match(rf'\* {verb} \(([^)]*)\) "/" "?([^"]*?)"?( \(.*\))?$', l)
        assert m, l
        out[m.group(2)] = (set(m.group(1).split()), m.group(3) or "")
    return out


def test_subscriptions_are_names_of_their_own(backend, tmp_root):
    s = Session(backend)
    defaults = {"INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive"}
    assert set(listed(s.ok('LSUB "" "*"'), "LSUB")) == defaults, "a new account's folders"
    s.ok("CREATE Work/Projects")
    s.ok("CREATE Lists")
    assert set(listed(s.ok('LSUB "" "*"'), "LSUB")) == defaults, "CREATE subscribes nothing"
    # Any name can be subscribed, mailbox or not.
    for name in ("Work/Projects", "Ghost/child", "Lists"):
        s.ok(f"SUBSCRIBE {name}")
    s.ok("DELETE Lists")
    got = listed(s.ok('LIST (SUBSCRIBED) "" "*"'))
    assert got["Ghost/child"][0] >= {"\\Subscribed", "\\NonExistent"}
    assert got["Lists"][0] >= {"\\Subscribed", "\\NonExistent"}, "deleting keeps the subscription"
    assert "\\Noselect" not in got["Lists"][0]
    assert got["Work/Projects"][0] >= {"\\Subscribed"} and "\\NonExistent" not in got["Work/Projects"][0]
    assert "Work" not in got and "Ghost" not in got
    # LSUB with %: unsubscribed parents of subscribed names are \Noselect.
    got = listed(s.ok('LSUB "" "%"'), "LSUB")
    assert got["Work"][0] == {"\\Noselect"} and got["Ghost"][0] == {"\\Noselect"}
    assert got["Lists"][0] == set() and got["INBOX"][0] == set()
    assert "Work/Projects" not in got
    got = listed(s.ok('LSUB "" "*"'), "LSUB")
    assert "Work" not in got, "a * matches the subscribed names themselves"
    # RECURSIVEMATCH: CHILDINFO for parents of subscribed names the pattern leaves out.
    got = listed(s.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)'))
    assert got["Work"] == ({"\\HasChildren"}, ' ("CHILDINFO" ("SUBSCRIBED"))'), got["Work"]
    assert got["Ghost"][0] >= {"\\NonExistent"} and "CHILDINFO" in got["Ghost"][1]
    assert got["INBOX"][1] == ""
    got = listed(s.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" ("Work" "Work/Projects")'))
    assert set(got) == {"Work/Projects"}, "the child the patterns match is shown itself"
    # RETURN (SUBSCRIBED) marks the subscribed ones only.
    got = listed(s.ok('LIST "" "*" RETURN (SUBSCRIBED)'))
    assert "\\Subscribed" in got["Work/Projects"][0] and "\\Subscribed" not in got["Work"][0]
    assert "Ghost/child" not in got, "plain LIST shows mailboxes"
    # A rename carries the subscriptions of the name and of the names below it.
    s.ok("SUBSCRIBE Work")
    s.ok("RENAME Work Job")
    got = listed(s.ok('LSUB "" "*"'), "LSUB")
    assert {"Job", "Job/Projects"} <= set(got) and not any(n.startswith("Work") for n in got)
    s.ok("UNSUBSCRIBE Ghost/child")
    s.ok("UNSUBSCRIBE Never-subscribed")
    assert "Ghost/child" not in listed(s.ok('LSUB "" "*"'), "LSUB")
    u, t = s.cmd('SUBSCRIBE "bad*name"')
    assert " NO " in t
    s.close()
    # Read back through the maildir export: Dovecot's list of subscribed folders.
    out = tmp_root / "export"
    backend.cli("storage", "export-maildir", ALICE, str(out))
    subs = set((out / "subscriptions").read_text().split())
    assert subs == {"Drafts", "Sent", "Trash", "Junk", "Archive", "Lists", "Job", "Job.Projects"}, subs


def test_folders_sieve_creates_are_subscribed(backend):
    backend.cli("sieve", "put", ALICE, "main", "-", "--activate",
                input='require ["fileinto", "mailbox"];\r\nfileinto :create "Lists/rust";\r\n')
    deliver(backend, "filed")
    s = Session(backend)
    got = listed(s.ok('LIST (SUBSCRIBED) "" "Lists/*"'))
    assert got["Lists/rust"][0] >= {"\\Subscribed"}
    assert "\\NonExistent" not in got["Lists/rust"][0]
    s.ok("SELECT Lists/rust")
    assert "filed" in s.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS (Subject)]")[0]
    s.close()


# RFC 2180 4.1.2: a message another session expunged stays readable for a session not told.

def test_fetch_of_a_message_another_session_expunged(backend):
    big = "".join(f"line {i:06d} of a long message\r\n" for i in range(12000))  # ~370 KB: streamed
    deliver(backend, "small one", body="short body")
    deliver(backend, "big one", body=big)
    deliver(backend, "stays")
    a = Session(backend)
    b = Session(backend)
    a.ok("SELECT INBOX")
    b.ok("SELECT INBOX")
    b.ok("STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    u = b.ok("EXPUNGE")
    # The highest first, as Dovecot: each number is the message's own when said.
    assert u[:2] == ["* 2 EXPUNGE", "* 1 EXPUNGE"]
    # A has not been told: its numbers 1 and 2 still name them, and FETCH answers in full.
    u, t = a.cmd("FETCH 1:3 (UID FLAGS RFC822.SIZE BODY.PEEK[])")
    assert re.match(r"c\d+ OK ", t) and "EXPUNGEISSUED" not in t, t
    assert [re.match(r"\* (\d+) FETCH", l).group(1) for l in u if " FETCH " in l] == ["1", "2", "3"]
    assert "short body" in u[0] and "\\Deleted" in u[0]
    size = int(re.search(r"RFC822.SIZE (\d+)", u[1]).group(1))
    assert size > len(big) and big in u[1] and u[1].endswith(")")
    assert "stays" in u[2]
    # FETCH may not tell of the expunge; NOOP does.
    assert not any("EXPUNGE" in l for l in u)
    u = a.ok("NOOP")
    assert u == ["* 2 EXPUNGE", "* 1 EXPUNGE"], u
    assert "stays" in a.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS (Subject)]")[0]
    a.close()
    b.close()


def test_subscriptions_move_with_the_store(make_server):
    """`postern storage export` copies subscriptions too, names without a mailbox included;
    read back over IMAP from a node on the PostgreSQL copy."""
    s = make_server()
    s.add_user(ALICE)
    s.start()
    c = Session(s)
    c.ok("CREATE Work")
    for name in ("Work", "Ghost/child"):
        c.ok(f"SUBSCRIBE {name}")
    c.ok("UNSUBSCRIBE Junk")
    before = set(listed(c.ok('LSUB "" "*"'), "LSUB"))
    assert before == {"INBOX", "Drafts", "Sent", "Trash", "Archive", "Work", "Ghost/child"}
    c.close()
    s.stop()
    with pg_database() as url:
        r = s.cli("storage", "export", url)
        assert "copied; the counts agree" in r.stdout, r.stdout + r.stderr
        n = make_server(extra_config=on_postgres(url))
        n.start()
        c = Session(n)
        assert set(listed(c.ok('LSUB "" "*"'), "LSUB")) == before
        got = listed(c.ok('LIST (SUBSCRIBED) "" "*"'))
        assert "\\NonExistent" in got["Ghost/child"][0] and "\\NonExistent" not in got["Work"][0]
        c.close()
        n.kill()
