"""CATENATE (RFC 4469) over imaplib against the real server: messages put together from TEXT
parts and IMAP URLs (RFC 5092) naming messages and sections the user may read, in absolute,
server-relative and selected-mailbox-relative form; inside MULTIAPPEND (all or nothing); from a
folder another user shares; BADURL for whatever names no readable message of this server and
user, TRYCREATE for a missing target, TOOBIG past the limit; large parts going through the
spool."""

import hashlib
import imaplib
import re
import urllib.parse

from conftest import PASSWORD
from helpers import ALICE, BOB, insecure_ctx
from test_imap_sort import tagged

PLAIN = b"From: a@far.test\r\nSubject: one\r\n\r\nHello world\r\n"
MULTI = (
    b"From: b@far.test\r\nSubject: two\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="xx"\r\n\r\n'
    b"--xx\r\nContent-Type: text/plain\r\n\r\npart one\r\n"
    b'--xx\r\nContent-Type: text/plain; name="a.txt"\r\nContent-Disposition: attachment\r\n\r\n'
    b"part two\r\n--xx--\r\n"
)


def login(server, user=ALICE):
    c = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=60)
    c.login(user, PASSWORD)
    return c


def setup(server):
    """Alice with PLAIN (UID 1) and MULTI (UID 2) in INBOX and an empty Drafts; INBOX selected.
    Returns (client, INBOX's UIDVALIDITY)."""
    c = login(server)
    assert "CATENATE" in c.capabilities, c.capabilities
    for m in (PLAIN, MULTI):
        assert c.append("INBOX", None, None, m)[0] == "OK"
    c.create("Drafts")
    typ, _ = c.select("INBOX")
    assert typ == "OK"
    return c, int(c.untagged_responses["UIDVALIDITY"][0])


def part_spec(parts):
    """CATENATE's list: ("TEXT", bytes) as non-synchronizing literals, ("URL", str) quoted."""
    out = []
    for kind, data in parts:
        if kind == "TEXT":
            out.append(b"TEXT {%d+}\r\n" % len(data) + data)
        else:
            out.append(b'URL "' + data.encode() + b'"')
    return b"CATENATE (" + b" ".join(out) + b")"


def catenate(c, mailbox, *messages, flags=None):
    """APPEND with one CATENATE list per message: (type, tagged text)."""
    args = mailbox.encode()
    if flags:
        args += b" " + flags.encode()
    for parts in messages:
        args += b" " + part_spec(parts)
    typ, data = tagged(c, "APPEND", args)
    return typ, data[-1].decode(errors="replace")


def appended_uid(text):
    m = re.search(r"\[APPENDUID \d+ (\d+)\]", text)
    assert m, text
    return int(m.group(1))


def body(c, mailbox, uid, section=""):
    c.select(mailbox)
    typ, data = c.uid("FETCH", str(uid), f"(BODY.PEEK[{section}])")
    assert typ == "OK", data
    return data[0][1]


def count(c, mailbox):
    typ, data = c.status(mailbox, "(MESSAGES)")
    assert typ == "OK", data
    return int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))


def test_text_and_url_parts_in_every_form(server):
    c, uv = setup(server)
    header = body(c, "INBOX", 1, "HEADER")
    text2 = body(c, "INBOX", 2, "TEXT")
    mime = body(c, "INBOX", 2, "2.MIME")
    part2 = body(c, "INBOX", 2, "2")
    fields = body(c, "INBOX", 2, "HEADER.FIELDS (Subject)")
    c.select("INBOX")
    cases = [
        # Server-relative, with and without UIDVALIDITY.
        ([("URL", f"/INBOX;UIDVALIDITY={uv}/;UID=1/;SECTION=HEADER"), ("TEXT", b"new body\r\n")],
         header + b"new body\r\n"),
        # Relative to the selected mailbox; a MIME header and its part; lower case works too.
        ([("TEXT", b"Subject: built\r\n"), ("URL", ";UID=2/;SECTION=2.MIME"), ("URL", ";uid=2/;section=2")],
         b"Subject: built\r\n" + mime + part2),
        # Absolute, naming this server and user; a whole message.
        ([("URL", f"imap://{urllib.parse.quote(ALICE)}@mail.example.test/INBOX/;UID=1")], PLAIN),
        ([("URL", "imap://127.0.0.1/INBOX/;UID=2/;SECTION=TEXT")], text2),
        # A partial range, and one past the end (nothing).
        ([("URL", "/INBOX/;UID=1/;PARTIAL=6.10"), ("URL", "/INBOX/;UID=1/;PARTIAL=100000.1"),
          ("TEXT", b"\r\n")], PLAIN[6:16] + b"\r\n"),
        ([("URL", "/INBOX/;UID=2/;SECTION=HEADER.FIELDS%20(Subject)"), ("TEXT", b"x\r\n")],
         fields + b"x\r\n"),
        # Bare line ends in TEXT parts are made CRLF, as APPEND does.
        ([("TEXT", b"Subject: lf\n"), ("TEXT", b"\nbody\n")], b"Subject: lf\r\n\r\nbody\r\n"),
    ]
    for parts, want in cases:
        typ, text = catenate(c, "Drafts", parts, flags="(\\Seen)")
        assert typ == "OK", (parts, text)
        uid = appended_uid(text)
        assert body(c, "Drafts", uid) == want, parts
        c.select("INBOX")
    c.select("Drafts")
    typ, data = c.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[0], data
    # The parts named were not marked read by being copied.
    c.select("INBOX")
    typ, data = c.fetch("1:2", "(FLAGS)")
    assert all(b"\\Seen" not in d for d in data), data


def test_urls_naming_no_readable_message_are_bad(server):
    c, uv = setup(server)
    bob = login(server, BOB)
    bob.append("INBOX", None, None, PLAIN)
    bad = [
        f"/INBOX;UIDVALIDITY={uv + 1}/;UID=1",
        "/INBOX/;UID=99",
        "/Nowhere/;UID=1",
        "/INBOX/;UID=2/;SECTION=7",
        "/INBOX/;UID=1/;SECTION=BOGUS",
        "/INBOX/;UID=1/;URLAUTH=anonymous:internal:0123456789abcdef",
        "imap://elsewhere.test/INBOX/;UID=1",
        f"imap://{urllib.parse.quote(BOB)}@mail.example.test/INBOX/;UID=1",
        # Bob's INBOX is not shared with alice: no more hers to read than a missing one.
        f"/Shared/{urllib.parse.quote(BOB)}/INBOX/;UID=1",
        "http://mail.example.test/INBOX/;UID=1",
        "/INBOX",
    ]
    for url in bad:
        typ, text = catenate(c, "Drafts", [("TEXT", b"Subject: x\r\n\r\n"), ("URL", url)])
        assert typ == "NO" and text.startswith("[BADURL "), (url, text)
        assert url.replace("]", "?")[:40] in text, (url, text)
    assert count(c, "Drafts") == 0
    # The target is checked first: TRYCREATE, whatever the URLs.
    typ, text = catenate(c, "Missing", [("URL", "/INBOX/;UID=99")])
    assert typ == "NO" and "[TRYCREATE]" in text, text
    # Nothing that is not TEXT or URL.
    typ, data = tagged(c, "APPEND", b'Drafts CATENATE (BODY "x")')
    assert typ == "BAD" and b"unknown CATENATE part BODY" in data[-1], data


def test_multiappend_is_all_or_nothing(server):
    c, _ = setup(server)
    typ, text = catenate(c, "Drafts", [("URL", "/INBOX/;UID=1")], [("TEXT", b"Subject: 2\r\n\r\nb\r\n")])
    assert typ == "OK", text
    uids = re.search(r"\[APPENDUID \d+ (\S+)\]", text).group(1)
    assert uids == "1:2", text
    # CATENATE and a plain literal in one MULTIAPPEND.
    args = b"Drafts " + part_spec([("URL", "/INBOX/;UID=2/;SECTION=1")]) + b" (\\Flagged) {5+}\r\nplain"
    typ, data = tagged(c, "APPEND", args)
    assert typ == "OK", data
    assert body(c, "Drafts", 4) == b"plain"
    # REPLACE (RFC 8508) takes a CATENATE message too: a draft saved again from its parts.
    c.select("Drafts")
    args = b"4 Drafts " + part_spec([("URL", ";UID=4"), ("TEXT", b" and more")])
    typ, data = tagged(c, "UID", b"REPLACE " + args)
    assert typ == "OK", data
    assert body(c, "Drafts", 5) == b"plain and more"
    typ, data = c.uid("FETCH", "4", "(UID)")
    assert data == [None], data
    # A bad URL in the last message: none of them is stored.
    before = count(c, "Drafts")
    c.select("INBOX")
    typ, text = catenate(c, "Drafts", [("TEXT", b"Subject: fine\r\n\r\n")], [("URL", "/INBOX/;UID=42")])
    assert typ == "NO" and "[BADURL /INBOX/;UID=42]" in text, text
    assert count(c, "Drafts") == before


def test_synchronizing_literals_and_the_limit(make_server):
    s = make_server(extra_config='[imap]\nmax_literal = "4K"\n')
    s.add_user(ALICE)
    s.start()
    c, _ = setup(s)
    assert "APPENDLIMIT=4096" in c.capabilities

    class Parts:
        """imaplib's literator: each continuation request gets the next piece."""

        def __init__(self, pieces):
            self.pieces = list(pieces)
            self.asked = 0

        def next(self, _continuation):
            self.asked += 1
            return self.pieces.pop(0)

    # Synchronizing literals: the server asks for each TEXT part.
    feed = Parts([b"Subject: sync\r\n\r\n URL \"/INBOX/;UID=1/;SECTION=TEXT\" TEXT {5}", b"tail!)"])
    c.literal = feed.next
    typ, data = c._simple_command("APPEND", "Drafts", "CATENATE", "(TEXT {17}")
    assert typ == "OK" and feed.asked == 2, data
    assert body(c, "Drafts", appended_uid(data[-1].decode())) == b"Subject: sync\r\n\r\nHello world\r\ntail!"
    # TEXT parts of one message count together: the second is refused before it is sent.
    c.select("INBOX")
    feed = Parts([b"x" * 3000 + b" TEXT {3000}", b"y" * 3000 + b")"])
    c.literal = feed.next
    typ, data = c._simple_command("APPEND", "Drafts", "CATENATE", "(TEXT {3000}")
    assert typ == "NO" and b"[TOOBIG]" in data[-1] and feed.asked == 1, data
    # Stored parts count too.
    big = b"Subject: big\r\n\r\n" + b"z" * 3000 + b"\r\n"
    assert c.append("INBOX", None, None, big)[0] == "OK"
    typ, text = catenate(c, "Drafts", [("URL", "/INBOX/;UID=3"), ("TEXT", b"w" * 2000)])
    assert typ == "NO" and "[TOOBIG]" in text, text
    typ, _ = c.noop()
    assert typ == "OK"


def test_parts_from_a_shared_folder(server):
    c, _ = setup(server)
    bob = login(server, BOB)
    bob.create("Projects")
    assert bob.append("Projects", None, None, MULTI)[0] == "OK"
    assert bob.setacl("Projects", ALICE, "lr")[0] == "OK"
    url = f"/Shared/{urllib.parse.quote(BOB)}/Projects/;UID=1/;SECTION=1"
    typ, text = catenate(c, "Drafts", [("TEXT", b"Subject: fwd\r\n\r\n"), ("URL", url)])
    assert typ == "OK", text
    assert body(c, "Drafts", appended_uid(text)) == b"Subject: fwd\r\n\r\npart one"
    # Looking up but not reading: the URL names nothing alice may read.
    assert bob.setacl("Projects", ALICE, "l")[0] == "OK"
    typ, text = catenate(c, "Drafts", [("URL", url)])
    assert typ == "NO" and text.startswith("[BADURL"), text


def test_large_parts_go_through_the_spool(server):
    c, _ = setup(server)
    lines = b"".join(b"line %07d of a large message\r\n" % i for i in range(100_000))  # ~3 MB
    big = b"From: a@far.test\r\nSubject: big\r\n\r\n" + lines
    assert c.append("INBOX", None, None, big)[0] == "OK"
    text = b"Subject: again\r\n\r\n" + lines[: 1_500_000]
    typ, result = catenate(c, "Drafts", [("TEXT", text), ("URL", "/INBOX/;UID=3/;SECTION=TEXT"),
                                         ("URL", "/INBOX/;UID=3")])
    assert typ == "OK", result
    got = body(c, "Drafts", appended_uid(result))
    want = text + lines + big
    assert len(got) == len(want) and hashlib.sha256(got).digest() == hashlib.sha256(want).digest()
