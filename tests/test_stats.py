"""The dashboard over time: counts kept in the store per hour and day, across restarts and
across the nodes of one PostgreSQL database; the API, the CLI and the charts in a browser
tell the same numbers."""

import http.client
import json
import os
import time

import pytest

from conftest import DOMAIN, PASSWORD
from helpers import ALICE, BOB, mx_send, submit, wait_for
from test_postgres import database, node  # noqa: F401 (fixture)
from test_web import BOSS, SHOTS, web_server

FAST = "[stats]\nflush = \"1s\"\n"


def stats(s, *args):
    return json.loads(s.cli("stats", "--json", *args).stdout)["report"]


def series(report, name):
    for x in report["series"]:
        if x["name"] == name:
            return x["values"]
    return [0] * len(report["starts"])


def total(report, name):
    return sum(v or 0 for v in series(report, name))


def msg(i):
    return f"From: {ALICE}\r\nTo: {BOB}\r\nSubject: count {i}\r\n\r\nBody {i}\r\n".encode()


def test_series_survive_a_restart_in_the_right_hour(make_server):
    s = make_server(extra_config=FAST, listeners=("smtp", "submissions", "http"))
    s.add_user(ALICE)
    s.add_user(BOB)
    s.start()
    began = int(time.time())
    for i in range(3):
        submit(s, ALICE, [BOB], msg(i))
    mx_send(s, "someone@far.test", [ALICE], b"Subject: from outside\r\n\r\nHi.\r\n")
    # Written within a flush, while the server runs.
    wait_for(lambda: total(stats(s), "received:submission") == 3, timeout=15)
    s.stop()
    s.start()
    for i in range(2):
        submit(s, ALICE, [BOB], msg(10 + i))
    # The last counts reach the store at shutdown, not only on the timer.
    s.stop()
    s.start()
    ended = int(time.time())
    r = stats(s)
    assert r["step"] == "Hour"
    assert total(r, "received:submission") == 5
    assert total(r, "received:mx") == 1
    assert total(r, "stored") == 6
    assert total(r, f"domain:in:{DOMAIN}") == 6 and total(r, f"domain:out:{DOMAIN}") == 5
    # In the hour they happened.
    hours = [t for t, v in zip(r["starts"], series(r, "received:submission")) if v]
    assert hours and all(began - began % 3600 <= t <= ended for t in hours), (hours, began, ended)
    # A sampled series: the queue is empty, the disk holds something.
    assert any(v is not None and v > 0 for v in series(r, "disk:used_bytes"))
    assert any(x["name"] == "latency:smtp_accept:p50_ms" and any(v is not None for v in x["values"])
               for x in r["series"])
    # The API says the same as the CLI.
    token = s.cli("token", "create", "stats").stdout.strip()
    c = http.client.HTTPConnection("127.0.0.1", s.port("http"), timeout=20)
    c.request("GET", "/api/v1/stats?range=24h", headers={"Authorization": f"Bearer {token}"})
    resp = c.getresponse()
    api = json.loads(resp.read())["report"]
    assert resp.status == 200
    for name in ("received:submission", "received:mx", "stored"):
        assert series(api, name) == series(r, name), name
    days = stats(s, "--range", "7d", "--step", "day")
    assert days["step"] == "Day" and total(days, "received:submission") == 5
    text = s.cli("stats").stdout
    line = [l for l in text.splitlines() if l.startswith("received:submission")][0]
    assert line.split()[1] == "5" and any(ch in line for ch in "▁▂▃▄▅▆▇█"), text
    assert "top senders" in text and ALICE in text


def test_two_nodes_add_to_one_series(make_server, database):  # noqa: F811
    a = node(make_server, database, extra=FAST)
    b = node(make_server, database, extra=FAST)
    a.cli("domain", "add", DOMAIN)
    a.add_user(ALICE)
    a.add_user(BOB)
    a.start()
    b.start()
    for i in range(2):
        submit(a, ALICE, [BOB], msg(i))
    for i in range(3):
        submit(b, ALICE, [BOB], msg(10 + i))
    wait_for(lambda: total(stats(a), "received:submission") == 5, timeout=20)
    assert total(stats(b), "received:submission") == 5
    a.stop()
    b.stop()


def test_dashboard_charts_match_the_api(make_server, loopback_dns):
    from playwright.sync_api import expect, sync_playwright
    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.fail("Debian's chromium is missing: scripts/deps installs it")
    SHOTS.mkdir(parents=True, exist_ok=True)
    s = web_server(make_server, extra=f'[dns]\nnameservers = ["127.0.0.1:{loopback_dns.port}"]\n{FAST}')
    s.start()
    for i in range(4):
        mx_send(s, f"sender{i % 2}@far.test", [ALICE], f"Subject: n{i}\r\n\r\nHi.\r\n".encode())
    wait_for(lambda: total(stats(s), "received:mx") == 4, timeout=15)
    want = stats(s)
    base = f"https://127.0.0.1:{s.port('https')}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 1400}).new_page()
            page.goto(base + "/admin")
            page.get_by_label("Email address").fill(BOSS)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
            flow = page.locator("#chart-flow")
            expect(flow.locator("svg.chart")).to_be_visible()
            points = flow.locator('g[data-series="received:mx"] [data-value]')
            expect(points.first).to_be_attached()
            drawn = sum(int(v) for v in points.evaluate_all("ns => ns.map(n => n.getAttribute('data-value'))"))
            assert drawn == total(want, "received:mx") == 4
            # Every chart of the groups counted is there, each with its table of numbers.
            for g in ("flow", "latency", "disk", "domains", "queue"):
                expect(page.locator(f"#chart-{g} h3")).to_be_visible()
            expect(flow.locator("details table")).to_be_attached()
            # The exact number on hover: each point's tooltip.
            assert "received from other servers" in points.first.locator("title").text_content()
            expect(page.locator("#top")).to_contain_text("sender0@far.test")
            page.screenshot(path=str(SHOTS / "07-dashboard-charts.png"), full_page=True)
            page.get_by_role("button", name="7 days").click()
            expect(page.locator("#range-7d")).to_have_attribute("aria-pressed", "true")
            expect(page.locator("#chart-flow svg.chart")).to_be_visible()
            # A top sender links to its trace.
            page.locator("#top").get_by_role("link", name="sender0@far.test").click()
            expect(page.locator("#trace-results")).to_contain_text("sender0@far.test")
        finally:
            browser.close()
    assert (SHOTS / "07-dashboard-charts.png").stat().st_size > 5000
