"""SORT and THREAD (RFC 5256) with SORT=DISPLAY (RFC 5957), as Roundcube, mutt and Evolution use
them, over imaplib against the real server: every sort key, REVERSE, UID variants, search keys
narrowing the set, and both thread algorithms."""

import imaplib

from conftest import PASSWORD
from helpers import ALICE, insecure_ctx

MESSAGES = [
    # (From, To, Cc, Subject, Date, Message-ID, References, body)
    ('"Zed Able" <zed@far.test>', "bob@x.test", "", "Plans", "Mon, 30 Nov 2026 10:00:00 +0000", "<a@far>", "", "one"),
    ("amy@far.test", "carol@x.test", "dan@x.test", "Re: Plans", "Tue, 01 Dec 2026 10:00:00 +0000", "<b@far>", "<a@far>", "two two"),
    ('"Bea" <yan@far.test>', "alan@x.test", "", "Lunch", "Sun, 29 Nov 2026 10:00:00 +0000", "<c@far>", "", "three three three"),
    ("cid@far.test", "bob@x.test", "abe@x.test", "Re: [team] Plans", "Wed, 02 Dec 2026 10:00:00 +0000", "<d@far>", "<a@far> <b@far>", "four"),
    ("bo@far.test", "", "", "Fwd: Lunch", "Thu, 03 Dec 2026 09:00:00 +0000", "<e@far>", "", "five five"),
]


def connect(server):
    c = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=30)
    c.login(ALICE, PASSWORD)
    for frm, to, cc, subject, date, mid, refs, body in MESSAGES:
        head = f"From: {frm}\r\n" + (f"To: {to}\r\n" if to else "") + (f"Cc: {cc}\r\n" if cc else "")
        head += f"Subject: {subject}\r\nDate: {date}\r\nMessage-ID: {mid}\r\n"
        head += f"References: {refs}\r\n" if refs else ""
        assert c.append("INBOX", None, None, (head + "\r\n" + body + "\r\n").encode())[0] == "OK"
    c.select("INBOX")
    return c


def tagged(c, *args):
    """(type, data) of a command, BAD included (imaplib raises on BAD)."""
    try:
        return c._simple_command(*args)
    except imaplib.IMAP4.error as e:
        return "BAD", [str(e).encode()]


def sort(c, criteria, *keys, uid=False):
    typ, data = (c.uid("SORT", criteria, "UTF-8", *keys) if uid else c.sort(criteria, "UTF-8", *keys))
    assert typ == "OK", data
    return [int(n) for n in data[0].split()]


def test_sort_every_key_and_reverse(server):
    c = connect(server)
    caps = c.capabilities
    for cap in ("SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES"):
        assert cap in caps, caps
    assert sort(c, "(DATE)", "ALL") == [3, 1, 2, 4, 5]
    assert sort(c, "(REVERSE DATE)", "ALL") == [5, 4, 2, 1, 3]
    assert sort(c, "(ARRIVAL)", "ALL") == [1, 2, 3, 4, 5]
    # Base subjects: "lunch" (3, 5) before "plans" (1, 2, 4), ties in mailbox order.
    assert sort(c, "(SUBJECT)", "ALL") == [3, 5, 1, 2, 4]
    assert sort(c, "(SUBJECT REVERSE DATE)", "ALL") == [5, 3, 4, 2, 1]
    # The mailbox part of the first address: amy, bo, cid, yan, zed.
    assert sort(c, "(FROM)", "ALL") == [2, 5, 4, 3, 1]
    # Display names where there are (Bea, Zed Able), else the address.
    assert sort(c, "(DISPLAYFROM)", "ALL") == [2, 3, 5, 4, 1]
    # No To sorts first (empty), then alan, bob (1, 4 in order), carol.
    assert sort(c, "(TO)", "ALL") == [5, 3, 1, 4, 2]
    assert sort(c, "(CC)", "ALL") == [1, 3, 5, 4, 2]
    assert sort(c, "(SIZE)", "ALL") == sorted([1, 2, 3, 4, 5], key=lambda n: (len(raw_of(c, n)), n))
    # Search keys narrow the set; UID SORT answers UIDs.
    assert sort(c, "(DATE)", "SUBJECT", "plans") == [1, 2, 4]
    uids = {n: int(c.fetch(str(n), "(UID)")[1][0].split()[2].rstrip(b")")) for n in range(1, 6)}
    assert sort(c, "(REVERSE DATE)", "ALL", uid=True) == [uids[n] for n in [5, 4, 2, 1, 3]]
    # Mistakes get BAD with the reason, and the session goes on.
    typ, data = tagged(c, "SORT", "(COLOR)", "UTF-8", "ALL")
    assert typ == "BAD" and b"sort criterion" in data[0], data
    typ, data = tagged(c, "SORT", "(DATE)", "KOI8-R", "ALL")
    assert b"BADCHARSET" in data[0], data
    assert c.noop()[0] == "OK"
    c.logout()


def raw_of(c, n):
    return c.fetch(str(n), "(RFC822)")[1][0][1]


def test_thread_by_subject_and_by_references(server):
    c = connect(server)
    typ, data = c.thread("ORDEREDSUBJECT", "UTF-8", "ALL")
    assert typ == "OK", data
    # lunch: 3 then 5; plans: 1, 2, 4 by date; threads by their first message's date.
    assert data[0] == b"(3 5)(1 (2)(4))", data
    typ, data = c.thread("REFERENCES", "UTF-8", "ALL")
    assert typ == "OK", data
    # 2 answers 1, 4 answers 2; 5 ("Fwd: Lunch") joins 3 by subject.
    assert data[0] == b"(3 5)(1 2 4)", data
    typ, data = c.uid("THREAD", "REFERENCES", "UTF-8", "SUBJECT", "plans")
    uids = [int(c.fetch(str(n), "(UID)")[1][0].split()[2].rstrip(b")")) for n in (1, 2, 4)]
    assert data[0] == f"({uids[0]} {uids[1]} {uids[2]})".encode(), data
    typ, data = tagged(c, "THREAD", "BYCOLOR", "UTF-8", "ALL")
    assert typ == "BAD" and b"THREAD algorithm" in data[0], data
    c.logout()
