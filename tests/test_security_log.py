"""The security log: every refused login, whatever the protocol, is one line in a fixed format,
and the fail2ban filter shipped in contrib/ counts each of them (fail2ban-regex, the real tool)."""

import imaplib
import poplib
import re
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PASSWORD
from helpers import ALICE, insecure_ctx

FILTER = Path(__file__).resolve().parent.parent / "contrib" / "fail2ban" / "filter.d" / "postern.conf"


def imap_login(s, user, password):
    m = imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx())
    try:
        m.login(user, password)
        return True
    except imaplib.IMAP4.error:
        return False
    finally:
        try:
            m.logout()
        except Exception:
            pass


def pop3_login(s, user, password):
    p = poplib.POP3_SSL("127.0.0.1", s.port("pop3s"), context=insecure_ctx())
    try:
        p.user(user)
        p.pass_(password)
        return True
    except poplib.error_proto:
        return False
    finally:
        p.quit()


def smtp_login(s, user, password):
    c = smtplib.SMTP_SSL("127.0.0.1", s.port("submissions"), context=insecure_ctx())
    c.ehlo()
    c.user, c.password = user, password
    try:
        c.auth("PLAIN", c.auth_plain)  # one attempt: login() would try each mechanism
        return True
    except smtplib.SMTPAuthenticationError:
        return False
    finally:
        c.quit()


def refused(log):
    return [line for line in log.splitlines() if "security: login refused" in line]


def fail2ban_count(log_path):
    r = subprocess.run(["fail2ban-regex", str(log_path), str(FILTER)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"^Failregex: (\d+) total", r.stdout, re.M)
    assert m, r.stdout
    return int(m.group(1)), r.stdout


def test_refused_logins_are_logged_and_fail2ban_counts_each(make_server):
    s = make_server(extra_config="[auth]\nmax_failures = 4\nfailure_delay_ms = 50\nlockout = \"2s\"\n")
    s.add_user(ALICE)
    s.start()
    assert imap_login(s, ALICE, PASSWORD), "a good login"
    assert not imap_login(s, ALICE, "wrong-password")
    assert not pop3_login(s, "ghost@example.test", "wrong-password")
    assert not smtp_login(s, ALICE, "wrong-password")
    assert not imap_login(s, ALICE, "still-wrong")  # the fourth: the address is locked out now
    assert not pop3_login(s, ALICE, PASSWORD), "locked out even with the right password"
    log = s.log_text()
    lines = refused(log)
    assert len(lines) == 5, log
    want = [("imap", ALICE, "wrong password"), ("pop3", "ghost@example.test", "no such account"),
            ("smtp", ALICE, "wrong password"), ("imap", ALICE, "wrong password"),
            ("pop3", ALICE, "locked out for")]
    for line, (protocol, account, reason) in zip(lines, want):
        assert f"ip=127.0.0.1 protocol={protocol} account={account} reason=\"{reason}" in line, line
    assert re.search(r"security: lockout started ip=127\.0\.0\.1 protocol=imap account=\S+ "
                     r"reason=\"client address for 2 s\"", log), log

    count, out = fail2ban_count(s.log_path)
    assert count == 5, out
    assert "127.0.0.1" in subprocess.run(
        ["fail2ban-regex", "--print-all-matched", str(s.log_path), str(FILTER)],
        capture_output=True, text=True, timeout=120).stdout

    # The lockout ends on its own; the end is logged, the next good login works.
    time.sleep(2.2)
    assert smtp_login(s, ALICE, PASSWORD)
    log = s.log_text()
    assert "security: lockout ended" in log, log
    assert len(refused(log)) == 5, "a good login adds nothing"
    assert fail2ban_count(s.log_path)[0] == 5


def test_odd_usernames_cannot_forge_log_fields(make_server):
    """A username with spaces, quotes or a fake 'ip=' stays one field: fail2ban bans the client,
    never an address the attacker wrote into the name."""
    s = make_server(extra_config="[auth]\nfailure_delay_ms = 10\n")
    s.start()
    assert not smtp_login(s, 'x ip=192.0.2.1 protocol=smtp account=y reason="', "pw")
    log = s.log_text()
    lines = refused(log)
    assert len(lines) == 1, log
    assert "ip=127.0.0.1 protocol=smtp" in lines[0]
    count, out = fail2ban_count(s.log_path)
    assert count == 1, out
    assert "192.0.2.1" not in re.sub(r"account=\S*", "", lines[0])
    matched = subprocess.run(["fail2ban-regex", "--print-all-matched", str(s.log_path), str(FILTER)],
                             capture_output=True, text=True, timeout=120).stdout
    assert "127.0.0.1" in matched and "192.0.2.1" not in re.sub(r"account=\S*", "", matched)


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_each_protocol_names_itself(make_server, protocol):
    s = make_server(extra_config="[auth]\nfailure_delay_ms = 10\n")
    s.add_user(ALICE)
    s.start()
    login = {"imap": imap_login, "pop3": pop3_login, "smtp": smtp_login}[protocol]
    assert not login(s, ALICE, "wrong-password")
    lines = refused(s.log_text())
    assert len(lines) == 1 and f"protocol={protocol} account={ALICE}" in lines[0], lines
