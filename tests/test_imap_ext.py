"""WITHIN (RFC 5032), ESORT (RFC 5267 3) and PREVIEW (RFC 8970) over imaplib against the real
server: OLDER and YOUNGER by INTERNALDATE in SEARCH, UID SEARCH, ESEARCH and SORT; SORT RETURN
answering ESEARCH with MIN and MAX in sort order and ALL keeping it; previews of plain, HTML,
multipart and non-text messages; bad input answered BAD with the reason, the session going on."""

import imaplib
import re
import time

from conftest import PASSWORD
from helpers import ALICE, insecure_ctx
from test_imap_sort import tagged


def login(server):
    c = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=30)
    c.login(ALICE, PASSWORD)
    return c


def append(c, subject, body, date=None, head=""):
    msg = f"From: x@far.test\r\nSubject: {subject}\r\n{head}\r\n{body}\r\n".encode()
    internal = imaplib.Time2Internaldate(date) if date is not None else None
    typ, data = c.append("INBOX", None, internal, msg)
    assert typ == "OK", data


def search(c, *keys, uid=False):
    typ, data = c.uid("SEARCH", *keys) if uid else c.search(None, *keys)
    assert typ == "OK", data
    return [int(n) for n in data[0].split()]


def esearch(c, *args):
    """The ESEARCH answer of a command as {item: value}, with its TAG and UID marker."""
    typ, data = c._simple_command(*args)
    assert typ == "OK", data
    typ, data = c._untagged_response(typ, data, "ESEARCH")
    assert data[0] is not None, "no ESEARCH response"
    text = data[-1].decode()
    m = re.fullmatch(r'\(TAG "([^"]+)"\)( UID)?((?: [A-Z]+ [0-9:,]+)*)', text)
    assert m, text
    words = m.group(3).split()
    items = dict(zip(words[::2], words[1::2]))
    assert m.group(1).startswith(c.tagpre.decode()), text
    return items, bool(m.group(2))


def expand(seqset):
    """A sequence set's numbers in the order written."""
    out = []
    for part in seqset.split(","):
        a, _, b = part.partition(":")
        out += range(int(a), int(b or a) + 1) if int(b or a) >= int(a) else range(int(a), int(b) - 1, -1)
    return out


def uid_of(c, n):
    return int(re.search(rb"UID (\d+)", c.fetch(str(n), "(UID)")[1][0]).group(1))


# WITHIN (RFC 5032)

def test_older_and_younger_by_internal_date(server):
    c = login(server)
    assert "WITHIN" in c.capabilities, c.capabilities
    now = time.time()
    append(c, "three days", "a", now - 3 * 86400)
    append(c, "two hours", "b", now - 2 * 3600)
    append(c, "just now", "c")
    append(c, "ten days", "d", now - 10 * 86400)
    append(c, "a minute", "e", now - 60)
    c.select("INBOX")
    assert search(c, "YOUNGER", "3600") == [3, 5]
    assert search(c, "OLDER", "3600") == [1, 2, 4]
    assert search(c, "NOT", "YOUNGER", "3600") == [1, 2, 4]
    assert search(c, "OLDER", str(5 * 86400)) == [4]
    assert search(c, "YOUNGER", str(3 * 3600), "OLDER", "600") == [2]
    assert search(c, "OR", "YOUNGER", "600", "OLDER", str(5 * 86400)) == [3, 4, 5]
    assert search(c, "YOUNGER", "4294967295") == [1, 2, 3, 4, 5]
    uids = {n: uid_of(c, n) for n in range(1, 6)}
    assert search(c, "OLDER", "86400", uid=True) == [uids[1], uids[4]]
    # ESEARCH forms.
    items, is_uid = esearch(c, "SEARCH", "RETURN", "(MIN MAX COUNT)", "OLDER", "3600")
    assert items == {"MIN": "1", "MAX": "4", "COUNT": "3"} and not is_uid, items
    items, is_uid = esearch(c, "UID", "SEARCH", "RETURN", "(ALL)", "YOUNGER", "3600")
    assert is_uid and expand(items["ALL"]) == [uids[3], uids[5]], items
    # SORT's search keys: by arrival, the newer ones only.
    typ, data = c.sort("(ARRIVAL)", "UTF-8", "YOUNGER", "86400")
    assert typ == "OK" and data[0].split() == [b"2", b"5", b"3"], data
    typ, data = c.sort("(REVERSE ARRIVAL)", "UTF-8", "OLDER", "86400")
    assert data[0].split() == [b"1", b"4"], data
    # A bad interval is BAD with the reason; the session goes on.
    for bad in (["OLDER", "0"], ["YOUNGER", "-1"], ["OLDER", "4294967296"], ["YOUNGER", "soon"]):
        typ, data = tagged(c, "SEARCH", *bad)
        assert typ == "BAD" and b"seconds from 1 to 4294967295" in data[0], (bad, data)
    typ, data = tagged(c, "SEARCH", "YOUNGER")
    assert typ == "BAD", data
    assert c.noop()[0] == "OK"
    assert search(c, "YOUNGER", "3600") == [3, 5]
    c.logout()


# ESORT (RFC 5267 3)

DATED = [
    # (subject, Date header); SORT (DATE) puts them 3 1 2 4 5.
    ("Plans", "Mon, 30 Nov 2026 10:00:00 +0000"),
    ("Re: Plans", "Tue, 01 Dec 2026 10:00:00 +0000"),
    ("Lunch", "Sun, 29 Nov 2026 10:00:00 +0000"),
    ("Re: Plans", "Wed, 02 Dec 2026 10:00:00 +0000"),
    ("Fwd: Lunch", "Thu, 03 Dec 2026 09:00:00 +0000"),
]


def test_sort_return_answers_esearch_in_sort_order(server):
    c = login(server)
    assert "ESORT" in c.capabilities, c.capabilities
    # With ESORT, the rest of RFC 5267: updates and PARTIAL (tests/test_imap_context.py).
    assert {"CONTEXT=SEARCH", "CONTEXT=SORT"} <= set(c.capabilities), c.capabilities
    for subject, date in DATED:
        append(c, subject, "x", head=f"Date: {date}\r\n")
    c.select("INBOX")
    items, is_uid = esearch(c, "SORT", "RETURN", "(MIN MAX COUNT ALL)", "(DATE)", "UTF-8", "ALL")
    # MIN and MAX are the first and last in sort order, not the lowest and highest numbers.
    assert items == {"MIN": "3", "MAX": "5", "COUNT": "5", "ALL": "3,1:2,4:5"} and not is_uid, items
    items, _ = esearch(c, "SORT", "RETURN", "(MIN MAX)", "(REVERSE DATE)", "UTF-8", "ALL")
    assert items == {"MIN": "5", "MAX": "3"}, items
    # ALL, written out, is exactly what plain SORT answers, for every order.
    for criteria in ("(DATE)", "(REVERSE DATE)", "(SUBJECT)", "(SUBJECT REVERSE DATE)", "(ARRIVAL)"):
        typ, data = c.sort(criteria, "UTF-8", "ALL")
        plain = [int(n) for n in data[0].split()]
        items, _ = esearch(c, "SORT", "RETURN", "(ALL)", criteria, "UTF-8", "ALL")
        assert expand(items["ALL"]) == plain, (criteria, items, plain)
    # RETURN () is ALL; search keys narrow the set.
    items, _ = esearch(c, "SORT", "RETURN", "()", "(DATE)", "UTF-8", "SUBJECT", "plans")
    assert items == {"ALL": "1:2,4"}, items
    # UID SORT answers UIDs, marked UID.
    uids = {n: uid_of(c, n) for n in range(1, 6)}
    items, is_uid = esearch(c, "UID", "SORT", "RETURN", "(MIN MAX COUNT ALL)", "(REVERSE DATE)",
                            "UTF-8", "ALL")
    assert is_uid, items
    assert items["MIN"] == str(uids[5]) and items["MAX"] == str(uids[3]) and items["COUNT"] == "5"
    assert expand(items["ALL"]) == [uids[n] for n in (5, 4, 2, 1, 3)], items
    # Nothing matches: COUNT 0 and nothing else.
    items, _ = esearch(c, "SORT", "RETURN", "(MIN MAX COUNT ALL)", "(DATE)", "UTF-8", "SUBJECT", "nothing")
    assert items == {"COUNT": "0"}, items
    # With WITHIN's keys too.
    items, _ = esearch(c, "SORT", "RETURN", "(COUNT)", "(DATE)", "UTF-8", "YOUNGER", "3600")
    assert items == {"COUNT": "5"}, items
    # Plain SORT still answers SORT.
    typ, data = c.sort("(DATE)", "UTF-8", "ALL")
    assert typ == "OK" and data[0] == b"3 1 2 4 5", data
    # Mistakes: BAD with the reason, and the session goes on.
    for args, reason in (
        (("RETURN", "(SAVE)", "(DATE)", "UTF-8", "ALL"), b"SEARCHRES"),
        (("RETURN", "(PARTIAL 1)", "(DATE)", "UTF-8", "ALL"), b"PARTIAL takes a range"),
        (("RETURN", "(BIGGEST)", "(DATE)", "UTF-8", "ALL"), b"RETURN option BIGGEST"),
        (("RETURN", "(MIN)", "UTF-8", "ALL"), b"expected '('"),
        (("RETURN", "(MIN)", "(COLOR)", "UTF-8", "ALL"), b"sort criterion"),
    ):
        typ, data = tagged(c, "SORT", *args)
        assert typ == "BAD" and reason in data[0], (args, data)
    typ, data = tagged(c, "SORT", "RETURN", "(COUNT)", "(DATE)", "KOI8-R", "ALL")
    assert b"BADCHARSET" in data[0], data
    assert c.noop()[0] == "OK"
    c.logout()


# PREVIEW (RFC 8970)

LONG = "  Hello   there,\r\n\r\n\tthis is the first   line.\r\n" + "word " * 100
ALTERNATIVE = (
    'Content-Type: multipart/alternative; boundary="b"\r\n',
    "--b\r\nContent-Type: text/html\r\n\r\n<p>the <b>HTML</b> one</p>\r\n"
    "--b\r\nContent-Type: text/plain\r\n\r\nthe plain one\r\n--b--",
)
HTML = (
    "Content-Type: text/html; charset=utf-8\r\n",
    "<html><head><title>T</title><style>p {color: red}</style></head>"
    "<body><p>Hi <b>Ann</b>,</p>\r\n<p>see this &amp; that</p></body></html>",
)
MIXED = (
    'Content-Type: multipart/mixed; boundary="m"\r\n',
    "--m\r\nContent-Type: text/plain\r\n\r\nsee the \"report\" attached \\o/\r\n"
    "--m\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--m--",
)
ONLY_PDF = (
    "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n",
    "JVBERi0xLjQK",
)
UTF8_QP = (
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n",
    "Caf=C3=A9 au lait =E2=98=95, =\r\nplease",
)


def previews(c, msgset, atts):
    """{sequence number: preview} of a FETCH, quoted strings and literals alike."""
    typ, data = c.fetch(msgset, atts)
    assert typ == "OK", data
    out = {}
    for item in data:
        if isinstance(item, tuple):
            head, literal = item
            assert head.rstrip().endswith(b"}") and b"PREVIEW {" in head, item
            out[int(head.split()[0])] = literal.decode()
        elif re.match(rb"\d+ \(", item):  # not the rest of a line after a literal
            m = re.match(rb'(\d+) \(.*PREVIEW "((?:[^"\\]|\\.)*)"', item)
            assert m, item
            out[int(m.group(1))] = re.sub(rb"\\(.)", rb"\1", m.group(2)).decode()
    return out


def test_preview_of_text_html_multipart_and_no_text(server):
    c = login(server)
    assert "PREVIEW" in c.capabilities, c.capabilities
    append(c, "long", LONG)
    for head, body in (ALTERNATIVE, HTML, MIXED, ONLY_PDF, UTF8_QP):
        append(c, "part", body, head="MIME-Version: 1.0\r\n" + head)
    c.select("INBOX")
    got = previews(c, "1:*", "(PREVIEW)")
    collapsed = " ".join(LONG.split())
    assert got[1] == collapsed[:256].rstrip(), got[1]
    assert len(got[1]) <= 256 and got[1].startswith("Hello there, this is the first line. word")
    assert got[2] == "the plain one", got
    assert got[3] == "Hi Ann, see this & that", got
    assert got[4] == 'see the "report" attached \\o/', got
    assert got[5] == "", got
    assert got[6] == "Café au lait ☕, please", got
    # LAZY is accepted and changes nothing; UID FETCH too; other items alongside.
    assert previews(c, "1:*", "(UID PREVIEW (LAZY) FLAGS)") == got
    typ, data = c.uid("FETCH", "1:*", "(PREVIEW (LAZY))")
    assert typ == "OK" and len([d for d in data if d != b")"]) == 6, data
    assert all(b"UID " in (d[0] if isinstance(d, tuple) else d) for d in data if d != b")"), data
    # Never NIL, and reading a preview does not mark a message \Seen.
    typ, data = c.fetch("1:*", "(PREVIEW FLAGS)")
    assert not any(b"PREVIEW NIL" in (d[0] if isinstance(d, tuple) else d) for d in data), data
    assert not any(b"\\Seen" in (d[0] if isinstance(d, tuple) else d) for d in data), data
    # Mistakes: BAD with the reason, and the session goes on.
    typ, data = tagged(c, "FETCH", "1", "(PREVIEW (LAZY EAGER))")
    assert typ == "BAD" and b"PREVIEW modifier EAGER" in data[0], data
    typ, data = tagged(c, "FETCH", "1", "(PREVIEW (LAZY)")
    assert typ == "BAD" and b"expected ')'" in data[0], data
    assert c.noop()[0] == "OK"
    assert previews(c, "2", "PREVIEW") == {2: "the plain one"}
    c.logout()


# OBJECTID (RFC 8474)

def test_objectid_mailbox_and_email_ids(server):
    c = login(server)
    assert "OBJECTID" in c.capabilities
    typ, data = c._simple_command("CREATE", "Ids")
    assert typ == "OK", data

    typ, data = c.status("Ids", "(MAILBOXID MESSAGES)")
    mailboxid = re.search(rb"MAILBOXID \((M\w+)\)", data[0]).group(1)
    # The id stays through a rename; a new mailbox of the old name gets another.
    assert c.rename("Ids", "Ids2")[0] == "OK"
    typ, data = c.status("Ids2", "(MAILBOXID)")
    assert re.search(rb"MAILBOXID \((M\w+)\)", data[0]).group(1) == mailboxid
    assert c.create("Ids")[0] == "OK"
    typ, data = c.status("Ids", "(MAILBOXID)")
    assert re.search(rb"MAILBOXID \((M\w+)\)", data[0]).group(1) != mailboxid
    typ, data = c.select("Ids2")
    assert c.untagged_responses.get("MAILBOXID") == [b"(" + mailboxid + b")"] or \
        any(b"MAILBOXID (" + mailboxid + b")" in l for l in c.untagged_responses.get("OK", []))
    assert c.append("Ids2", None, None, b"Subject: one\r\n\r\na\r\n")[0] == "OK"
    append(c, "two", "b")
    c.select("Ids2")
    assert c.copy("1", "INBOX")[0] == "OK"
    # A copy has the same EMAILID; another message another.
    typ, data = c.fetch("1", "(EMAILID THREADID)")
    text = data[0].decode()
    emailid = re.search(r"EMAILID \((E\w+)\)", text).group(1)
    assert "THREADID NIL" in text
    c.select("INBOX")
    ids = [re.search(rb"EMAILID \((E\w+)\)", d).group(1).decode()
           for d in c.fetch("1:2", "(EMAILID)")[1]]
    assert ids[1] == emailid and ids[0] != emailid, ids
    assert search(c, "EMAILID", emailid) == [2]
    assert search(c, "THREADID", "T1") == []
    c.logout()


# REPLACE (RFC 8508)

def test_replace_stores_the_new_draft_then_expunges_the_old(server):
    imaplib.Commands.setdefault("REPLACE", ("SELECTED",))
    c = login(server)
    assert "REPLACE" in c.capabilities
    c.select("Drafts")
    draft = b"From: alice@example.test\r\nSubject: draft %d\r\n\r\nversion %d\r\n"
    assert c.append("Drafts", "(\\Draft)", None, draft % (1, 1))[0] == "OK"
    c.select("Drafts")
    c.literal = draft % (2, 2)
    typ, data = c._simple_command("UID", "REPLACE", "1", "Drafts")
    assert typ == "OK", data
    oks = [l.decode() for l in c.untagged_responses.pop("OK", [])]
    assert any(re.match(r"\[APPENDUID \d+ 2\] Replacement Message ID", l) for l in oks), oks
    assert c.untagged_responses.pop("EXPUNGE", []) == [b"1"]
    typ, data = c.uid("FETCH", "1:*", "(BODY.PEEK[TEXT] FLAGS)")
    bodies = [d for d in data if isinstance(d, tuple)]
    assert len(bodies) == 1 and b"version 2" in bodies[0][1], data
    # By sequence number, into another mailbox; a number past the end is BAD, a missing
    # target mailbox TRYCREATE with the old message kept.
    c.literal = draft % (3, 3)
    typ, data = c._simple_command("REPLACE", "1", "INBOX")
    assert typ == "OK", data
    c.select("INBOX")
    assert search(c, "SUBJECT", "draft") == [1]
    c.literal = draft % (4, 4)
    try:
        typ, data = c._simple_command("REPLACE", "5", "INBOX")
    except imaplib.IMAP4.error as e:
        assert "sequence number" in str(e), e
    else:
        raise AssertionError(f"expected BAD, got {typ} {data}")
    c.literal = draft % (5, 5)
    typ, data = c._simple_command("REPLACE", "1", "Nowhere")
    assert typ == "NO" and b"TRYCREATE" in data[0], data
    assert search(c, "ALL") == [1]
    c.logout()


# SEARCHRES (RFC 5182)

def test_searchres_saves_a_result_for_dollar(server):
    c = login(server)
    assert "SEARCHRES" in c.capabilities
    for i in range(1, 6):
        append(c, f"msg {i}", "x" * i)
    c.select("INBOX")
    # SAVE alone answers nothing but OK.
    typ, data = c._simple_command("SEARCH", "RETURN", "(SAVE)", "LARGER", "40")
    assert typ == "OK", data
    assert "ESEARCH" not in c.untagged_responses and "SEARCH" not in c.untagged_responses
    typ, data = c.fetch("$", "(UID)")
    assert [int(re.search(rb"UID (\d+)", d).group(1)) for d in data] == [3, 4, 5], data
    # $ in STORE, in search keys, in UID commands; an expunged message drops out.
    assert c.store("$", "+FLAGS", "(\\Flagged)")[0] == "OK"
    assert search(c, "FLAGGED") == [3, 4, 5]
    assert search(c, "$", "SUBJECT", "msg 4") == [4]
    assert c.store("4", "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert c.expunge()[0] == "OK"
    typ, data = c.uid("FETCH", "$", "(UID)")
    assert [int(re.search(rb"UID (\d+)", d).group(1)) for d in data] == [3, 5], data
    assert c.copy("$", "Archive")[0] == "OK"
    # With MIN and MAX only those are saved; with ALL too, every match.
    items, _ = esearch(c, "SEARCH", "RETURN", "(MIN MAX SAVE)", "ALL")
    assert items == {"MIN": "1", "MAX": "4"}, items
    assert search(c, "$") == [1, 4]
    items, _ = esearch(c, "SEARCH", "RETURN", "(SAVE COUNT)", "SMALLER", "41")
    assert items == {"COUNT": "2"}, items
    assert search(c, "$") == [1, 2]
    # An empty result: $ names nothing.
    c._simple_command("SEARCH", "RETURN", "(SAVE)", "SUBJECT", "nothing-like-this")
    assert search(c, "$") == []
    assert c.fetch("$", "(UID)")[1] == [None]
    # A new SELECT forgets the result.
    c._simple_command("SEARCH", "RETURN", "(SAVE)", "ALL")
    c.select("Archive")
    assert search(c, "$") == []
    c.logout()
