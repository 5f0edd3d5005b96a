"""The web interface over real HTTPS: sessions and their cookies, CSRF protection, admin and
user roles kept apart, login limits; then the whole thing in headless Chromium (Playwright):
an administrator creates a domain and an account, its user logs in and changes the password,
and the new password works over IMAP. Screenshots go to target/artifacts/screenshots/."""

import http.client
import imaplib
import json
import os

import pytest

from conftest import DOMAIN, PASSWORD, ROOT
from helpers import ALICE, insecure_ctx, mx_send, wait_for
from test_reports import report_mail

BOSS = "boss@" + DOMAIN
SHOTS = ROOT / "target" / "artifacts" / "screenshots"


class Browser:
    """A cookie-keeping HTTPS client, as a browser is (one cookie: the session)."""

    def __init__(self, server, source="127.0.0.1"):
        self.server, self.source, self.cookie, self.csrf = server, source, None, None

    def call(self, method, path, body=None, csrf=True, headers=None, content_type="application/json"):
        c = http.client.HTTPSConnection("127.0.0.1", self.server.port("https"), context=insecure_ctx(),
                                        timeout=20, source_address=(self.source, 0))
        h = {"Host": f"127.0.0.1:{self.server.port('https')}"}
        if body is not None:
            h["Content-Type"] = content_type
        if self.cookie:
            h["Cookie"] = self.cookie
        if csrf and self.csrf and method != "GET":
            h["X-CSRF-Token"] = self.csrf
        h.update(headers or {})
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
        r = c.getresponse()
        data = r.read()
        self.last_headers = r.headers
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return r.status, parsed

    def api(self, method, path, body=None, **kw):
        return self.call(method, "/api/v1" + path, body, **kw)

    def login(self, address, password=PASSWORD):
        st, body = self.api("POST", "/session", {"address": address, "password": password})
        if st == 200:
            set_cookie = self.last_headers["Set-Cookie"]
            self.cookie = set_cookie.split(";")[0]
            self.csrf = body["csrf"]
        return st, body


def web_server(make_server, extra=""):
    s = make_server(listeners=("smtp", "imaps", "https", "http"), extra_config=f"""
[smtp]
pregreet_wait_ms = 0
[http]
admins = ["{BOSS}"]
[auth]
failure_delay_ms = 10
max_failures = 5
[relay]
password = "not-shown-anywhere"
{extra}""")
    s.add_user(ALICE)
    s.add_user(BOSS)
    return s


def imap_login(server, user, password):
    try:
        with imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx()) as c:
            return c.login(user, password)[0] == "OK"
    except imaplib.IMAP4.error:
        return False


def test_sessions_csrf_roles_and_limits(make_server):
    s = web_server(make_server)
    s.start()
    b = Browser(s)
    # The page and its assets come with a strict policy.
    st, page = b.call("GET", "/account")
    assert st == 200 and b"/ui/app.js" in page
    csp = b.last_headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert b.last_headers["X-Frame-Options"] == "DENY"
    assert b.call("GET", "/ui/app.js")[0] == 200 and b.call("GET", "/ui/nothing.js")[0] == 404
    assert b.api("GET", "/session")[0] == 401

    # No account enumeration: an unknown address and a wrong password read the same.
    st1, unknown = b.api("POST", "/session", {"address": "nobody@" + DOMAIN, "password": "wrong-password"})
    st2, wrong = b.api("POST", "/session", {"address": ALICE, "password": "wrong-password"})
    assert (st1, unknown) == (st2, wrong) and st1 == 401
    assert "Set-Cookie" not in b.last_headers
    # Logins come as JSON only (a form on another site cannot send that).
    st, body = b.call("POST", "/api/v1/session", {"address": ALICE, "password": PASSWORD},
                      content_type="text/plain")
    assert st == 415

    st, body = b.login(ALICE)
    assert st == 200 and body["address"] == ALICE and body["admin"] is False
    cookie = b.last_headers["Set-Cookie"]
    assert cookie.startswith("__Host-postern_session=")
    for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
        assert flag in cookie, cookie
    assert b.api("GET", "/session")[1]["address"] == ALICE

    # A user reaches their own account, nothing of the admin's.
    st, me = b.api("GET", "/me")
    assert st == 200 and me["address"] == ALICE
    for method, path, body in [("GET", "/users", None), ("GET", "/dashboard", None),
                               ("POST", "/domains", {"name": "x.test"}),
                               ("PUT", f"/users/{BOSS}/password", {"password": "taken-over-1"}),
                               ("GET", "/queue", None), ("GET", f"/dns/{DOMAIN}", None)]:
        st, r = b.api(method, path, body)
        assert st == 403, (path, st, r)
    assert imap_login(s, BOSS, PASSWORD), "the admin's password is untouched"

    # Every change with the cookie needs the session's CSRF token, and comes from this site.
    st, r = b.api("PUT", "/me/forward", {"to": "a@far.test"}, csrf=False)
    assert st == 403 and "X-CSRF-Token" in r["error"]
    st, r = b.api("PUT", "/me/forward", {"to": "a@far.test"}, csrf=False, headers={"X-CSRF-Token": "forged"})
    assert st == 403
    st, r = b.api("PUT", "/me/forward", {"to": "a@far.test"},
                  headers={"Origin": "https://evil.example"})
    assert st == 403 and "another site" in r["error"]
    assert f"{ALICE} is a user: delivered to its INBOX" in s.cli("route", ALICE).stdout, "refused: nothing changed"
    st, r = b.api("PUT", "/me/forward", {"to": "a@far.test", "keep_copy": True})
    assert st == 200, r
    assert b.api("GET", "/me")[1]["forward"]["to"] == "a@far.test"
    assert f"{ALICE} is a user who forwards to a@far.test, keeping a copy" in s.cli("route", ALICE).stdout
    assert b.api("DELETE", "/me/forward")[0] == 200
    assert f"{ALICE} is a user: delivered to its INBOX" in s.cli("route", ALICE).stdout

    # The admin role: from http.admins, with the same CSRF rule.
    admin = Browser(s)
    st, body = admin.login(BOSS)
    assert st == 200 and body["admin"] is True
    assert admin.api("POST", "/domains", {"name": "newco.test"}, csrf=False)[0] == 403
    assert admin.api("GET", "/domains")[1]["names"].count("newco.test") == 0
    assert "newco.test" not in s.cli("domain", "list").stdout.split()
    assert admin.api("POST", "/domains", {"name": "newco.test"})[0] == 201
    assert "newco.test" in s.cli("domain", "list").stdout.split()
    # Logging in again needs no CSRF token, and ends the browser's previous session.
    again = Browser(s)
    assert again.login(BOSS)[0] == 200
    st, _ = again.api("POST", "/session", {"address": BOSS, "password": PASSWORD}, csrf=False)
    assert st == 200 and again.api("GET", "/session")[0] == 401, "the old cookie's session ended"
    st, conf = admin.api("GET", "/settings")
    assert st == 200 and "[http]" in conf["text"] and conf["path"].endswith("postern.toml")
    assert "not-shown-anywhere" not in conf["text"] and 'password = "********"' in conf["text"]
    assert b.api("GET", "/settings")[0] == 403 and b.api("POST", "/reload")[0] == 403
    assert admin.api("POST", "/reload")[0] == 200
    st, d = admin.api("GET", "/dashboard")
    assert st == 200 and d["hostname"] == s.hostname and "queue" in d and d["disk"]["total_bytes"] > 0
    # A token still works for scripts, with no CSRF token (it is not sent by browsers by itself).
    token = s.cli("token", "create", "ops").stdout.strip()
    c = Browser(s)
    assert c.api("GET", "/users", headers={"Authorization": f"Bearer {token}"})[0] == 200

    # A disabled account loses its session and its logins; enabled again, it logs in.
    st, r = admin.api("PUT", f"/users/{ALICE}/disabled", {"disabled": True})
    assert st == 200, r
    assert b.api("GET", "/me")[0] == 401
    assert not imap_login(s, ALICE, PASSWORD)
    assert [u for u in admin.api("GET", "/users")[1]["users"] if u["address"] == ALICE][0]["disabled"]
    assert "enabled" in s.cli("user", "enable", ALICE).stdout
    assert imap_login(s, ALICE, PASSWORD)

    # A password change ends the account's other sessions, not the one that made it.
    one, two = Browser(s), Browser(s)
    assert one.login(ALICE)[0] == 200 and two.login(ALICE)[0] == 200
    st, r = one.api("PUT", "/me/password", {"password": "brand-new-pass-1"})
    assert st == 400 and "current" in r["error"], "a session alone does not change the password"
    st, r = one.api("PUT", "/me/password", {"password": "brand-new-pass-1", "current": "not-it-at-all"})
    assert st == 403, r
    st, r = one.api("PUT", "/me/password", {"password": "brand-new-pass-1", "current": PASSWORD})
    assert st == 200, r
    assert one.api("GET", "/me")[0] == 200
    assert two.api("GET", "/me")[0] == 401
    assert imap_login(s, ALICE, "brand-new-pass-1") and not imap_login(s, ALICE, PASSWORD)
    # However the password changes (here by the CLI), the sessions made with the old one end.
    s.cli("user", "passwd", ALICE, "--password-stdin", input="third-pass-2\n")
    assert one.api("GET", "/me")[0] == 401
    assert one.login(ALICE, "third-pass-2")[0] == 200

    # Logging out ends the session and clears the cookie.
    assert one.api("DELETE", "/session")[0] == 200
    assert "Max-Age=0" in one.last_headers["Set-Cookie"]
    assert one.api("GET", "/me")[0] == 401

    # Too many failures from one address: locked out, even with the right password.
    x = Browser(s, source="127.0.0.9")
    codes = [x.api("POST", "/session", {"address": BOSS, "password": f"guess-{i}"})[0] for i in range(6)]
    assert codes[:5] == [401] * 5 and codes[5] == 429, codes
    st, r = x.login(BOSS)
    assert st == 429 and "try again" in r["error"]


def test_admin_and_user_in_a_real_browser(make_server, loopback_dns):
    from playwright.sync_api import expect, sync_playwright
    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.fail("Debian's chromium is missing: scripts/deps installs it")
    SHOTS.mkdir(parents=True, exist_ok=True)
    # The DNS check of the domains page gets its answers (no records: all missing) at once.
    s = web_server(make_server, extra=f'[dns]\nnameservers = ["127.0.0.1:{loopback_dns.port}"]')
    s.start()
    mx_send(s, "someone@far.test", [ALICE], b"Subject: hello\r\nMessage-ID: <web-1@far.test>\r\n\r\nHi.\r\n")
    # A DMARC aggregate report about our domain, for the Reports page.
    mx_send(s, "noreply@reporter.test", ["postmaster@example.test"], report_mail("web-r1"))
    wait_for(lambda: "web-r1" in s.cli("reports", "list", "--json").stdout, timeout=10)
    base = f"https://127.0.0.1:{s.port('https')}"

    def shot(page, name):
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
            page = ctx.new_page()
            page.goto(base + "/admin")
            expect(page.get_by_role("heading", name="Log in")).to_be_visible()
            page.get_by_label("Email address").fill(BOSS)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
            expect(page.locator("#card-today .n")).to_have_text("2")
            shot(page, "01-dashboard")

            # The session cookie is out of the page's reach.
            assert page.evaluate("document.cookie") == ""
            cookie = [c for c in ctx.cookies() if c["name"] == "__Host-postern_session"][0]
            assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"

            page.get_by_role("link", name="Domains").click()
            page.get_by_label("New domain").fill("newco.test")
            page.get_by_role("button", name="Add domain").click()
            expect(page.get_by_role("cell", name="newco.test", exact=True)).to_be_visible()
            page.get_by_role("row", name="newco.test").get_by_role("button", name="DNS records").click()
            expect(page.get_by_role("heading", name="DNS records for newco.test")).to_be_visible()
            expect(page.locator("#records table")).to_contain_text("_dmarc.newco.test.")
            shot(page, "02-domains")

            page.get_by_role("link", name="Users").click()
            page.get_by_label("Address").fill("carol@newco.test")
            page.get_by_label("Password").fill("first-pass-123")
            page.get_by_label("Quota (optional)").fill("1G")
            page.get_by_role("button", name="Create account").click()
            expect(page.get_by_role("cell", name="carol@newco.test")).to_be_visible()
            expect(page.get_by_role("row", name="carol@newco.test")).to_contain_text("1.0 GB")
            assert imap_login(s, "carol@newco.test", "first-pass-123")
            row = page.get_by_role("row", name="carol@newco.test")
            row.get_by_role("button", name="Reset password").click()
            row.get_by_label("New password for carol@newco.test").fill("reset-pass-789")
            shot(page, "03-users")
            row.get_by_role("button", name="Set").click()
            expect(page.locator("#status")).to_have_text("password of carol@newco.test changed")
            assert imap_login(s, "carol@newco.test", "reset-pass-789")

            page.get_by_role("link", name="Message trace").click()
            page.get_by_label("To").fill(ALICE)
            page.get_by_role("button", name="Search").click()
            expect(page.locator("ol.timeline").first).to_contain_text("received")
            shot(page, "04-trace")

            page.get_by_role("link", name="Reports").click()
            expect(page.get_by_role("heading", name="example.test")).to_be_visible()
            expect(page.locator(".report-domain")).to_contain_text("from Reporter Inc")
            row = page.get_by_role("row", name="203.0.113.9")
            expect(row).to_contain_text("Look at this")
            expect(page.get_by_role("row", name="192.0.2.10")).not_to_contain_text("Look at this")
            page.get_by_role("button", name="Send our reports now").click()
            expect(page.locator("#status")).to_contain_text("no reports to send")
            shot(page, "04b-reports")

            page.get_by_role("link", name="Queue").click()
            expect(page.get_by_text("The queue is empty.")).to_be_visible()
            page.get_by_role("link", name="Settings").click()
            expect(page.locator("#config-text")).to_contain_text("[http]")
            expect(page.locator("#acme-off")).to_contain_text("[acme] enabled = true")
            page.get_by_role("button", name="Reload the certificate and DKIM keys").click()
            expect(page.locator("#status")).to_contain_text("reloaded")
            shot(page, "05-settings")
            page.get_by_role("link", name="Log out").click()
            expect(page.get_by_role("heading", name="Log in")).to_be_visible()

            # The new user: their own page only, where they change their password.
            page.goto(base + "/account")
            page.get_by_label("Email address").fill("carol@newco.test")
            page.get_by_label("Password").fill("reset-pass-789")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="My account")).to_be_visible()
            expect(page.get_by_role("link", name="Users")).to_have_count(0)
            expect(page.locator("main table").first).to_contain_text("carol@newco.test")
            page.get_by_label("Current password").fill("reset-pass-789")
            page.get_by_label("New password", exact=True).fill("second-pass-456")
            page.get_by_label("New password again").fill("second-pass-456")
            page.get_by_role("button", name="Change password").click()
            expect(page.locator("#status")).to_have_text("password of carol@newco.test changed")
            shot(page, "06-account")
        finally:
            browser.close()

    wait_for(lambda: imap_login(s, "carol@newco.test", "second-pass-456"), timeout=10)
    assert not imap_login(s, "carol@newco.test", "reset-pass-789")
    for n in ("01-dashboard", "02-domains", "03-users", "04-trace", "05-settings", "06-account"):
        assert (SHOTS / f"{n}.png").stat().st_size > 5000
