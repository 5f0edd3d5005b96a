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


def fill(c, box, heads, dates=None):
    """A new folder holding one message per header (lines joined), selected; `dates` gives
    each message's internal date (IMAP date-time), the date a message without Date sorts by."""
    assert c.create(box)[0] == "OK"
    for n, head in enumerate(heads, 1):
        when = f'"{dates[n - 1]}"' if dates else None
        msg = ("\r\n".join(head) + "\r\n\r\n" + f"{n}\r\n").encode()
        assert c.append(box, None, when, msg)[0] == "OK"
    assert c.select(box)[0] == "OK"


def test_sort_collation_subjects_groups_and_display_names(server):
    """As imaptest's sort-subject, sort-addresses and sort-display-to: strings compare in
    i;unicode-casemap (upper case: "[" and "_" after letters), a group's first address is
    its name, DISPLAYTO falls back to mailbox@host, then to the mailbox."""
    c = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=30)
    c.login(ALICE, PASSWORD)
    subjects = [
        "a", "C", "b", "_", "[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "b (a)", "Re: [FWD: c]",
        "[xyz]", None, "=?iso-8859-1?q?_?=", "Re: =?utf-8?q?b?=", "=?iso-8859-1?q?RE:_C?=",
        "=?us-ascii?b?UmU6IGM=?=", "Ad: Re: Ad: Re: Ad: x", "re: [fwd: [fwd: re: [fwd: babylon]]]",
    ]
    fill(c, "Subjects", [[f"Subject: {s}"] if s is not None else ["X-Note: no subject"] for s in subjects])
    assert sort(c, "(SUBJECT)", "ALL") == [9, 10, 1, 14, 3, 5, 11, 6, 15, 2, 7, 12, 13, 8, 4]
    assert sort(c, "(REVERSE SUBJECT)", "ALL") == [4, 8, 2, 7, 12, 13, 15, 6, 3, 5, 11, 14, 1, 9, 10]

    fill(c, "Groups", [
        ["Cc: user2@domain2.org (foo bar)"],
        ["Cc: user2: blah@domain1.org;"],
        ["Cc: user1@domain1.org"],
    ], dates=["22-Feb-2008 00:06:23 +0000", "22-Feb-2008 01:06:23 +0000", "22-Feb-2008 02:06:23 +0000"])
    # "user2" (the group's name) ties with 1's mailbox: mailbox order between them.
    assert sort(c, "(CC)", "ALL") == [3, 1, 2]
    assert sort(c, "(REVERSE CC)", "ALL") == [1, 2, 3]
    assert sort(c, "(CC REVERSE ARRIVAL)", "ALL") == [3, 2, 1]

    fill(c, "Display", [
        ["To: foo bar <a@b.c>"],
        ["To: b@c.d"],
        ["To: d"],
        ["To: =?iso-8859-1?q?foo_aar?= <e@f.g>"],
        ["To: =?iso-8859-1?q?foo_car?= <f@g.h>"],
        ["To: a: xx@xx.org, yy@yy.org;"],
        ["To: z: aa@aa.org, bb@bb.org;"],
        ["To: empty:;"],
    ])
    # a (group), b@c.d, d, empty (group), foo aar, foo bar, foo car, z (group).
    assert sort(c, "(DISPLAYTO)", "ALL") == [6, 2, 3, 8, 4, 1, 5, 7]
    assert sort(c, "(REVERSE DISPLAYTO)", "ALL") == [7, 5, 1, 4, 8, 3, 2, 6]
    c.logout()


def test_thread_references_breaks_a_presumed_parent(server):
    """As imaptest's thread test: 2's References presume c's parent is a; c names 2 as its
    parent, a link that would loop. The presumed link goes anyway, so c heads its own thread,
    which sorts first by its (internal) date."""
    c = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=30)
    c.login(ALICE, PASSWORD)
    fill(c, "Loop", [
        ["Message-ID: <a@b>"],
        ["Message-Id: <b@b>", "References: <a@b> <c@b>"],
        ["Message-Id: <c@b>", "References: <b@b>"],
    ], dates=["22-Feb-2008 17:06:23 +0000", "22-Feb-2008 15:06:23 +0000", "22-Feb-2008 16:06:25 +0000"])
    typ, data = c.thread("REFERENCES", "US-ASCII", "ALL")
    assert typ == "OK" and data[0] == b"(3 2)(1)", data
    assert c.store("1", "+FLAGS", "\\Deleted")[0] == "OK"
    assert c.expunge()[0] == "OK"
    typ, data = c.thread("REFERENCES", "US-ASCII", "ALL")
    assert typ == "OK" and data[0] == b"(2 1)", data
    c.logout()
