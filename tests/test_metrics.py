"""Prometheus /metrics after real traffic: the counters match what was sent."""

import http.client
import imaplib
import re
import smtplib

from conftest import PASSWORD
from helpers import ALICE, BOB, insecure_ctx, mx_send, submit


def scrape(server, source="127.0.0.1"):
    c = http.client.HTTPConnection("127.0.0.1", server.port("http"), timeout=10,
                                   source_address=(source, 0))
    c.request("GET", "/metrics")
    r = c.getresponse()
    return r.status, r.read().decode()


def value(text, name):
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_metrics_after_traffic(make_server):
    s = make_server(listeners=("smtp", "submissions", "imaps", "http"),
                    extra_config='[http]\nmetrics_networks = ["127.0.0.1/32"]\n[smtp]\npregreet_wait_ms = 0')
    s.add_user(ALICE)
    s.add_user(BOB)
    s.start()
    for i in range(3):
        assert mx_send(s, "carol@far.test", [ALICE, BOB], f"Subject: m{i}\r\n\r\nx\r\n".encode()) == {}
    submit(s, ALICE, [BOB], b"Subject: from alice\r\n\r\nx\r\n")
    with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=30) as c:
        c.ehlo("client.test")
        c.mail("carol@far.test")
        assert c.rcpt("nobody@example.test")[0] == 550
    try:
        with imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx()) as c:
            c.login(ALICE, "wrong password")
    except imaplib.IMAP4.error:
        pass
    status, text = scrape(s)
    assert status == 200
    assert value(text, 'postern_messages_received_total{role="mx"}') == 3
    assert value(text, 'postern_messages_received_total{role="submission"}') == 1
    assert value(text, "postern_messages_delivered_local_total") == 7, "3 x 2 recipients + 1"
    assert value(text, 'postern_auth_failures_total{protocol="imap"}') == 1
    assert value(text, "postern_smtp_accept_seconds_count") == 4
    assert value(text, 'postern_smtp_accept_seconds_bucket{le="+Inf"}') == 4
    assert value(text, 'postern_sessions{protocol="http"}') >= 1, "this scrape"
    assert value(text, "postern_storage_commits_total") > 0
    assert value(text, "postern_storage_fsyncs_total") > 0
    assert value(text, "postern_queue_messages") == 0
    # Only the configured networks may read it.
    status, text = scrape(s, source="127.0.0.2")
    assert status == 403 and "metrics_networks" in text
