"""The webmail (/mail) over real HTTPS: its JSON API (folders, lists, reading, parts,
actions, search, the session and CSRF rules), then headless Chromium: a corpus of hostile HTML
messages in which no script may run and nothing may be fetched from elsewhere, and a user who
reads, moves, deletes, searches and sees new mail arrive without reloading. Screenshots go to
target/test-artifacts/webmail/."""

import http.client
import http.server
import imaplib
import os
import re
import threading
import time
import urllib.parse

import pytest

from conftest import DOMAIN, PASSWORD, ROOT
from helpers import ALICE, BOB, insecure_ctx, mx_send, wait_for
from test_web import Browser

SHOTS = ROOT / "target" / "test-artifacts" / "webmail"

PLAIN = b"""From: Carol Far <carol@far.test>\r
To: alice@example.test\r
Subject: Plain hello\r
Message-ID: <plain-1@far.test>\r
Date: Thu, 01 Jan 2026 10:00:00 +0000\r
\r
Hello Alice,\r
lunch on Friday?\r
"""

HTML = b"""From: News <news@far.test>\r
To: alice@example.test\r
Subject: HTML letter\r
Message-ID: <html-1@far.test>\r
Date: Fri, 02 Jan 2026 10:00:00 +0000\r
MIME-Version: 1.0\r
Content-Type: multipart/related; boundary=rel\r
\r
--rel\r
Content-Type: text/html; charset=utf-8\r
\r
<html><body><h2 id="greeting">Big news</h2><p>Our logo: <img id="logo" src="cid:logo@far.test"></p>\r
<p><img id="tracker" src="http://127.0.0.1:REMOTE/remote.png"></p></body></html>\r
--rel\r
Content-Type: image/png\r
Content-ID: <logo@far.test>\r
Content-Transfer-Encoding: base64\r
\r
iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==\r
--rel--\r
"""

MIXED = """From: Dave <dave@far.test>\r
To: alice@example.test\r
Subject: Report attached\r
Message-ID: <mixed-1@far.test>\r
Date: Sat, 03 Jan 2026 10:00:00 +0000\r
MIME-Version: 1.0\r
Content-Type: multipart/mixed; boundary=mix\r
\r
--mix\r
Content-Type: text/plain; charset=utf-8\r
\r
The numbers are in the file.\r
--mix\r
Content-Type: application/pdf; name="Bericht März.pdf"\r
Content-Disposition: attachment; filename*=utf-8''Bericht%20M%C3%A4rz.pdf\r
Content-Transfer-Encoding: base64\r
\r
JVBERi0xLjQKJcfsj6IK\r
--mix\r
Content-Type: text/html; name="page.html"\r
Content-Disposition: attachment; filename="page.html"\r
\r
<script>alert(1)</script>\r
--mix--\r
""".encode()


def mail_server(make_server):
    s = make_server(listeners=("smtp", "imaps", "https"), extra_config="""
[smtp]
pregreet_wait_ms = 0
[auth]
failure_delay_ms = 10
""")
    s.add_user(ALICE)
    s.add_user(BOB)
    return s


def deliver(s, raw, to=ALICE, sender="someone@far.test"):
    mx_send(s, sender, [to], raw)


def folders(b):
    st, r = b.api("GET", "/me/mail/folders")
    assert st == 200, r
    return {f["name"]: f for f in r["folders"]}


def listing(b, folder, **q):
    st, r = b.api("GET", f"/me/mail/folders/{folder}/messages?" + urllib.parse.urlencode(q))
    assert st == 200, r
    return r


def test_folders_lists_reading_and_actions(make_server):
    s = mail_server(make_server)
    s.start()
    for raw in (PLAIN, HTML.replace(b"REMOTE", b"9"), MIXED):
        deliver(s, raw)
    b = Browser(s)
    # Without a session: nothing, and no password dialog for the page's own script.
    assert b.api("GET", "/me/mail/folders")[0] == 401
    st, page = b.call("GET", "/mail")
    assert st == 200 and b"/ui/mail.js" in page
    csp = b.last_headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-src 'self'" in csp and "script-src 'self'" in csp
    assert b.login(ALICE)[0] == 200

    f = folders(b)
    inbox = f["INBOX"]
    wait_for(lambda: folders(b)["INBOX"]["messages"] == 3)
    assert folders(b)["INBOX"]["unseen"] == 3
    names = [x["name"] for x in b.api("GET", "/me/mail/folders")[1]["folders"]]
    assert names[0] == "INBOX"

    # Newest first; a page, its lines, sorting and paging.
    r = listing(b, inbox["id"])
    assert r["total"] == 3 and [m["subject"] for m in r["messages"]] == ["Report attached", "HTML letter", "Plain hello"]
    plain = r["messages"][2]
    assert plain["from"] == {"name": "Carol Far", "address": "carol@far.test"}
    assert plain["preview"] == "Hello Alice, lunch on Friday?" and not plain["attachments"]
    assert r["messages"][0]["attachments"] and not r["messages"][1]["attachments"]
    assert plain["flags"]["seen"] is False
    r = listing(b, inbox["id"], sort="subject", asc="true", limit=2)
    assert [m["subject"] for m in r["messages"]] == ["HTML letter", "Plain hello"]
    r = listing(b, inbox["id"], sort="subject", asc="true", limit=2, offset=2)
    assert [m["subject"] for m in r["messages"]] == ["Report attached"]
    r = listing(b, inbox["id"], sort="from", asc="true")
    assert [m["from"]["address"] for m in r["messages"]] == ["carol@far.test", "dave@far.test", "news@far.test"]

    # Reading: text, marked read; HTML to the sandboxed route; attachments with real names.
    st, m = b.api("GET", f"/me/mail/folders/{inbox['id']}/messages/{plain['uid']}")
    assert st == 200 and m["message"]["text"].startswith("Hello Alice") and m["has_html"] is False
    assert listing(b, inbox["id"], sort="subject", asc="true")["messages"][1]["flags"]["seen"] is True
    html_uid = listing(b, inbox["id"])["messages"][1]["uid"]
    st, m = b.api("GET", f"/me/mail/folders/{inbox['id']}/messages/{html_uid}")
    assert m["has_html"] and m["remote_images"] == 1
    st, page = b.call("GET", f"/api/v1/me/mail/folders/{inbox['id']}/messages/{html_uid}/html")
    assert st == 200 and b"Big news" in page and b"127.0.0.1:9" not in page
    csp = b.last_headers["Content-Security-Policy"]
    assert "sandbox" in csp and "script-src" not in csp and "default-src 'none'" in csp
    assert "img-src 'self';" in csp
    assert b.last_headers["X-Content-Type-Options"] == "nosniff"
    logo = [a for a in m["message"]["attachments"] if a["inline"]][0]
    assert f"/parts/{logo['part']}?inline=1".encode() in page
    st, png = b.call("GET", f"/api/v1/me/mail/folders/{inbox['id']}/messages/{html_uid}/parts/{logo['part']}?inline=1")
    assert st == 200 and png.startswith(b"\x89PNG") and b.last_headers["Content-Type"] == "image/png"
    st, page = b.call("GET", f"/api/v1/me/mail/folders/{inbox['id']}/messages/{html_uid}/html?images=true")
    assert b"127.0.0.1:9/remote.png" in page and "http:" in b.last_headers["Content-Security-Policy"]
    # Allowed for good for the sender: shown without asking.
    assert b.api("POST", "/me/mail/image-senders", {"address": "News@far.test"})[0] == 200
    assert b.api("GET", f"/me/mail/folders/{inbox['id']}/messages/{html_uid}")[1]["images_trusted"] is True
    st, page = b.call("GET", f"/api/v1/me/mail/folders/{inbox['id']}/messages/{html_uid}/html")
    assert b"127.0.0.1:9/remote.png" in page

    mixed_uid = listing(b, inbox["id"])["messages"][0]["uid"]
    st, m = b.api("GET", f"/me/mail/folders/{inbox['id']}/messages/{mixed_uid}")
    atts = {a["name"]: a for a in m["message"]["attachments"]}
    assert set(atts) == {"Bericht März.pdf", "page.html"}
    pdf = atts["Bericht März.pdf"]
    assert pdf["content_type"] == "application/pdf"
    st, data = b.call("GET", f"/api/v1/me/mail/folders/{inbox['id']}/messages/{mixed_uid}/parts/{pdf['part']}")
    assert st == 200 and data.startswith(b"%PDF-1.4")
    assert b.last_headers["Content-Type"] == "application/pdf"
    assert b.last_headers["Content-Disposition"].startswith("attachment;")
    assert "filename*=UTF-8''Bericht%20M%C3%A4rz.pdf" in b.last_headers["Content-Disposition"]
    assert b.last_headers["X-Content-Type-Options"] == "nosniff"
    # An HTML attachment is a download, never a page of this site, even asked inline.
    st, data = b.call("GET", f"/api/v1/me/mail/folders/{inbox['id']}/messages/{mixed_uid}/parts/{atts['page.html']['part']}?inline=1")
    assert b.last_headers["Content-Disposition"].startswith("attachment;")
    assert "sandbox" in b.last_headers["Content-Security-Policy"]
    st, src = b.call("GET", f"/api/v1/me/mail/folders/{inbox['id']}/messages/{mixed_uid}/raw")
    assert st == 200 and b"Message-ID: <mixed-1@far.test>" in src
    assert b.last_headers["Content-Type"].startswith("text/plain")

    # Search: sender, subject, body, dates, as IMAP SEARCH reads them.
    assert [m["subject"] for m in listing(b, inbox["id"], **{"from": "dave"})["messages"]] == ["Report attached"]
    assert [m["subject"] for m in listing(b, inbox["id"], subject="html")["messages"]] == ["HTML letter"]
    assert [m["subject"] for m in listing(b, inbox["id"], body="lunch")["messages"]] == ["Plain hello"]
    assert listing(b, inbox["id"], before="2000-01-01")["total"] == 0
    assert listing(b, inbox["id"], since="2000-01-01")["total"] == 3

    # Actions on many; CSRF on every change.
    uids = [m["uid"] for m in listing(b, inbox["id"])["messages"]]
    st, r = b.api("POST", f"/me/mail/folders/{inbox['id']}/actions", {"uids": uids, "action": "flag"}, csrf=False)
    assert st == 403 and "CSRF" in r["error"]
    st, r = b.api("POST", f"/me/mail/folders/{inbox['id']}/actions", {"uids": uids[:2], "action": "flag"})
    assert st == 200 and r["changed"] == 2
    assert [m["flags"]["flagged"] for m in listing(b, inbox["id"])["messages"]] == [True, True, False]
    st, r = b.api("POST", f"/me/mail/folders/{inbox['id']}/actions", {"uids": [uids[0]], "action": "unseen"})
    assert st == 200

    # Folders: create, rename, move into, delete; the special ones stay.
    st, work = b.api("POST", "/me/mail/folders", {"name": "Work"})
    assert st == 201, work
    assert b.api("POST", "/me/mail/folders", {"name": "Work"})[0] == 409
    st, r = b.api("POST", f"/me/mail/folders/{inbox['id']}/actions", {"uids": [uids[0]], "action": "move", "to": work["id"]})
    assert st == 200 and r["changed"] == 1
    st, work = b.api("PUT", f"/me/mail/folders/{work['id']}", {"name": "Projects/Work"})
    assert st == 200 and work["name"] == "Projects/Work"
    assert listing(b, work["id"])["messages"][0]["subject"] == "Report attached"
    with imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx()) as c:
        c.login(ALICE, PASSWORD)
        assert c.select("Projects/Work")[1] == [b"1"]
    assert b.api("DELETE", f"/me/mail/folders/{inbox['id']}")[0] == 400
    assert b.api("PUT", f"/me/mail/folders/{inbox['id']}", {"name": "Other"})[0] == 400

    # Delete moves to Trash; deleting there removes.
    st, r = b.api("POST", f"/me/mail/folders/{inbox['id']}/actions", {"uids": [uids[1]], "action": "delete"})
    assert st == 200
    trash = folders(b)["Trash"]
    assert trash["special_use"] == "trash" and trash["messages"] == 1
    t_uid = listing(b, trash["id"])["messages"][0]["uid"]
    assert b.api("POST", f"/me/mail/folders/{trash['id']}/actions", {"uids": [t_uid], "action": "delete"})[0] == 200
    assert folders(b)["Trash"]["messages"] == 0

    st, r = b.api("POST", f"/me/mail/folders/{inbox['id']}/actions", {"uids": [uids[2]], "action": "junk"})
    assert st == 200 and folders(b)["Junk"]["messages"] == 1
    assert b.api("DELETE", f"/me/mail/folders/{work['id']}")[0] == 200
    assert "Projects/Work" not in folders(b)

    # Someone else's folders and messages are not there.
    bob = Browser(s)
    assert bob.login(BOB)[0] == 200
    assert bob.api("GET", f"/me/mail/folders/{inbox['id']}/messages")[0] == 404
    assert bob.api("GET", f"/me/mail/folders/{inbox['id']}/messages/{uids[0]}")[0] == 404
    assert bob.api("POST", f"/me/mail/folders/{inbox['id']}/actions", {"uids": uids, "action": "delete"})[0] == 404
    assert bob.call("GET", f"/api/v1/me/mail/folders/{inbox['id']}/messages/{html_uid}/html")[0] == 404
    # A page is bounded (http.mail_page_max).
    assert b.api("GET", f"/me/mail/folders/{inbox['id']}/messages?limit=100000")[0] == 200


def test_sender_checks_shown_and_junk_taught(make_server):
    from peers import Dns
    from conftest import free_port
    from test_trust import BAD_IP, GOOD_IP, RECORDS, message, send, signed
    dns = Dns(free_port())
    dns.start(a=RECORDS[0]["a"], txt=RECORDS[0]["txt"])
    try:
        s = make_server(listeners=("smtp", "imaps", "https"), inbound_checks=True, extra_config=f"""
[dns]
nameservers = ["127.0.0.1:{dns.port}"]
timeout = "1s"
""")
        s.add_user(ALICE)
        s.start()
        b = Browser(s)
        assert b.login(ALICE)[0] == 200
        inbox = folders(b)["INBOX"]["id"]
        assert send(s, GOOD_IP, "bob@far.test", signed(message("bob@far.test", "good one")))[0] == 250
        # Fails SPF, unsigned, and quar.test asks for quarantine: Junk, with a warning.
        assert send(s, BAD_IP, "eve@quar.test", message("eve@quar.test", "forged one"))[0] == 250
        good = listing(b, inbox)["messages"][0]
        st, m = b.api("GET", f"/me/mail/folders/{inbox}/messages/{good['uid']}")
        assert {c["method"]: c["result"] for c in m["checks"]} == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
        assert m["checks_failed"] is False
        junk = folders(b)["Junk"]["id"]
        bad = listing(b, junk)["messages"][0]
        st, m = b.api("GET", f"/me/mail/folders/{junk}/messages/{bad['uid']}")
        assert m["checks_failed"] is True and {"method": "dmarc", "result": "fail"} in m["checks"], m["checks"]

        # Marking as junk teaches as an IMAP move into Junk does: Bob's next goes to Junk...
        st, r = b.api("POST", f"/me/mail/folders/{inbox}/actions", {"uids": [good["uid"]], "action": "junk"})
        assert st == 200 and r["to"] == junk
        assert send(s, GOOD_IP, "bob@far.test", signed(message("bob@far.test", "good two")))[0] == 250
        assert [m["subject"] for m in listing(b, junk, sort="subject", asc="true")["messages"]] == ["forged one", "good one", "good two"]
        # ... and "not junk" back to the INBOX, where his next then stays.
        two = [m for m in listing(b, junk)["messages"] if m["subject"] == "good two"][0]
        st, r = b.api("POST", f"/me/mail/folders/{junk}/actions", {"uids": [two["uid"]], "action": "notjunk"})
        assert st == 200 and r["to"] == inbox
        assert send(s, GOOD_IP, "bob@far.test", signed(message("bob@far.test", "good three")))[0] == 250
        assert [m["subject"] for m in listing(b, inbox)["messages"]] == ["good three", "good two"]
    finally:
        dns.stop()


def test_threads_gather_a_conversation(make_server):
    s = mail_server(make_server)
    s.start()
    for raw in (PLAIN, HTML.replace(b"REMOTE", b"9"), MIXED,
                PLAIN.replace(b"plain-1", b"plain-2").replace(b"Subject: Plain hello", b"Subject: Re: Plain hello")):
        deliver(s, raw)
    b = Browser(s)
    assert b.login(ALICE)[0] == 200
    inbox = folders(b)["INBOX"]["id"]
    subjects = lambda **q: [m["subject"] for m in listing(b, inbox, **q)["messages"]]
    assert subjects() == ["Re: Plain hello", "Report attached", "HTML letter", "Plain hello"]
    assert subjects(threads="true") == ["Re: Plain hello", "Plain hello", "Report attached", "HTML letter"]
    assert subjects(threads="true", asc="true") == ["Plain hello", "Re: Plain hello", "HTML letter", "Report attached"]
    assert subjects(threads="true", limit=2, offset=2) == ["Report attached", "HTML letter"]


class Remote:
    """A loopback web server standing for every remote host a message may name: it records
    each request, so a test sees anything the browser fetched."""

    def __init__(self):
        hits = self.hits = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# Known ways to run script or reach out from HTML mail; REMOTE is the recording server.
XSS = [
    '<script>fetch("http://REMOTE/script")</script>',
    '<img src=x onerror="fetch(\'http://REMOTE/onerror\')">',
    '<a id="jslink" href="javascript:fetch(\'http://REMOTE/javascript\')">click</a>',
    '<a id="datalink" href="data:text/html,<script>fetch(\'http://REMOTE/datalink\')</script>">data</a>',
    '<iframe src="data:text/html,<script>fetch(\'http://REMOTE/dataframe\')</script>"></iframe>',
    '<iframe srcdoc="<script>fetch(\'http://REMOTE/srcdoc\')</script>"></iframe>',
    '<svg onload="fetch(\'http://REMOTE/svg\')"><image href="http://REMOTE/svgimage"></image>'
    '<script>fetch("http://REMOTE/svgscript")</script></svg>',
    '<svg><animate onbegin="fetch(\'http://REMOTE/animate\')" attributeName="x" dur="1s"/></svg>',
    '<div style="background:url(http://REMOTE/cssbg);width:expression(fetch(\'http://REMOTE/expr\'))">css</div>',
    '<style>@import url(http://REMOTE/import); body{background:url(http://REMOTE/style)}</style>',
    '<link rel="stylesheet" href="http://REMOTE/link"><link rel="prefetch" href="http://REMOTE/prefetch">',
    '<base href="http://REMOTE/base/"><img src="relative.png">',
    '<meta http-equiv="refresh" content="0;url=http://REMOTE/refresh">',
    '<object data="http://REMOTE/object"></object><embed src="http://REMOTE/embed">',
    '<form action="http://REMOTE/form"><input name=a value=b><button id="formbutton">go</button></form>',
    '<video poster="http://REMOTE/poster" src="http://REMOTE/video"></video><audio src="http://REMOTE/audio"></audio>',
    '<img srcset="http://REMOTE/srcset 1x"><picture><source srcset="http://REMOTE/source"></picture>',
    '<table background="http://REMOTE/tablebg"><tr><td background="http://REMOTE/tdbg">t</td></tr></table>',
    '<math><mtext><table><mglyph><style><img src=x onerror="fetch(\'http://REMOTE/mxss\')"></style></mglyph></table></mtext></math>',
    '<noscript><p title="</noscript><img src=x onerror=fetch(\'http://REMOTE/noscript\')>"></p></noscript>',
    '<body onload="fetch(\'http://REMOTE/bodyonload\')"><details open ontoggle="fetch(\'http://REMOTE/toggle\')">d</details>',
    '<a id="toplink" href="http://REMOTE/top" target="_top">top</a>',
]


def hostile_messages(remote):
    out = []
    for i, payload in enumerate(XSS):
        body = payload.replace("REMOTE", f"127.0.0.1:{remote}")
        out.append((f"xss-{i}", (
            f"From: Mallory <mallory@far.test>\r\nTo: {ALICE}\r\nSubject: xss-{i}\r\n"
            f"Message-ID: <xss-{i}@far.test>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>payload {i}</p>{body}</body></html>\r\n"
        ).encode()))
    # A charset the browser must not guess its way into: UTF-7 script.
    out.append(("xss-utf7", (
        f"From: Mallory <mallory@far.test>\r\nTo: {ALICE}\r\nSubject: xss-utf7\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/html; charset=utf-7\r\n\r\n<p>seven</p>+ADw-script+AD4-fetch('http://127.0.0.1:{remote}/utf7')+ADw-/script+AD4-\r\n"
    ).encode()))
    # Markup in the header fields the list and reader show as text.
    out.append(("xss-header", (
        f"From: \"<img src=x onerror=fetch('http://127.0.0.1:{remote}/from')>\" <mallory@far.test>\r\n"
        f"To: {ALICE}\r\nSubject: xss-header <img src=x onerror=fetch('http://127.0.0.1:{remote}/subject')>\r\n\r\n"
        f"<script>fetch('http://127.0.0.1:{remote}/plain')</script>\r\n"
    ).encode()))
    return out


def chromium_or_fail():
    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.fail("Debian's chromium is missing: scripts/deps installs it")
    return chromium


def login_in_page(page, base, address=ALICE):
    from playwright.sync_api import expect
    page.goto(base + "/mail")
    expect(page.get_by_role("heading", name="Log in to your mail")).to_be_visible()
    page.get_by_label("Email address").fill(address)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#folders")).to_contain_text("Inbox")


def test_hostile_html_never_runs_nor_reaches_out(make_server):
    from playwright.sync_api import expect, sync_playwright
    chromium = chromium_or_fail()
    SHOTS.mkdir(parents=True, exist_ok=True)
    remote = Remote()
    s = mail_server(make_server)
    s.start()
    msgs = hostile_messages(remote.port)
    for _, raw in msgs:
        deliver(s, raw)
    deliver(s, HTML.replace(b"REMOTE", str(remote.port).encode()))
    base = f"https://127.0.0.1:{s.port('https')}"
    dialogs, popups = [], []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
                ctx.on("page", lambda pg: popups.append(pg))
                page = ctx.new_page()
                page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
                login_in_page(page, base)
                expect(page.locator("#range")).to_contain_text(f"of {len(msgs) + 1}")
                for name, _ in msgs:
                    page.locator("#rows li", has_text=name).first.click()
                    expect(page.locator("#subject")).to_contain_text(name)
                    frame = page.frame_locator("#html")
                    if name != "xss-header":
                        expect(frame.locator("body")).to_contain_text("payload" if name != "xss-utf7" else "seven")
                    # What a reader might click: nothing it does may run script.
                    # (The cleaner drops ids: links are found by their words.)
                    for words in ("click", "data", "go"):
                        loc = frame.get_by_text(words, exact=True)
                        if loc.count():
                            loc.first.click()
                    page.wait_for_timeout(300)
                # The header fields came out as text.
                expect(page.locator("#subject")).to_contain_text("<img src=x onerror=")
                shot = SHOTS / "hostile.png"
                page.screenshot(path=str(shot), full_page=True)
                time.sleep(1)
                assert dialogs == [], dialogs
                assert remote.hits == [], remote.hits

                # The control: the same listener does get what the reader allows.
                page.locator("#rows li", has_text="HTML letter").first.click()
                frame = page.frame_locator("#html")
                expect(frame.locator("h2")).to_have_text("Big news")
                # The inline (cid:) image is shown from this server.
                wait_for(lambda: frame.locator("img").first.evaluate("i => i.naturalWidth") == 1, timeout=10)
                expect(page.locator("#images-blocked")).to_contain_text("1 remote image")
                assert remote.hits == []
                page.get_by_role("button", name="Show them").click()
                wait_for(lambda: "/remote.png" in remote.hits, timeout=10)
                page.screenshot(path=str(SHOTS / "remote-images-allowed.png"), full_page=True)
                assert dialogs == []
            finally:
                browser.close()
    finally:
        remote.stop()


def test_reading_moving_searching_and_live_mail_in_chromium(make_server):
    from playwright.sync_api import expect, sync_playwright
    chromium = chromium_or_fail()
    SHOTS.mkdir(parents=True, exist_ok=True)
    s = mail_server(make_server)
    s.start()
    for raw in (PLAIN, HTML.replace(b"REMOTE", b"9"), MIXED):
        deliver(s, raw)
    base = f"https://127.0.0.1:{s.port('https')}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
            page = ctx.new_page()
            login_in_page(page, base)
            expect(page.locator("#range")).to_have_text("1–3 of 3")
            expect(page.locator("#folders a[data-folder] .count").first).to_have_text("3")
            assert page.evaluate("document.cookie") == ""
            page.screenshot(path=str(SHOTS / "01-inbox.png"), full_page=True)

            # A plain message.
            page.locator("#rows li", has_text="Plain hello").click()
            expect(page.locator("#text")).to_contain_text("lunch on Friday?")
            expect(page.locator("#from")).to_contain_text("Carol Far <carol@far.test>")
            expect(page.locator("#folders a[data-folder] .count").first).to_have_text("2")
            page.screenshot(path=str(SHOTS / "02-plain.png"), full_page=True)

            # An HTML message in its frame, its remote image held back.
            page.locator("#rows li", has_text="HTML letter").click()
            expect(page.frame_locator("#html").locator("h2")).to_have_text("Big news")
            expect(page.locator("#images-blocked")).to_be_visible()
            page.screenshot(path=str(SHOTS / "03-html.png"), full_page=True)

            # A multipart message: its attachment downloads with its real name.
            page.locator("#rows li", has_text="Report attached").click()
            expect(page.locator("#text")).to_contain_text("The numbers are in the file.")
            with page.expect_download() as dl:
                page.locator("#attachments a", has_text="Bericht März.pdf").click()
            assert dl.value.suggested_filename == "Bericht März.pdf"
            assert open(dl.value.path(), "rb").read().startswith(b"%PDF-1.4")
            page.get_by_role("button", name="Source").click()
            expect(page.locator("#raw")).to_contain_text("Message-ID: <mixed-1@far.test>")
            page.screenshot(path=str(SHOTS / "04-attachment.png"), full_page=True)

            # Keyboard: j/k move between messages, s flags.
            page.locator("body").press("k")
            expect(page.locator("#subject")).to_have_text("Report attached")
            page.locator("body").press("j")
            expect(page.locator("#subject")).to_have_text("HTML letter")
            page.locator("body").press("s")
            expect(page.locator("#rows li.current .marks")).to_contain_text("★")

            # Move to a new folder, seen at once by IMAP.
            page.once("dialog", lambda d: d.accept("Archive2"))
            page.get_by_role("button", name="New folder").click()
            expect(page.locator("#folders")).to_contain_text("Archive2")
            page.locator("#rows li", has_text="Plain hello").locator("input[type=checkbox]").check()
            page.locator("#move-to").select_option(label="Archive2")
            expect(page.locator("#range")).to_have_text("1–2 of 2")
            with imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx()) as c:
                c.login(ALICE, PASSWORD)
                assert c.select("Archive2")[1] == [b"1"]

            # Delete to Trash.
            page.locator("#rows li", has_text="HTML letter").click()
            page.get_by_role("button", name="Delete", exact=True).last.click()
            expect(page.locator("#range")).to_have_text("1–1 of 1")
            expect(page.locator("#folders")).to_contain_text("Trash")

            # Search.
            page.locator("#q").fill("Report")
            page.locator("#search button[type=submit]").click()
            expect(page.locator("#search-results")).to_contain_text("Search results: 1")
            expect(page.locator("#rows li")).to_have_count(1)
            page.get_by_role("button", name="Show all").click()

            # New mail over SMTP appears without a reload, and IMAP sees a webmail change.
            deliver(s, PLAIN.replace(b"plain-1", b"live-1").replace(b"Plain hello", b"Live one"))
            expect(page.locator("#rows li", has_text="Live one")).to_be_visible(timeout=10000)
            with imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx()) as c:
                c.login(ALICE, PASSWORD)
                c.select("INBOX")
                typ, data = c.uid("search", None, "UNSEEN")
                unseen_before = len(data[0].split())
                page.locator("#rows li", has_text="Live one").click()
                expect(page.locator("#text")).to_contain_text("lunch")
                c.noop()
                typ, data = c.uid("search", None, "UNSEEN")
                assert len(data[0].split()) == unseen_before - 1
                # And the other way round: IMAP flags it, the page follows.
                typ, data = c.uid("search", None, "SUBJECT", "Live")
                c.uid("store", data[0].split()[0], "+FLAGS", r"(\Flagged)")
            expect(page.locator("#rows li", has_text="Live one").locator(".marks")).to_contain_text("★", timeout=10000)
            page.screenshot(path=str(SHOTS / "05-live.png"), full_page=True)

            # At a phone's width the reader takes the screen and goes back.
            page.set_viewport_size({"width": 390, "height": 800})
            page.get_by_role("button", name="← Back").click()
            page.locator("#rows li", has_text="Live one").click()
            expect(page.locator("#subject")).to_have_text("Live one")
            page.screenshot(path=str(SHOTS / "06-phone.png"), full_page=True)
            page.get_by_role("button", name="← Back").click()
            expect(page.locator("#rows")).to_be_visible()
            assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
        finally:
            browser.close()


def imap_messages(s, user, folder):
    """(flags, bytes) of every message of a folder, over IMAP."""
    with imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx()) as c:
        c.login(user, PASSWORD)
        c.select(f'"{folder}"', readonly=True)
        typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[])")
        out = []
        for d in data:
            if isinstance(d, tuple):
                out.append((d[0].decode(), d[1]))
        return out


def sending_server(make_server, dns, rport, extra=""):
    s = make_server(listeners=("smtp", "imaps", "https"), extra_config=f"""
[dns]
nameservers = ["127.0.0.1:{dns.port}"]
[delivery]
remote_port = {rport}
retry = ["1s"]
connect_timeout = "2s"
[smtp]
pregreet_wait_ms = 0
max_message_size = "300K"
{extra}""")
    s.add_user(ALICE)
    s.add_user(BOB)
    return s


def test_sending_replying_forwarding_drafts_and_limits(make_server):
    import base64
    import email
    from conftest import free_port
    from peers import Dns, Sink
    dns, rport = Dns(free_port()), free_port()
    dns.start(mx=[("far.test", "mx.far.test", 10)], a=[("mx.far.test", "127.0.0.3")])
    sink = Sink("127.0.0.3", rport)
    try:
        s = sending_server(make_server, dns, rport)
        s.start()
        deliver(s, PLAIN)
        b = Browser(s)
        assert b.login(ALICE)[0] == 200
        inbox = folders(b)["INBOX"]["id"]
        orig = listing(b, inbox)["messages"][0]
        pdf = base64.b64encode(b"%PDF-1.4 sent from the web").decode()
        st, r = b.api("POST", "/me/mail/send", {
            "to": [f"Bob <{BOB}>", "carol@far.test"], "bcc": ["hidden@far.test"], "subject": "Grüße",
            "text": "Hello both,\nthe file.", "reply_to": {"folder": inbox, "uid": orig["uid"]},
            "attachments": [{"name": "Bericht.pdf", "type": "application/pdf", "data": pdf}]})
        assert st == 200, r
        # The local recipient has it at once, with the file and the thread fields.
        got = imap_messages(s, BOB, "INBOX")
        assert len(got) == 1
        m = email.message_from_bytes(got[0][1], policy=email.policy.default)
        assert str(m["Subject"]) == "Grüße" and m["In-Reply-To"] == "<plain-1@far.test>"
        assert "Bcc" not in m and m["From"] == ALICE
        att = [p for p in m.iter_attachments()][0]
        assert att.get_filename() == "Bericht.pdf" and att.get_content() == b"%PDF-1.4 sent from the web"
        # The remote ones through the queue, signed as ours, Bcc unseen.
        wait_for(lambda: len(sink.messages) == 1, timeout=30)
        mail_from, rcpts, data = sink.messages[0]
        assert mail_from == ALICE and sorted(rcpts) == ["carol@far.test", "hidden@far.test"]
        assert b"DKIM-Signature:" in data and b"Bcc:" not in data
        # Kept in Sent (with its Bcc), read; the original marked answered.
        sent = imap_messages(s, ALICE, "Sent")
        assert len(sent) == 1 and "\\Seen" in sent[0][0] and b"Bcc: hidden@far.test" in sent[0][1]
        assert listing(b, inbox)["messages"][0]["flags"]["answered"] is True
        # Completion offers whom the user wrote to.
        st, r = b.api("GET", "/me/mail/contacts?q=car")
        assert r["addresses"] == ["carol@far.test"]
        assert set(b.api("GET", "/me/mail/contacts?q=")[1]["addresses"]) == {BOB, "carol@far.test", "hidden@far.test"}

        # Forward as attachment: the whole message inside.
        st, r = b.api("POST", "/me/mail/send", {"to": [BOB], "subject": "Fwd: Plain hello", "text": "see below",
                                                 "attach": {"folder": inbox, "uid": orig["uid"]}})
        assert st == 200, r
        got = imap_messages(s, BOB, "INBOX")
        assert b"Content-Type: message/rfc822" in got[1][1] and b"Message-ID: <plain-1@far.test>" in got[1][1]

        # Simple formatting goes as an HTML alternative, cleaned as received HTML is.
        st, r = b.api("POST", "/me/mail/send", {"to": [BOB], "subject": "formatted", "text": "bold words",
                                                 "html": "<p><b>bold</b> words<script>alert(1)</script><img src=x onerror=alert(2)></p>"})
        assert st == 200, r
        m = email.message_from_bytes(imap_messages(s, BOB, "INBOX")[-1][1], policy=email.policy.default)
        html = m.get_body(("html",)).get_content()
        assert "<b>bold</b> words" in html and "script" not in html and "onerror" not in html
        assert m.get_body(("plain",)).get_content().strip() == "bold words"

        # An inline forward takes the original's attachments along.
        deliver(s, MIXED)
        mixed = [m for m in listing(b, inbox)["messages"] if m["subject"] == "Report attached"][0]
        st, r = b.api("POST", "/me/mail/send", {"to": [BOB], "subject": "Fwd: Report attached", "text": "fyi",
                                                 "files_of": {"folder": inbox, "uid": mixed["uid"]}})
        assert st == 200, r
        m = email.message_from_bytes(imap_messages(s, BOB, "INBOX")[-1][1], policy=email.policy.default)
        files = {p.get_filename(): p.get_content() for p in m.iter_attachments()}
        assert files["Bericht März.pdf"].startswith(b"%PDF-1.4") and "page.html" in files

        # Drafts: saved as written, each save in place of the last, gone once sent.
        st, d1 = b.api("POST", "/me/mail/drafts", {"to": [BOB], "subject": "half", "text": "wri"})
        assert st == 200
        st, d2 = b.api("POST", "/me/mail/drafts", {"to": [BOB], "subject": "half", "text": "writing", "draft": d1["uid"]})
        drafts = imap_messages(s, ALICE, "Drafts")
        assert len(drafts) == 1 and "\\Draft" in drafts[0][0] and b"writing" in base64.b64decode(drafts[0][1].split(b"\r\n\r\n", 1)[1])
        st, r = b.api("POST", "/me/mail/send", {"to": [BOB], "subject": "half", "text": "written", "draft": d2["uid"]})
        assert st == 200 and imap_messages(s, ALICE, "Drafts") == []

        # The submission rules: only addresses the user may send as; the message size limit.
        st, r = b.api("POST", "/me/mail/send", {"from": BOB, "to": ["carol@far.test"], "subject": "x", "text": "x"})
        assert st == 400 and "send" in r["error"].lower(), r
        big = base64.b64encode(os.urandom(250_000)).decode()
        st, r = b.api("POST", "/me/mail/send", {"to": [BOB], "subject": "big", "text": "x",
                                                 "attachments": [{"name": "a.bin", "type": "application/octet-stream", "data": big}]})
        assert st == 400 and "max_message_size" in r["error"], r
        # A body larger than any message could make is refused before it is read.
        c = http.client.HTTPSConnection("127.0.0.1", s.port("https"), context=insecure_ctx(), timeout=20)
        c.putrequest("POST", "/api/v1/me/mail/send", skip_host=True)
        for k, v in {"Host": f"127.0.0.1:{s.port('https')}", "Cookie": b.cookie, "X-CSRF-Token": b.csrf,
                     "Content-Type": "application/json", "Content-Length": "1600000"}.items():
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        assert r.status == 413 and "smtp.max_message_size" in r.read().decode()
        st, r = b.api("POST", "/me/mail/send", {"to": [BOB], "subject": "x", "text": "x"}, csrf=False)
        assert st == 403
        assert len(imap_messages(s, BOB, "INBOX")) == 5
    finally:
        sink.stop()
        dns.stop()


def test_writing_in_chromium(make_server):
    from playwright.sync_api import expect, sync_playwright
    from conftest import free_port
    from peers import Dns, Sink
    chromium = chromium_or_fail()
    SHOTS.mkdir(parents=True, exist_ok=True)
    dns, rport = Dns(free_port()), free_port()
    dns.start(mx=[("far.test", "mx.far.test", 10)], a=[("mx.far.test", "127.0.0.3")])
    sink = Sink("127.0.0.3", rport)
    try:
        s = sending_server(make_server, dns, rport)
        s.start()
        deliver(s, PLAIN)
        base = f"https://127.0.0.1:{s.port('https')}"
        attachment = SHOTS / "notes.txt"
        attachment.write_text("notes for Bob\n")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
                page = ctx.new_page()
                login_in_page(page, base)
                # New message to a local and a remote address, with a file.
                page.get_by_role("button", name="Write").click()
                page.locator("#to").fill(f"{BOB}, someone@far.test")
                page.locator("#subject-field").fill("From the browser")
                page.locator("#body").fill("Hello from the webmail.")
                # Formatting is an option: its tools show only when asked for.
                expect(page.get_by_role("button", name="B", exact=True)).to_be_hidden()
                page.locator("#formatting").check()
                expect(page.get_by_role("button", name="B", exact=True)).to_be_visible()
                expect(page.locator("#rich")).to_have_text("Hello from the webmail.")
                page.locator("#formatting").uncheck()
                expect(page.locator("#body")).to_have_value("Hello from the webmail.")
                page.locator("#files").set_input_files(str(attachment))
                expect(page.locator("#uploads")).to_contain_text("notes.txt")
                page.screenshot(path=str(SHOTS / "10-compose.png"), full_page=True)
                page.get_by_role("button", name="Send", exact=True).click()
                expect(page.locator("#sent")).to_contain_text("sent")
                got = imap_messages(s, BOB, "INBOX")
                assert len(got) == 1 and b"notes.txt" in got[0][1] and b"From the browser" in got[0][1]
                wait_for(lambda: len(sink.messages) == 1, timeout=30)
                assert sink.messages[0][1] == ["someone@far.test"]

                # Reply, with the address completed from those written to.
                page.locator("#rows li", has_text="Plain hello").click()
                page.get_by_role("button", name="Reply", exact=True).click()
                expect(page.locator("#subject-field")).to_have_value("Re: Plain hello")
                expect(page.locator("#body")).to_have_value(re.compile(r"> lunch on Friday\?"))
                page.locator("#cc").fill("bo")
                page.locator("#suggest li", has_text=BOB).click()
                expect(page.locator("#cc")).to_have_value(f"{BOB}, ")
                page.locator("#body").press("Control+Home")
                page.locator("#body").type("Yes, Friday. ")
                expect(page.locator("#draft-state")).to_contain_text("Draft saved", timeout=10000)
                # (A save puts the new draft in before it takes the last one out.)
                wait_for(lambda: len(imap_messages(s, ALICE, "Drafts")) == 1, timeout=10)
                page.get_by_role("button", name="Send", exact=True).click()
                expect(page.locator("#sent")).to_contain_text("sent")
                got = imap_messages(s, BOB, "INBOX")
                assert len(got) == 2 and b"In-Reply-To: <plain-1@far.test>" in got[1][1]
                assert imap_messages(s, ALICE, "Drafts") == []
                wait_for(lambda: len(sink.messages) == 2, timeout=30)
                assert sink.messages[1][1] == ["carol@far.test"]

                # Forward as an attachment, then the Sent folder shows all three.
                page.locator("#rows li", has_text="Plain hello").click()
                page.get_by_role("button", name="Forward as attachment").click()
                page.locator("#to").fill(BOB)
                page.get_by_role("button", name="Send", exact=True).click()
                expect(page.locator("#sent")).to_contain_text("sent")
                page.locator("#folders a", has_text="Sent").click()
                expect(page.locator("#range")).to_have_text("1–3 of 3")
                page.screenshot(path=str(SHOTS / "11-sent.png"), full_page=True)
            finally:
                browser.close()
    finally:
        sink.stop()
        dns.stop()


def test_event_stream_tells_of_new_mail_and_ends_at_shutdown(make_server):
    s = mail_server(make_server)
    s.start()
    b = Browser(s)
    assert b.login(ALICE)[0] == 200
    inbox = folders(b)["INBOX"]["id"]
    c = http.client.HTTPSConnection("127.0.0.1", s.port("https"), context=insecure_ctx(), timeout=20)
    c.request("GET", "/api/v1/me/mail/events", headers={"Host": f"127.0.0.1:{s.port('https')}", "Cookie": b.cookie})
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"
    assert r.readline() == b"retry: 3000\n"
    # Another account's mail says nothing on this stream: the first event is Alice's.
    deliver(s, PLAIN, to=BOB)
    deliver(s, PLAIN)
    lines = []
    while not any(l.startswith(b"data:") for l in lines):
        lines.append(r.readline())
    assert b"event: mailbox\n" in lines and lines[-1] == f'data: {{"folder":{inbox}}}\n'.encode(), lines
    # The server stops with the stream open.
    started = time.time()
    assert s.stop() == 0
    assert time.time() - started < 20
    assert r.read() in (b"", b"\n")
