"""Calendars and contacts over CalDAV and CardDAV, with real clients: Debian's python3-caldav
(run by Debian's python3, tests/dav_caldav_client.py) and vdirsyncer, against the server's HTTPS
listener; plain HTTP requests for what the clients do not show (logins, redirects, errors)."""

import base64
import hashlib
import json
import plistlib
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import DOMAIN, PASSWORD
from helpers import ALICE, BOB, insecure_ctx
from test_postgres import database, node  # noqa: F401 (database is a fixture)

HERE = Path(__file__).parent
# The Debian packages scripts/deps installs: python3-caldav for Debian's python3, vdirsyncer.
DEBIAN_PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.xdist_group("dav")


@pytest.fixture
def dav_server(make_server):
    s = make_server(listeners=("smtp", "https", "http"))
    s.add_user(ALICE)
    s.add_user(BOB)
    s.start()
    return s


def base(s, scheme="https"):
    return f"{scheme}://127.0.0.1:{s.port(scheme)}"


def request(s, method, path, body=b"", user=ALICE, password=PASSWORD, headers=None, scheme="https"):
    """(status, headers, body) of one request; no redirects followed."""
    h = dict(headers or {})
    if user is not None:
        h["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(base(s, scheme) + path, data=body or None, method=method, headers=h)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=insecure_ctx()))
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def caldav_client(s, step, user=ALICE):
    r = subprocess.run([DEBIAN_PYTHON, str(HERE / "dav_caldav_client.py"), base(s), user, PASSWORD, step],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, f"{r.stderr}\n{r.stdout}\n{s.log_text()[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_discovery_logins_and_owners(dav_server):
    s = dav_server
    for path in ("/.well-known/caldav", "/.well-known/carddav"):
        status, headers, _ = request(s, "PROPFIND", path, user=None)
        assert status == 301 and headers["Location"] == "/dav/", (path, status)
    status, headers, body = request(s, "PROPFIND", "/dav/", user=None)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic"), body
    status, _, body = request(s, "PROPFIND", "/dav/", password="wrong password")
    assert status == 401 and b"full email address" in body
    status, headers, _ = request(s, "OPTIONS", "/dav/", user=None)
    assert status == 200 and "calendar-access" in headers["DAV"] and "addressbook" in headers["DAV"]
    status, _, body = request(s, "PROPFIND", "/dav/principals/" + ALICE + "/", headers={"Depth": "0"},
                              body=b'<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">'
                                   b'<d:prop><c:calendar-home-set/></d:prop></d:propfind>')
    assert status == 207 and f"/dav/calendars/{ALICE}/".encode() in body, body
    # Bob reaches his own calendars, not Alice's.
    status, _, body = request(s, "PROPFIND", f"/dav/calendars/{ALICE}/", user=BOB)
    assert status == 403 and b"only the owner" in body
    status, _, body = request(s, "PROPFIND", f"/dav/calendars/{BOB}/", user=BOB, headers={"Depth": "1"})
    assert status == 207 and f"/dav/calendars/{BOB}/default/".encode() in body
    # Plain HTTP from this machine is allowed, as for the other protocols' passwords.
    status, _, _ = request(s, "PROPFIND", "/dav/", scheme="http", headers={"Depth": "0"})
    assert status == 207
    # Where clients that look the domain up find the service (RFC 6764).
    dns = s.cli("dns", DOMAIN).stdout
    port = s.port("https")
    for svc in ("_caldavs", "_carddavs"):
        assert f"{svc}._tcp.{DOMAIN}.  SRV  0 1 {port} {s.hostname}." in dns, dns
        assert f'{svc}._tcp.{DOMAIN}.  TXT  "path=/dav/"' in dns, dns


def test_caldav_library_makes_calendars_and_queries_recurrences_by_time_range(dav_server):
    seen = caldav_client(dav_server, "calendars")
    assert seen["principal"].endswith(f"/dav/principals/{ALICE}/")
    assert seen["before"] == ["Calendar"]
    assert seen["after"] == ["Calendar", "Work"]
    assert len(seen["summer"]) == 1 and seen["summer"][0].startswith("standup"), seen
    assert seen["summer_wrong_hour"] == []
    assert seen["winter"] == seen["summer"]
    assert seen["after_count"] == []
    assert seen["january"] == ["Lunch"]
    # 23 and 30 March and 6 April at 09:00 in Berlin: 08:00Z in winter, 07:00Z in summer.
    assert seen["instances"] == ["2026-03-23T08:00:00+00:00", "2026-03-30T07:00:00+00:00",
                                 "2026-04-06T07:00:00+00:00"], seen
    assert seen["lunch"] == ["Lunch"]
    assert seen["after_delete"] == ["Standup"]


def test_caldav_library_syncs_by_token(dav_server):
    seen = caldav_client(dav_server, "sync")
    assert seen["first"] == ["A", "B"]
    assert seen["token_changed"]
    # Changed (a), removed (b) and new (c) since the first token; only the changes load.
    assert len(seen["second"]) == 3, seen
    assert seen["second_loaded"] == ["A changed", "C"]
    assert seen["third"] == []


def test_errors_are_clear(dav_server):
    s = dav_server
    cal = f"/dav/calendars/{ALICE}/default/"
    status, _, body = request(s, "PUT", cal + "x.ics", b"not a calendar")
    assert status == 403 and b"valid-calendar-data" in body
    # Past dav.max_resource_size (1M), within what the server reads to say so.
    big = b"BEGIN:VCALENDAR\r\n" + b"X" * (1100 << 10) + b"\r\nEND:VCALENDAR\r\n"
    status, _, body = request(s, "PUT", cal + "big.ics", big)
    assert status == 403 and b"max-resource-size" in body and b"dav.max_resource_size" in body, body
    status, _, body = request(s, "REPORT", cal, b'<d:sync-collection xmlns:d="DAV:"><d:sync-token>'
                              b'urn:x-postern:sync:1-1-1</d:sync-token><d:prop/></d:sync-collection>')
    assert status == 403 and b"valid-sync-token" in body


def vdirsyncer(config, *args):
    r = subprocess.run(["vdirsyncer", "-c", str(config), *args], capture_output=True, text=True,
                       timeout=240, input="y\n" * 10)
    assert r.returncode == 0, f"vdirsyncer {args}: {r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


VCARD = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{name}\r\nN:{name};;;;\r\nEND:VCARD\r\n"
EVENT = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//postern tests//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\n"
         "DTSTAMP:20260101T000000Z\r\nDTSTART:20260301T100000Z\r\nDTEND:20260301T110000Z\r\n"
         "SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")


def server_items(s, collection, ext):
    """uid-ish file name -> content, of every resource in the collection."""
    status, _, body = request(s, "PROPFIND", collection, headers={"Depth": "1"},
                              body=b'<d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>')
    assert status == 207
    out = {}
    for href in body.decode().split("<d:href>")[1:]:
        href = href.split("</d:href>")[0]
        if href.endswith(ext):
            out[href.rsplit("/", 1)[1]] = request(s, "GET", href)[2].decode()
    return out


def test_vdirsyncer_syncs_a_calendar_and_an_address_book_both_ways(dav_server, tmp_root):
    s = dav_server
    cal = f"/dav/calendars/{ALICE}/default/"
    book = f"/dav/addressbooks/{ALICE}/default/"
    # On the server first: one event, one contact.
    assert request(s, "PUT", cal + "server.ics", EVENT.format(uid="server-ev", summary="From server").encode(),
                   headers={"Content-Type": "text/calendar"})[0] == 201
    assert request(s, "PUT", book + "server.vcf", VCARD.format(uid="server-card", name="Server Person").encode(),
                   headers={"Content-Type": "text/vcard"})[0] == 201
    local = tmp_root / "vdir"
    (local / "cal").mkdir(parents=True)
    (local / "book").mkdir(parents=True)
    (local / "cal" / "local-ev.ics").write_text(EVENT.format(uid="local-ev", summary="From laptop"))
    (local / "book" / "local-card.vcf").write_text(VCARD.format(uid="local-card", name="Local Person"))
    # The server's own certificate, pinned (vdirsyncer takes a fingerprint or a CA file).
    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", s.port("https"))))
    fingerprint = hashlib.sha256(der).hexdigest()
    config = tmp_root / "vdirsyncer.conf"
    config.write_text(f"""
[general]
status_path = "{tmp_root / 'vdir-status'}"

[pair cal]
a = "cal_local"
b = "cal_remote"
collections = null
conflict_resolution = "b wins"

[storage cal_local]
type = "filesystem"
path = "{local / 'cal'}"
fileext = ".ics"

[storage cal_remote]
type = "caldav"
url = "{base(s)}{cal}"
username = "{ALICE}"
password = "{PASSWORD}"
verify_fingerprint = "{fingerprint}"

[pair book]
a = "book_local"
b = "book_remote"
collections = null
conflict_resolution = "b wins"

[storage book_local]
type = "filesystem"
path = "{local / 'book'}"
fileext = ".vcf"

[storage book_remote]
type = "carddav"
url = "{base(s)}{book}"
username = "{ALICE}"
password = "{PASSWORD}"
verify_fingerprint = "{fingerprint}"
""")
    vdirsyncer(config, "discover")
    vdirsyncer(config, "sync")
    local_events = sorted(p.read_text() for p in (local / "cal").glob("*.ics"))
    assert len(local_events) == 2 and any("From server" in e for e in local_events), local_events
    local_cards = [p.read_text() for p in (local / "book").glob("*.vcf")]
    assert len(local_cards) == 2 and any("Server Person" in c for c in local_cards)
    events = server_items(s, cal, ".ics")
    assert any("From laptop" in v for v in events.values()), events
    cards = server_items(s, book, ".vcf")
    assert any("Local Person" in v for v in cards.values()), cards
    # Changed and removed on the laptop, changed on the server: each reaches the other side.
    (local / "cal" / "local-ev.ics").write_text(EVENT.format(uid="local-ev", summary="Changed on laptop"))
    (local / "book" / "local-card.vcf").unlink()
    status, headers, _ = request(s, "GET", book + "server.vcf")
    assert request(s, "PUT", book + "server.vcf",
                   VCARD.format(uid="server-card", name="Renamed Person").encode(),
                   headers={"If-Match": headers["ETag"]})[0] == 204
    vdirsyncer(config, "sync")
    events = server_items(s, cal, ".ics")
    assert any("Changed on laptop" in v for v in events.values()), events
    cards = server_items(s, book, ".vcf")
    assert list(cards) == ["server.vcf"] and "Renamed Person" in cards["server.vcf"], cards
    assert any("Renamed Person" in p.read_text() for p in (local / "book").glob("*.vcf"))


def test_an_account_backup_brings_a_deleted_calendar_back(dav_server, tmp_root):
    s = dav_server
    work = f"/dav/calendars/{ALICE}/work/"
    assert request(s, "MKCALENDAR", work)[0] == 201
    for uid in ("one", "two"):
        assert request(s, "PUT", f"{work}{uid}.ics", EVENT.format(uid=uid, summary=uid).encode())[0] == 201
    backups = tmp_root / "backups"
    r = s.cli("backup", backups, "--user", ALICE)
    assert "verified" in r.stdout, r.stdout
    assert request(s, "DELETE", work)[0] == 204
    assert request(s, "PROPFIND", work)[0] == 404
    r = s.cli("restore", backups, "--user", ALICE)
    assert "calendar work: 2 resource(s) restored (created)" in r.stdout, r.stdout
    assert sorted(server_items(s, work, ".ics")) == ["one.ics", "two.ics"]
    # A time-range query finds them: what the store keeps beside them came back too.
    status, _, body = request(s, "REPORT", work, headers={"Depth": "1"}, body=(
        b'<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/>'
        b'</d:prop><c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT">'
        b'<c:time-range start="20260301T000000Z" end="20260302T000000Z"/></c:comp-filter></c:comp-filter>'
        b'</c:filter></c:calendar-query>'))
    assert status == 207 and body.count(b"<d:response>") == 2, body


def test_calendars_and_address_books_export_and_import_as_files(dav_server, tmp_root):
    s = dav_server
    cal = f"/dav/calendars/{ALICE}/default/"
    for uid in ("one", "two"):
        assert request(s, "PUT", f"{cal}{uid}.ics", EVENT.format(uid=uid, summary=f"Event {uid}").encode())[0] == 201
    out = tmp_root / "alice.ics"
    s.cli("dav", "export", ALICE, "default", "-o", out)
    text = out.read_text()
    assert text.startswith("BEGIN:VCALENDAR") and text.count("BEGIN:VEVENT") == 2, text
    assert "SUMMARY:Event one" in text and "SUMMARY:Event two" in text
    # Into a new calendar of Bob's: each event a resource, found by a time-range query.
    r = s.cli("dav", "import", BOB, "from-alice", out)
    assert "calendar from-alice of bob@example.test: 2 stored (created)" in r.stdout, r.stdout
    bobs = f"/dav/calendars/{BOB}/from-alice/"
    assert request(s, "GET", f"{bobs}one.ics", user=BOB)[0] == 200, "an object is named by its UID"
    status, _, body = request(s, "REPORT", bobs, user=BOB, headers={"Depth": "1"}, body=(
        b'<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/>'
        b'</d:prop><c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT">'
        b'<c:time-range start="20260301T000000Z" end="20260302T000000Z"/></c:comp-filter></c:comp-filter>'
        b'</c:filter></c:calendar-query>'))
    assert status == 207 and body.count(b"<d:response>") == 2, body
    # Again: the same UIDs replace what is there.
    r = s.cli("dav", "import", BOB, "from-alice", out)
    assert "2 stored" in r.stdout and "(created)" not in r.stdout
    vcf = tmp_root / "cards.vcf"
    vcf.write_text(VCARD.format(uid="c1", name="Carol") + VCARD.format(uid="c2", name="Dan") + "garbage\r\n")
    r = s.cli("dav", "import", ALICE, "default", vcf, "--addressbook")
    assert "address book default of alice@example.test: 2 stored" in r.stdout, r.stdout
    r = s.cli("dav", "export", ALICE, "default", "--addressbook")
    assert r.stdout.count("BEGIN:VCARD") == 2 and "FN:Dan" in r.stdout
    r = s.cli("dav", "import", ALICE, "directory", vcf, "--addressbook", check=False)
    assert r.returncode != 0 and "the domain's" in r.stderr, r.stderr
    r = s.cli("dav", "export", ALICE, "nowhere", check=False)
    assert r.returncode != 0 and "has no calendar named nowhere" in r.stderr, r.stderr


def test_the_apple_profile_sets_up_calendars_and_contacts(make_server):
    s = make_server(listeners=("smtp", "submissions", "imaps", "https", "http"))
    s.add_user(ALICE)
    s.start()
    status, headers, body = request(s, "GET", f"/apple/profile.mobileconfig?emailaddress={ALICE}", user=None)
    assert status == 200, body
    p = plistlib.loads(body)
    kinds = {d["PayloadType"]: d for d in p["PayloadContent"]}
    cal, card = kinds["com.apple.caldav.account"], kinds["com.apple.carddav.account"]
    assert cal["CalDAVHostName"] == s.hostname and cal["CalDAVPort"] == s.port("https")
    assert cal["CalDAVUsername"] == ALICE and cal["CalDAVUseSSL"] is True
    assert cal["CalDAVPrincipalURL"] == f"/dav/principals/{ALICE}/"
    assert card["CardDAVPort"] == s.port("https") and card["CardDAVUsername"] == ALICE
    assert len({d["PayloadUUID"] for d in p["PayloadContent"]}) == len(p["PayloadContent"])
    # The principal the profile names answers to the account's password.
    status, _, body = request(s, "PROPFIND", cal["CalDAVPrincipalURL"], headers={"Depth": "0"})
    assert status == 207 and b"calendar-home-set" in body


def test_two_postgresql_nodes_share_calendars_and_sync_tokens(make_server, database):
    a = node(make_server, database, listeners=("https",))
    b = node(make_server, database, listeners=("https",))
    a.cli("domain", "add", DOMAIN)
    a.add_user(ALICE)
    a.start()
    b.start()
    cal = f"/dav/calendars/{ALICE}/default/"
    sync = (b'<d:sync-collection xmlns:d="DAV:"><d:sync-token>%s</d:sync-token><d:sync-level>1'
            b'</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>')
    assert request(a, "PUT", cal + "x.ics", EVENT.format(uid="x", summary="on a").encode())[0] == 201
    status, _, body = request(b, "REPORT", cal, sync % b"")
    assert status == 207 and body.count(b"<d:response>") == 1, body
    token = body.split(b"<d:sync-token>")[1].split(b"</d:sync-token>")[0]
    assert request(b, "DELETE", cal + "x.ics")[0] == 204
    status, _, body = request(a, "REPORT", cal, sync % token)
    assert status == 207 and b"x.ics" in body and b"404" in body, body
    # python3-caldav's sync by token on node b, over the same database.
    seen = caldav_client(b, "sync")
    assert seen["first"] == ["A", "B"] and seen["second_loaded"] == ["A changed", "C"], seen


def test_the_server_expands_recurrences_when_asked(dav_server):
    s = dav_server
    cal = f"/dav/calendars/{ALICE}/default/"
    daily = EVENT.format(uid="daily", summary="Daily").replace(
        "SUMMARY:Daily\r\n", "SUMMARY:Daily\r\nRRULE:FREQ=DAILY;COUNT=5\r\n")
    assert request(s, "PUT", cal + "daily.ics", daily.encode())[0] == 201
    query = (b'<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop>'
             b'<c:calendar-data><c:expand start="20260302T000000Z" end="20260304T000000Z"/></c:calendar-data>'
             b'</d:prop><c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT">'
             b'<c:time-range start="20260302T000000Z" end="20260304T000000Z"/></c:comp-filter>'
             b'</c:comp-filter></c:filter></c:calendar-query>')
    status, _, body = request(s, "REPORT", cal, query, headers={"Depth": "1"})
    text = body.decode().replace("&#13;", "\r")
    assert status == 207 and text.count("BEGIN:VEVENT") == 2 and "RRULE" not in text, text
    assert "RECURRENCE-ID:20260302T100000Z" in text and "RECURRENCE-ID:20260303T100000Z" in text
    # GET still gives the object as stored.
    assert b"RRULE:FREQ=DAILY;COUNT=5" in request(s, "GET", cal + "daily.ics")[2]


def test_the_setup_page_says_where_calendars_are(dav_server):
    s = dav_server
    status, _, body = request(s, "GET", "/", user=None, scheme="http")
    page = body.decode()
    assert status == 200 and "Calendars and contacts" in page, page
    assert f"https://{s.hostname}:{s.port('https')}/dav/" in page
