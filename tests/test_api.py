"""The JSON API (/api/v1) over real HTTP: token authentication, every endpoint, and that what
it does is what the CLI does (the account it creates logs in over IMAP)."""

import http.client
import imaplib
import json
import smtplib

from conftest import DOMAIN, PASSWORD
from helpers import ALICE, BOB, insecure_ctx, mx_send


def api(server, method, path, body=None, token=None, source="127.0.0.1"):
    c = http.client.HTTPConnection("127.0.0.1", server.port("http"), timeout=20, source_address=(source, 0))
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    c.request(method, "/api/v1" + path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = c.getresponse()
    data = r.read()
    return r.status, (json.loads(data) if data else None)


def can_log_in(server, address, password):
    with imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=30) as c:
        try:
            return c.login(address, password)[0] == "OK"
        except imaplib.IMAP4.error:
            return False


def rcpt_reply(server, sender, rcpt):
    """(code, text) of RCPT TO on the MX port."""
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail(sender)[0] == 250
        return c.rcpt(rcpt)


def test_api_end_to_end(make_server):
    """Every change made over the API is read back through another interface: the CLI, IMAP
    or SMTP (and the other way round for the token)."""
    s = make_server(listeners=("smtp", "imaps", "http"), extra_config="[smtp]\npregreet_wait_ms = 0")
    s.start()
    token = s.cli("token", "create", "ops").stdout.strip()
    assert token.startswith("pst_") and len(token) > 40
    assert "ops" in s.cli("token", "list").stdout
    # No token, a wrong one, another network without TLS: refused.
    st, body = api(s, "GET", "/domains")
    assert st == 401 and "postern token create" in body["error"]
    # Credentials come first: a bad body or id without a token is 401, never a parse error.
    assert api(s, "POST", "/users", {"nonsense": 1})[0] == 401
    assert api(s, "GET", "/queue/not-a-number")[0] == 401
    assert api(s, "GET", "/trace?limit=-1")[0] == 401
    assert api(s, "GET", "/domains", token="pst_wrong")[0] == 401
    st, body = api(s, "GET", "/domains", token=token, source="127.0.0.2")
    assert st == 200, "127.0.0.2 is loopback too"
    # Domains and users: a user made over the API logs in over IMAP.
    st, body = api(s, "POST", "/domains", {"name": "other.test"}, token)
    assert st == 201, body
    st, body = api(s, "GET", "/domains", token=token)
    assert st == 200 and set(body["names"]) >= {DOMAIN, "other.test"}
    assert s.cli("domain", "list").stdout.split() == [DOMAIN, "other.test"]
    st, body = api(s, "POST", "/users", {"address": "carol@other.test", "password": PASSWORD}, token)
    assert st == 201, body
    assert can_log_in(s, "carol@other.test", PASSWORD)
    st, body = api(s, "POST", "/users", {"address": "carol@other.test", "password": PASSWORD}, token)
    assert st == 400 and "exists" in body["error"]
    st, body = api(s, "POST", "/users", {"address": "x@other.test"}, token)
    assert st == 400 and "bad JSON body" in body["error"]
    assert "x@other.test" not in s.cli("user", "list").stdout, "a refused request creates nothing"
    assert api(s, "PUT", "/users/carol@other.test/password", {"password": "n3w-passw0rd"}, token)[0] == 200
    assert can_log_in(s, "carol@other.test", "n3w-passw0rd")
    assert not can_log_in(s, "carol@other.test", PASSWORD), "the old password no longer works"
    assert api(s, "PUT", "/users/carol@other.test/quota", {"bytes": 1000000, "messages": 50}, token)[0] == 200
    st, body = api(s, "GET", "/users", token=token)
    carol = [u for u in body["users"] if u["address"] == "carol@other.test"][0]
    assert carol["quota_bytes"] == 1000000
    # The quota as the user's mail program sees it (IMAP QUOTA, in KB and messages).
    with imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx(), timeout=30) as c:
        c.login("carol@other.test", "n3w-passw0rd")
        typ, data = c.getquotaroot("INBOX")
        assert typ == "OK" and b'"" (STORAGE 0 976 MESSAGE 0 50)' in data[1][0], data
    # Aliases, groups, forwarding, routing.
    assert rcpt_reply(s, "dave@far.test", "info@other.test")[0] == 550, "no such address yet"
    assert api(s, "POST", "/aliases", {"alias": "info@other.test", "targets": ["carol@other.test"]}, token)[0] == 201
    st, body = api(s, "GET", "/aliases", token=token)
    assert ["info@other.test", ["carol@other.test"]] in body["aliases"]
    assert "info@other.test\t-> carol@other.test" in s.cli("alias", "list").stdout
    st, body = api(s, "POST", "/groups", {"group": "team@other.test", "members": ["carol@other.test"],
                                          "policy": "anyone"}, token)
    assert st == 201, body
    assert rcpt_reply(s, "dave@far.test", "team@other.test")[0] == 250, "anyone may send to it"
    assert api(s, "PUT", "/groups/team@other.test/policy", {"policy": "members"}, token)[0] == 200
    st, body = api(s, "GET", "/groups", token=token)
    assert body["groups"][0][0] == "team@other.test"
    code, text = rcpt_reply(s, "dave@far.test", "team@other.test")
    assert code == 550 and b"only its members may send to it" in text, (code, text)
    assert s.cli("group", "members", "team@other.test").stdout.split() == ["carol@other.test"]
    st, body = api(s, "GET", "/route/info@other.test", token=token)
    assert st == 200 and body["destinations"] == ["local:carol@other.test"], body
    assert api(s, "PUT", "/users/carol@other.test/forward", {"to": "dave@far.test", "keep_copy": True},
               token)[0] == 200
    assert "carol@other.test is a user who forwards to dave@far.test, keeping a copy" in \
        s.cli("route", "carol@other.test").stdout
    assert api(s, "DELETE", "/users/carol@other.test/forward", token=token)[0] == 200
    assert "carol@other.test is a user: delivered to its INBOX" in s.cli("route", "carol@other.test").stdout
    # Sieve scripts.
    st, body = api(s, "PUT", "/users/carol@other.test/sieve/main",
                   {"source": 'require "fileinto"; fileinto "Work";', "activate": True}, token)
    assert st == 200 and "filters their mail now" in body["message"], body
    assert "main  ACTIVE" in s.cli("sieve", "list", "carol@other.test").stdout
    st, body = api(s, "PUT", "/users/carol@other.test/sieve/bad", {"source": "if {"}, token)
    assert st == 400 and "error" in body["error"]
    assert "bad" not in s.cli("sieve", "list", "carol@other.test").stdout.split()
    st, body = api(s, "GET", "/users/carol@other.test/sieve/main", token=token)
    assert body["message"] == 'require "fileinto"; fileinto "Work";'
    assert api(s, "PUT", "/users/carol@other.test/sieve-active", {"name": None}, token)[0] == 200
    listed = s.cli("sieve", "list", "carol@other.test").stdout
    assert "main" in listed and "ACTIVE" not in listed, listed
    st, body = api(s, "PUT", "/users/carol@other.test/sieve-active", {"source": "keep;"}, token)
    assert st == 400 and "unknown field" in body["error"], body
    assert api(s, "DELETE", "/users/carol@other.test/sieve/main", token=token)[0] == 200
    assert api(s, "GET", "/users/carol@other.test/sieve/main", token=token)[0] == 404
    assert "no Sieve scripts" in s.cli("sieve", "list", "carol@other.test").stdout
    # Queue and trace.
    assert mx_send(s, "dave@far.test", ["info@other.test"], b"Subject: via api\r\n\r\nx\r\n") == {}
    st, body = api(s, "GET", "/trace?to=carol@other.test", token=token)
    assert st == 200 and len(body["traces"]) == 1, body
    st, body = api(s, "GET", "/queue", token=token)
    assert st == 200 and body["entries"] == []
    assert api(s, "GET", "/queue/12345", token=token)[0] == 404
    assert api(s, "GET", "/queue/not-a-number", token=token)[0] == 404
    st, body = api(s, "GET", "/trace?limit=-1", token=token)
    assert st == 400 and "error" in body
    # Deleting: the alias, the user; the token last.
    assert api(s, "DELETE", "/aliases/info@other.test", token=token)[0] == 200
    assert "info@other.test" not in s.cli("alias", "list").stdout
    assert rcpt_reply(s, "dave@far.test", "info@other.test")[0] == 550
    assert api(s, "DELETE", "/users/carol@other.test", token=token)[0] == 200
    assert api(s, "DELETE", "/users/carol@other.test", token=token)[0] == 404
    assert "carol@other.test" not in s.cli("user", "list").stdout
    assert not can_log_in(s, "carol@other.test", "n3w-passw0rd")
    # A token deleted with the CLI no longer opens the API.
    s.cli("token", "delete", "ops")
    assert api(s, "GET", "/domains", token=token)[0] == 401


def test_every_endpoint_is_documented():
    import re
    from conftest import ROOT
    routes = set(re.findall(r'\.route\(\s*"(/[^"]+)"', (ROOT / "crates/http/src/api.rs").read_text()))
    documented = set(re.findall(r"^  (/\S+):$", (ROOT / "docs/openapi.yaml").read_text(), re.M))
    assert routes and routes == documented, (routes ^ documented)


def test_self_service_and_role_separation(make_server):
    import base64
    s = make_server(listeners=("smtp", "submissions", "imaps", "pop3s", "http"),
                    extra_config='[smtp]\npregreet_wait_ms = 0\n[auth]\nfailure_delay_ms = 0')
    s.add_user(ALICE)
    s.add_user(BOB)
    s.start()

    def me(method, path, body=None, user=ALICE, password=PASSWORD):
        c = http.client.HTTPConnection("127.0.0.1", s.port("http"), timeout=20)
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        c.request(method, "/api/v1" + path, body=json.dumps(body) if body is not None else None,
                  headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")

    st, body = me("GET", "/me")
    assert st == 200 and body["address"] == ALICE and body["vacation"] is False
    assert any(e["service"] == "IMAP" and e["port"] == s.port("imaps") and e["security"] == "SSL/TLS"
               for e in body["settings"]), body["settings"]
    # A wrong password says nothing about whether the account exists.
    st1, b1 = me("GET", "/me", password="wrong")
    st2, b2 = me("GET", "/me", user="nobody@example.test", password="wrong")
    assert st1 == st2 == 401 and b1 == b2
    # A user's password opens no admin endpoint; a token opens no /me.
    c = http.client.HTTPConnection("127.0.0.1", s.port("http"), timeout=20)
    c.request("GET", "/api/v1/users", headers={
        "Authorization": "Basic " + base64.b64encode(f"{ALICE}:{PASSWORD}".encode()).decode()})
    assert c.getresponse().status == 401
    token = s.cli("token", "create", "t").stdout.strip()
    assert api(s, "GET", "/me", token=token)[0] == 401
    # Vacation: on, replies once; off, and the script active before is active again.
    s.cli("sieve", "put", ALICE, "mine", "-", "--activate", input='require "fileinto"; keep;')
    st, body = me("PUT", "/me/vacation", {"text": "I am away.", "subject": "Away", "days": 3})
    assert st == 200, body
    assert me("GET", "/me")[1]["vacation"] is True
    import helpers
    helpers.submit(s, BOB, [ALICE], f"From: {BOB}\r\nTo: {ALICE}\r\nSubject: hi\r\n\r\nx\r\n".encode(), user=BOB)
    replies = [m for m in helpers.inbox(s, BOB) if b"Subject: Away" in m]
    assert len(replies) == 1 and b"I am away." in replies[0]
    assert len(helpers.inbox(s, ALICE)) == 1, "the script active before still keeps the mail"
    st, body = me("DELETE", "/me/vacation")
    assert st == 200
    assert "mine  ACTIVE" in s.cli("sieve", "list", ALICE).stdout
    # Vacation on, the script it runs after deleted meanwhile: off still works.
    assert me("PUT", "/me/vacation", {"text": "Away again."})[0] == 200
    assert "postern-vacation  ACTIVE" in s.cli("sieve", "list", ALICE).stdout
    s.cli("sieve", "delete", ALICE, "mine")
    assert me("DELETE", "/me/vacation")[0] == 200
    assert "no Sieve scripts" in s.cli("sieve", "list", ALICE).stdout
    # Forwarding and password.
    assert me("PUT", "/me/forward", {"to": BOB, "keep_copy": True})[0] == 200
    assert me("GET", "/me")[1]["forward"] == {"to": BOB, "keep_copy": True}
    assert f"{ALICE} is a user who forwards to {BOB}, keeping a copy" in s.cli("route", ALICE).stdout
    assert me("DELETE", "/me/forward")[0] == 200
    assert f"{ALICE} is a user: delivered to its INBOX" in s.cli("route", ALICE).stdout
    st, body = me("PUT", "/me/password", {"password": "x"})
    assert st == 400 and "at least" in body["error"], body
    assert me("PUT", "/me/password", {"password": "an0ther-passw0rd"})[0] == 200
    with imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx()) as c:
        assert c.login(ALICE, "an0ther-passw0rd")[0] == "OK"


def test_doctor_and_dns_records(make_server):
    from peers import Dns
    from conftest import free_port
    dns = Dns(free_port())
    dns.start(mx=[(DOMAIN, "mail." + DOMAIN, 10)], a=[("mail." + DOMAIN, "127.0.0.1")])
    try:
        s = make_server(listeners=("smtp", "http"), extra_config=f"""
[dns]
nameservers = ["127.0.0.1:{dns.port}"]
[doctor]
probe_domain = ""
ntp_server = ""
public_ip = "127.0.0.1"
""")
        s.start()
        token = s.cli("token", "create", "t").stdout.strip()
        st, body = api(s, "GET", f"/dns/{DOMAIN}?check=true", token=token)
        assert st == 200 and body["domain"] == DOMAIN
        mx = [r for r in body["records"] if r["type"] == "MX"][0]
        assert mx["status"] == "ok", mx
        spf = [r for r in body["records"] if r["type"] == "TXT" and "v=spf1" in r["value"]][0]
        assert spf["status"] == "missing"
        st, body = api(s, "GET", f"/dns/{DOMAIN}", token=token)
        assert all(r["status"] == "unchecked" for r in body["records"])
        assert api(s, "GET", "/dns/elsewhere.test", token=token)[0] == 404
        st, body = api(s, "GET", "/doctor", token=token)
        assert st == 200, body
        # The doctor of the CLI (`postern doctor --json`, which also checks the configuration
        # file and the storage) judges the same things the same way.
        cli = json.loads(s.cli("doctor", "--json", check=False).stdout)
        ours = {x["title"]: x["findings"] for x in body["sections"]}
        theirs = {x["title"]: x["findings"] for x in cli["sections"]}
        assert "Listeners" in ours and f"DNS records for {DOMAIN}" in ours, ours.keys()
        assert ours.keys() <= theirs.keys(), (ours.keys(), theirs.keys())
        for title in ("Listeners", f"DNS records for {DOMAIN}"):
            assert ours[title] == theirs[title], title
        assert any(f["level"] == "ok" and f["what"].startswith(f"MX {DOMAIN}.")
                   for f in ours[f"DNS records for {DOMAIN}"]), ours[f"DNS records for {DOMAIN}"]
        assert api(s, "GET", "/doctor")[0] == 401
    finally:
        dns.stop()
