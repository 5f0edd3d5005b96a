"""Shared mailboxes and delegation, from the administrator's side and the sender's, over the
real binary and real sockets: `postern mailbox` and `postern send-as`, logins as a shared
mailbox refused with what to do instead (SMTP, IMAP, POP3, the web), the header From and
Sender of submitted mail checked against send-as grants (with the decision in the trace and a
copy in the shared mailbox's Sent folder), `postern route` and `postern check` explaining it,
and the same operations over the JSON API and the web session (admin pages, a user's own
folders' access lists).

What members then see over IMAP (Shared/info@..., its folders, their own \\Seen) is for the
IMAP tests: no one logs in as the shared mailbox, so its Sent copy is read here from a Maildir
export of it instead."""

import email
import imaplib
import mailbox
import poplib
import re
import smtplib

import pytest

from conftest import DOMAIN, PASSWORD, free_port, run
from helpers import ALICE, BOB, inbox, insecure_ctx, mx_send, submit, submit_id
from test_web import Browser

CAROL = "carol@" + DOMAIN
INFO = "info@" + DOMAIN
BOSS = "boss@" + DOMAIN
HOST = "mail." + DOMAIN
SHARED_TEXT = f"{INFO} is a shared mailbox: log in as yourself; it appears in your mail program under Shared/{INFO}"


@pytest.fixture
def s(make_server):
    """A running server with alice@, bob@, carol@ and boss@ (an administrator of the web
    interface), on every listener the tests use."""
    srv = make_server(listeners=("smtp", "submission", "submissions", "imaps", "pop3s", "https", "http"),
                      extra_config=f"""
[smtp]
pregreet_wait_ms = 0
[http]
admins = ["{BOSS}"]
[auth]
failure_delay_ms = 10
""")
    for a in (ALICE, BOB, CAROL, BOSS):
        srv.add_user(a)
    srv.start()
    return srv


def fails(server, *args):
    """Runs a command that must fail; its error output."""
    r = server.cli(*args, check=False)
    assert r.returncode != 0, (args, r.stdout)
    return r.stderr + r.stdout


def message(sender, to, subject, sender_field=None, body="hello\r\n"):
    h = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
    if sender_field:
        h += f"Sender: {sender_field}\r\n"
    return (h + f"Message-ID: <{subject.replace(' ', '.')}@{DOMAIN}>\r\n\r\n" + body).encode()


def send(server, envelope, rcpts, msg, user=ALICE):
    """Submits over 465 as `user`; (code, text) of the final reply."""
    c = smtplib.SMTP_SSL("127.0.0.1", server.port("submissions"), context=insecure_ctx(), timeout=30)
    c.login(user, PASSWORD)
    try:
        c.sendmail(envelope, rcpts, msg)
        return 250, ""
    except smtplib.SMTPDataError as e:
        return e.smtp_code, e.smtp_error.decode()
    except smtplib.SMTPSenderRefused as e:
        return e.smtp_code, e.smtp_error.decode()
    finally:
        c.close()


def subjects(server, user):
    return [email.message_from_bytes(m)["Subject"] for m in inbox(server, user)]


def test_shared_mailbox_from_creation_to_deletion(s):
    out = s.cli("mailbox", "add", INFO, "--members", ALICE, BOB).stdout
    assert f"shared mailbox {INFO} added" in out and f"Shared/{INFO}" in out, out
    assert ALICE in out and BOB in out and "lrswipkxte" in out

    # Members must be accounts of ours that people log in as; the address must be new.
    assert "nobody@example.test is no account of this server" in fails(
        s, "mailbox", "add", "help@" + DOMAIN, "--members", "nobody@" + DOMAIN)
    assert f"{INFO} is a shared mailbox: give rights to the people who use it" in fails(
        s, "mailbox", "add", "sales@" + DOMAIN, "--members", INFO)
    assert "personal account" in fails(s, "mailbox", "add", ALICE, "--members", BOB)
    assert "already exists" in fails(s, "mailbox", "add", INFO, "--members", CAROL)
    assert "domain far.test is not local" in fails(s, "mailbox", "add", "x@far.test", "--members", ALICE)
    assert "'z' is not a right" in fails(s, "mailbox", "add", "help@" + DOMAIN, "--members", ALICE, "--rights", "lrz")
    assert "nobody" not in s.cli("user", "list").stdout and "help@" not in s.cli("user", "list").stdout, \
        "a refused mailbox leaves nothing behind"

    listing = s.cli("mailbox", "list").stdout
    assert listing.startswith(INFO) and "0 messages" in listing, listing
    assert f"  {ALICE}: lrswipkxte\n" in listing and f"  {BOB}: lrswipkxte\n" in listing, listing
    # The account list shows it as what it is; it has no password to set.
    users = s.cli("user", "list").stdout
    assert re.search(rf"^{re.escape(INFO)}\t.*shared mailbox", users, re.M), users
    assert not re.search(rf"^{re.escape(ALICE)}\t.*shared mailbox", users, re.M)
    assert f"{INFO} is a shared mailbox: no one logs in as it" in fails(
        s, "user", "passwd", INFO, "--password", "some-passw0rd-1")

    # Grant (every folder, replacing what was there), revoke.
    assert f"{CAROL} may now use the" in s.cli("mailbox", "grant", INFO, CAROL, "--rights", "lr").stdout
    assert f"  {CAROL}: lr\n" in s.cli("mailbox", "list").stdout
    s.cli("mailbox", "grant", INFO, CAROL, "--rights", "lrs")
    assert f"  {CAROL}: lrs\n" in s.cli("mailbox", "list").stdout
    assert "is a personal account, not a shared mailbox" in fails(s, "mailbox", "grant", ALICE, BOB)
    assert f"there is no shared mailbox help@{DOMAIN}" in fails(s, "mailbox", "grant", "help@" + DOMAIN, BOB)
    assert f"{BOB} no longer has access to {INFO}" in s.cli("mailbox", "revoke", INFO, BOB).stdout
    listing = s.cli("mailbox", "list").stdout
    assert BOB not in listing and ALICE in listing, listing
    assert f"{BOB} has no rights on {INFO}" in fails(s, "mailbox", "revoke", INFO, BOB)

    # Mail to it arrives like mail to anyone, and route says who reads it.
    route = s.cli("route", INFO).stdout
    assert f"{INFO} is a shared mailbox: delivered to its INBOX" in route, route
    assert f"its members read it under Shared/{INFO}" in route and f"  {ALICE}: lrswipkxte" in route, route
    assert not mx_send(s, "someone@far.test", [INFO], message("someone@far.test", INFO, "question"))
    assert "1 messages" in s.cli("mailbox", "list").stdout

    # Deleting it takes its mail; afterwards the address is unknown.
    assert f"shared mailbox {INFO} deleted with all its mail" in s.cli("mailbox", "delete", INFO).stdout
    assert "no shared mailbox" in s.cli("mailbox", "list").stdout
    assert INFO not in s.cli("user", "list").stdout
    assert f"{INFO}: no such user or alias" in s.cli("route", INFO).stdout
    assert "is a personal account" in fails(s, "mailbox", "delete", ALICE), "only shared mailboxes"
    assert ALICE in s.cli("user", "list").stdout


def test_no_one_logs_in_as_a_shared_mailbox(s):
    s.cli("mailbox", "add", INFO, "--members", ALICE)
    # SMTP AUTH
    c = smtplib.SMTP_SSL("127.0.0.1", s.port("submissions"), context=insecure_ctx(), timeout=30)
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        c.login(INFO, "whatever-it-is")
    assert e.value.smtp_code == 535 and SHARED_TEXT in e.value.smtp_error.decode(), e.value
    c.close()
    # IMAP
    with imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx()) as c:
        with pytest.raises(imaplib.IMAP4.error) as e:
            c.login(INFO, "whatever-it-is")
        assert SHARED_TEXT in str(e.value), e.value
    # POP3
    p = poplib.POP3_SSL("127.0.0.1", s.port("pop3s"), context=insecure_ctx(), timeout=30)
    p.user(INFO)
    with pytest.raises(poplib.error_proto) as e:
        p.pass_("whatever-it-is")
    assert SHARED_TEXT in str(e.value), e.value
    p.close()
    # The web
    st, body = Browser(s).api("POST", "/session", {"address": INFO, "password": "whatever-it-is"})
    assert st == 401 and body["error"] == SHARED_TEXT, body
    # Each refusal is in the security log; none counts toward a lockout of the client.
    assert len(re.findall(rf"security: login refused .*account={re.escape(INFO)} reason=\"shared mailbox\"",
                          s.log_text())) >= 4
    assert not submit(s, ALICE, [BOB], message(ALICE, BOB, "still fine"))


def test_send_as_a_shared_mailbox_and_on_behalf(s):
    s.cli("mailbox", "add", INFO, "--members", ALICE, BOB)

    # Before any grant: neither the envelope nor the header may name info@.
    code, text = send(s, INFO, [CAROL], message(INFO, CAROL, "too early"))
    assert code == 553 and f"Sender address <{INFO}> is not yours" in text, text
    assert f"postern send-as add {INFO} {ALICE}" in text, text
    code, text = send(s, ALICE, [CAROL], message(INFO, CAROL, "too early"))
    assert code == 553 and "5.7.1" in text, (code, text)
    assert f"From: <{INFO}> is not yours: you are logged in as {ALICE}" in text, text
    assert f"ask the administrator: postern send-as add {INFO} {ALICE}" in text, text

    # Grants: who may send as what; refused for what makes no sense.
    assert f"{ALICE} may send as {INFO}" in s.cli("send-as", "add", INFO, ALICE).stdout
    assert "is a shared mailbox: no one logs in as it" in fails(s, "send-as", "add", BOB, INFO)
    assert "is not an address of this server" in fails(s, "send-as", "add", "x@far.test", ALICE)
    assert "is neither an account, a shared mailbox nor an alias" in fails(s, "send-as", "add", "ghost@" + DOMAIN, ALICE)
    assert "is no account of this server" in fails(s, "send-as", "add", INFO, "ghost@" + DOMAIN)
    assert "already" in fails(s, "send-as", "add", ALICE, ALICE)
    assert f"{CAROL} may send on behalf of {BOB} (From: {BOB} with Sender: {CAROL})" in \
        s.cli("send-as", "add", BOB, CAROL, "--on-behalf").stdout
    grants = s.cli("send-as", "list").stdout
    assert f"{ALICE} may send as {INFO}" in grants and f"{CAROL} may send on behalf of {BOB}" in grants, grants

    # Sent as info@: accepted, the decision in the trace, a seen copy in info@'s Sent.
    tid = submit_id(s, INFO, [CAROL], message(INFO, CAROL, "from the team"))
    assert "from the team" in subjects(s, CAROL)
    trace = s.cli("trace", "--id", tid).stdout
    assert f"sent as {INFO} by {ALICE} (send-as grant)" in trace, trace
    assert f"a copy to {INFO}, folder Sent" in trace, trace
    assert "delivered as" in trace or "delivered" in trace
    # The envelope may stay the user's own with the header From info@.
    code, text = send(s, ALICE, [CAROL], message(f'"The team" <{INFO}>', CAROL, "second from the team"))
    assert code == 250, text
    out = s.root / "info-export"
    s.cli("storage", "export-maildir", INFO, str(out))
    md = mailbox.Maildir(out, factory=None, create=False)
    sent = {m["Subject"]: m for m in md.get_folder("Sent")}
    assert set(sent) == {"from the team", "second from the team"}, sent.keys()
    assert all("S" in m.get_flags() for m in sent.values()), "stored as seen"
    assert list(md) == [], "nothing in its INBOX"
    # Nothing changes for mail sent as oneself: no copy anywhere else, no decision traced.
    tid = submit_id(s, ALICE, [CAROL], message(ALICE, CAROL, "just me"))
    assert "sent as" not in s.cli("trace", "--id", tid).stdout

    # On behalf of bob@: only with Sender: the delegate.
    code, text = send(s, CAROL, [ALICE], message(BOB, ALICE, "no sender"), user=CAROL)
    assert code == 553 and f"From: <{BOB}> is not yours: you ({CAROL}) may send on behalf of it only with Sender: {CAROL}" in text, text
    code, text = send(s, CAROL, [ALICE], message(BOB, ALICE, "wrong sender", sender_field=ALICE), user=CAROL)
    assert code == 553 and f"Sender: <{ALICE}> is not yours" in text, text
    tid = submit_id(s, CAROL, [ALICE], message(BOB, ALICE, "for the boss", sender_field=CAROL), user=CAROL)
    assert "for the boss" in subjects(s, ALICE)
    assert f"sent on behalf of {BOB} by {CAROL}" in s.cli("trace", "--id", tid).stdout

    # Still refused: another user's address without a grant; unchanged: addresses elsewhere.
    code, text = send(s, ALICE, [CAROL], message(BOB, CAROL, "pretending"))
    assert code == 553 and f"From: <{BOB}> is not yours" in text, text
    code, text = send(s, ALICE, [CAROL], message(CAROL, CAROL, "pretending", sender_field=ALICE))
    assert code == 553 and f"From: <{CAROL}> is not yours" in text, text
    code, text = send(s, ALICE, [CAROL], message("alice.private@far.test", CAROL, "from elsewhere"))
    assert code == 250, text
    assert "from elsewhere" in subjects(s, CAROL)

    # route tells the grants; removing one ends it.
    route = s.cli("route", INFO).stdout
    assert f"{ALICE} may send as {INFO}" in route, route
    assert f"{ALICE} may no longer send as {INFO}" in s.cli("send-as", "remove", INFO, ALICE).stdout
    assert "there is no send-as grant" in fails(s, "send-as", "remove", INFO, ALICE)
    code, text = send(s, ALICE, [CAROL], message(INFO, CAROL, "too late"))
    assert code == 553 and f"From: <{INFO}> is not yours" in text, text
    # Deleting the delegate's account takes its grants with it.
    s.cli("user", "del", CAROL)
    assert CAROL not in s.cli("send-as", "list").stdout


def test_check_tells_a_member_where_the_shared_mailbox_is(s):
    from peers import Dns
    s.cli("mailbox", "add", INFO, "--members", ALICE)
    s.cli("send-as", "add", INFO, ALICE, "--on-behalf")
    dns = Dns(free_port())
    dns.start(a=[(HOST, "127.0.0.1")])
    try:
        def check(address):
            r = run("check", address, "--password-stdin", "--no-discover", "--dns", f"127.0.0.1:{dns.port}",
                    "--timeout", "3", "--ca", s.data / "tls" / "cert.pem",
                    "--imap", f"{HOST}:{s.port('imaps')}:ssl", "--smtp", f"{HOST}:{s.port('submissions')}:ssl",
                    input=PASSWORD + "\n", check=False, config=s.config, timeout=90)
            print(r.stdout, r.stderr)
            return r.stdout + r.stderr
        out = check(ALICE)
        assert f"Shared with {ALICE} on this server" in out, out
        assert f"member of the shared mailbox {INFO}: your mail program shows it under Shared/{INFO}" in out, out
        assert f"{ALICE} may send on behalf of {INFO}" in out, out
        out = check(INFO)
        assert f"{INFO} is a shared mailbox: no one logs in as it" in out, out
        assert f"under Shared/{INFO}" in out
    finally:
        dns.stop()


def test_sharing_over_the_api_and_the_web(s):
    admin, alice, bob = Browser(s), Browser(s), Browser(s)
    assert admin.login(BOSS)[0] == 200 and alice.login(ALICE)[0] == 200 and bob.login(BOB)[0] == 200

    # The admin's pages: shared mailboxes and send-as grants, the same requests as the CLI.
    st, r = admin.api("POST", "/shared-mailboxes", {"address": INFO, "members": [ALICE]}, csrf=False)
    assert st == 403, "changes need the session's CSRF token"
    st, r = admin.api("POST", "/shared-mailboxes", {"address": INFO, "members": [ALICE]})
    assert st == 201 and f"shared mailbox {INFO} added" in r["message"], r
    st, r = admin.api("POST", "/shared-mailboxes", {"address": "x@" + DOMAIN, "members": ["ghost@" + DOMAIN]})
    assert st == 400 and "is no account of this server" in r["error"], r
    st, r = admin.api("PUT", f"/shared-mailboxes/{INFO}/members/{BOB}", {"rights": "lr"})
    assert st == 200, r
    st, r = admin.api("GET", "/shared-mailboxes")
    [m] = r["mailboxes"]
    assert m["address"] == INFO and {(x["identifier"], x["rights"]) for x in m["members"]} == \
        {(ALICE, "lrswipkxte"), (BOB, "lr")}, m
    assert admin.api("DELETE", f"/shared-mailboxes/{INFO}/members/{BOB}")[0] == 200
    assert admin.api("DELETE", f"/shared-mailboxes/{INFO}/members/{BOB}")[0] == 404
    assert any(u["address"] == INFO and u["shared"] for u in admin.api("GET", "/users")[1]["users"])

    st, r = admin.api("POST", "/send-as", {"address": INFO, "delegate": ALICE})
    assert st == 201, r
    st, r = admin.api("POST", "/send-as", {"address": BOB, "delegate": ALICE, "on_behalf": True})
    assert st == 201, r
    st, r = admin.api("GET", "/send-as")
    assert {(g["address"], g["delegate"], g["mode"]) for g in r["grants"]} == \
        {(INFO, ALICE, "as"), (BOB, ALICE, "on-behalf")}, r
    st, r = admin.api("GET", f"/users/{ALICE}/access")
    assert st == 200 and [w["owner"] for w in r["shared_with"]] == [INFO] and r["shared_with"][0]["shared"], r
    assert admin.api("DELETE", f"/send-as/{BOB}/{ALICE}")[0] == 200
    assert admin.api("DELETE", f"/send-as/{BOB}/{ALICE}")[0] == 404
    # Users reach none of it.
    for method, path, body in [("GET", "/shared-mailboxes", None), ("GET", "/send-as", None),
                               ("POST", "/send-as", {"address": INFO, "delegate": BOB})]:
        assert bob.api(method, path, body)[0] == 403, path

    # A user's own folders: each with its access list, lines given and taken away.
    st, r = alice.api("GET", "/me/sharing")
    assert st == 200 and r["address"] == ALICE, r
    names = [f["name"] for f in r["folders"]]
    assert names[0] == "INBOX" and "Sent" in names and all(f["acl"] == [] for f in r["folders"]), r
    assert [w["owner"] for w in r["shared_with"]] == [INFO] and r["send_as"][0]["address"] == INFO, r
    line = {"folder": "INBOX", "identifier": BOB, "rights": "lr"}
    assert alice.api("PUT", "/me/sharing", line, csrf=False)[0] == 403
    st, r = alice.api("PUT", "/me/sharing", line)
    assert st == 200 and BOB in r["message"], r
    inbox_acl = next(f["acl"] for f in alice.api("GET", "/me/sharing")[1]["folders"] if f["name"] == "INBOX")
    assert inbox_acl == [{"identifier": BOB, "rights": "lr"}], inbox_acl
    assert [w["owner"] for w in bob.api("GET", "/me/sharing")[1]["shared_with"]] == [ALICE]
    for bad, status, words in [
        ({"identifier": "ghost@" + DOMAIN}, 400, "is no account of this server"),
        ({"identifier": INFO}, 400, "is a shared mailbox"),
        ({"identifier": ALICE}, 400, "that is you"),
        ({"identifier": "$nogroup@" + DOMAIN}, 400, "is no alias or group"),
        ({"rights": "lrq"}, 400, "is not a right"),
        ({"rights": ""}, 400, "at least one right"),
        ({"folder": "Nope"}, 404, "you have no folder"),
    ]:
        st, r = alice.api("PUT", "/me/sharing", {**line, **bad})
        assert st == status and words in r["error"], (bad, st, r)
    st, r = alice.api("PUT", "/me/sharing", {"folder": "Sent", "identifier": "$" + DOMAIN, "rights": "lr"})
    assert st == 200, r
    assert alice.api("DELETE", f"/me/sharing?folder=INBOX&identifier={BOB}", csrf=False)[0] == 403
    assert alice.api("DELETE", f"/me/sharing?folder=INBOX&identifier={BOB}")[0] == 200
    assert alice.api("DELETE", f"/me/sharing?folder=INBOX&identifier={BOB}")[0] == 404
    inbox_acl = next(f["acl"] for f in alice.api("GET", "/me/sharing")[1]["folders"] if f["name"] == "INBOX")
    assert inbox_acl == []

    # The page's script has the forms for both.
    st, js = alice.call("GET", "/ui/app.js")
    assert st == 200 and b"/shared-mailboxes" in js and b"/me/sharing" in js and b"/send-as" in js


def test_sharing_pages_in_a_real_browser(s):
    import os
    from playwright.sync_api import expect, sync_playwright
    from test_web import SHOTS
    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.fail("Debian's chromium is missing: scripts/deps installs it")
    SHOTS.mkdir(parents=True, exist_ok=True)
    base = f"https://127.0.0.1:{s.port('https')}"

    def shot(page, name):
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def log_in(page, who):
        page.goto(base + "/admin")
        page.get_by_label("Email address").fill(who)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
            page = ctx.new_page()
            log_in(page, BOSS)
            expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
            page.get_by_role("link", name="Shared mailboxes").click()
            expect(page.get_by_text("No shared mailbox yet.")).to_be_visible()
            page.locator("#shared-address").fill(INFO)
            page.locator("#shared-members").fill(f"{ALICE}, {BOB}")
            page.get_by_role("button", name="Create shared mailbox").click()
            shared = page.locator("#shared-list")
            row = shared.get_by_role("row", name=INFO)
            expect(row).to_contain_text(f"{ALICE}: lrswipkxte")
            row.get_by_label("New member of " + INFO).fill(CAROL)
            row.get_by_label("Rights").fill("lr")
            row.get_by_role("button", name="Grant").click()
            expect(shared.get_by_role("row", name=INFO)).to_contain_text(f"{CAROL}: lr")
            shared.locator(".member", has_text=BOB).get_by_role("button", name="Revoke").click()
            expect(shared.get_by_role("row", name=INFO)).not_to_contain_text(BOB)
            assert BOB not in s.cli("mailbox", "list").stdout
            page.locator("#send-as-address").fill(INFO)
            page.locator("#send-as-delegate").fill(ALICE)
            page.get_by_role("button", name="Allow").click()
            expect(page.locator("#send-as-list").get_by_role("row", name=INFO)).to_contain_text("as the address")
            shot(page, "06-shared-mailboxes")
            page.get_by_role("link", name="Log out").click()

            # A user shares a folder of theirs, then takes it back.
            log_in(page, ALICE)
            expect(page.get_by_role("heading", name="My account")).to_be_visible()
            expect(page.locator("#shared-with-me")).to_contain_text(f"Shared/{INFO}")
            expect(page.locator("#shared-with-me")).to_contain_text("folders, rights lrswipkxte")
            expect(page.locator("#sharing")).to_contain_text(f"You may send as {INFO}")
            page.locator("#share-folder").select_option("Sent")
            page.locator("#share-identifier").fill(BOB)
            page.locator("#share-rights").fill("lrs")
            page.get_by_role("button", name="Share").click()
            mine = page.locator("#my-folders")
            expect(mine.get_by_role("row", name="Sent")).to_contain_text(f"{BOB}: lrs")
            page.locator("#share-identifier").fill("nobody@" + DOMAIN)
            page.get_by_role("button", name="Share").click()
            expect(page.locator("#status")).to_contain_text("is no account of this server")
            shot(page, "07-account-sharing")
            mine.get_by_role("row", name="Sent").get_by_role("button", name="Remove").click()
            expect(mine.get_by_role("row", name="Sent")).to_contain_text("only you")
        finally:
            browser.close()
