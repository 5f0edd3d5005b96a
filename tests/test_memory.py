"""Large messages go through the server without being held whole in memory more than once: a
50 MB message delivered over SMTP, or appended over IMAP, raises the server's resident memory
(its peak, VmHWM) by less than twice the message's size, and arrives intact."""

import hashlib
import imaplib
import os
import smtplib

import pytest

from conftest import DOMAIN, PASSWORD, report
from helpers import ALICE, insecure_ctx, pop3

pytestmark = pytest.mark.xdist_group("memory")

SIZE = 50 << 20
LIMITS = """
[smtp]
max_message_size = "60M"
[imap]
max_literal = "60M"
"""


def big_message() -> bytes:
    """About SIZE bytes: a short text part and a base64 attachment, as mail programs send."""
    # base64 takes 57 bytes to a 78-byte line.
    raw = os.urandom(SIZE // 78 * 57 - 4096)
    b64 = __import__("base64").encodebytes(raw).replace(b"\n", b"\r\n")
    return (
        b"From: Alice <alice@" + DOMAIN.encode() + b">\r\nTo: alice@" + DOMAIN.encode()
        + b"\r\nSubject: the big one\r\nMessage-ID: <big@example.test>\r\n"
        b"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
        b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the attachment.\r\n"
        b"--b1\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\n"
        b"Content-Disposition: attachment; filename=\"data.bin\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--b1--\r\n"
    )


def memory_kb(server, field):
    for line in open(f"/proc/{server.proc.pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


def started(make_server):
    s = make_server(extra_config=LIMITS)
    s.add_user(ALICE)
    s.start()
    # One small message first, so what the first message costs anyway (buffers, the
    # store's pages) is in the baseline.
    smtp = smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=60)
    smtp.sendmail("warm@far.test", [ALICE], b"Subject: warm up\r\n\r\nhello\r\n")
    smtp.quit()
    return s


def stored_intact(server, msg):
    """The newest INBOX message, read back over POP3 (streamed from storage), ends with the
    message sent, byte for byte (our trace fields come before it)."""
    p = pop3(server)
    n, _ = p.stat()
    lines = p.retr(n)[1]
    p.quit()
    got = b"\r\n".join(lines) + b"\r\n"
    assert got.endswith(msg), "the stored message differs from the one sent"
    assert hashlib.sha256(got[-len(msg):]).digest() == hashlib.sha256(msg).digest()


def test_large_message_over_smtp(make_server):
    s = started(make_server)
    msg = big_message()
    before = memory_kb(s, "VmRSS")
    smtp = smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=300)
    smtp.ehlo("big.far.test")
    smtp.mail("sender@far.test")
    smtp.rcpt(ALICE)
    code, text = smtp.data(msg)
    smtp.quit()
    assert code == 250, text
    peak = memory_kb(s, "VmHWM")
    grew = (peak - before) * 1024
    report(f"50 MB message over SMTP: server peak memory +{grew / len(msg):.2f}x its size "
           f"({before} KB -> peak {peak} KB)")
    assert grew < 2 * len(msg), f"memory grew by {grew} bytes for a {len(msg)}-byte message"
    stored_intact(s, msg)


def test_large_message_over_imap_append(make_server):
    s = started(make_server)
    msg = big_message()
    before = memory_kb(s, "VmRSS")
    m = imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx(), timeout=300)
    m.login(ALICE, PASSWORD)
    typ, data = m.append("INBOX", None, None, msg)
    m.logout()
    assert typ == "OK", data
    peak = memory_kb(s, "VmHWM")
    grew = (peak - before) * 1024
    report(f"50 MB message by IMAP APPEND: server peak memory +{grew / len(msg):.2f}x its size "
           f"({before} KB -> peak {peak} KB)")
    assert grew < 2 * len(msg), f"memory grew by {grew} bytes for a {len(msg)}-byte message"
    stored_intact(s, msg)
