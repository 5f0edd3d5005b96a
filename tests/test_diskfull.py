"""A full disk, for real: the data directory on a small tmpfs. Filling it must give 452 4.3.1 on
SMTP and NO on APPEND, never a lost or broken message; when space returns, service resumes
without a restart."""

import imaplib
import os
import smtplib
import subprocess
import time

import pytest

from conftest import DOMAIN, PASSWORD, Postern, report
from helpers import ALICE, insecure_ctx

SIZE_MB = 24


@pytest.fixture
def small_disk(tmp_root):
    root = tmp_root / "srv"
    data = root / "data"
    data.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(data)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {r.stderr.strip()}")
    yield root
    subprocess.run(["umount", "-l", str(data)])


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def message(i, size):
    body = (f"message {i} " * 20 + "\r\n") * (size // 260)
    return (f"From: x@far.test\r\nTo: {ALICE}\r\nSubject: fill {i}\r\nMessage-ID: <fill{i}@far.test>\r\n\r\n"
            + body).encode()


def test_disk_full_then_space_returns(small_disk):
    s = Postern(small_disk, listeners=("smtp", "imaps"),
                extra_config="[smtp]\nmax_message_size = \"2M\"\npregreet_wait_ms = 0\n"
                "[storage]\nmin_free = \"2M\"")
    s.add_user(ALICE)
    # Ballast: space to give back later.
    ballast = s.data / "ballast"
    ballast.write_bytes(b"\0" * (6 << 20))
    s.start()
    try:
        acked, refused = [], None
        c = smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=30)
        c.ehlo("far.test")
        for i in range(400):
            code, reply = c.mail("x@far.test")
            assert code == 250, reply
            code, reply = c.rcpt(ALICE)
            assert code == 250, reply
            code, reply = c.data(message(i, 256 * 1024))
            if code == 250:
                acked.append(i)
                continue
            refused = (code, reply.decode())
            break
        assert refused is not None, f"the disk never filled ({free_bytes(s.data)} bytes free)"
        assert refused[0] == 452 and "4.3.1" in refused[1], refused
        assert len(acked) > 10
        # Small messages fill what is left, down to the space the store keeps free (storage.min_free).
        small_refused = None
        for i in range(1000, 20000):
            c.mail("x@far.test")
            c.rcpt(ALICE)
            code, reply = c.data(message(i, 300))
            if code == 250:
                acked.append(i)
                continue
            small_refused = (code, reply.decode())
            break
        c.quit()
        assert small_refused and small_refused[0] == 452 and "4.3.1" in small_refused[1], small_refused
        report(f"disk full: {len(acked)} messages of 256 KiB accepted on a 24 MB tmpfs before "
               f"{refused[0]} {refused[1][:5]}; {free_bytes(s.data)} bytes free then")

        # Still full: APPEND says NO, the session goes on, nothing half-stored.
        im = imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx())
        im.login(ALICE, PASSWORD)
        typ, data = im.append("INBOX", None, None, message(9999, 512 * 1024))
        assert typ == "NO", (typ, data)
        assert b"full" in data[0].lower() or b"UNAVAILABLE" in data[0]
        im.select("INBOX")
        typ, data = im.search(None, "ALL")
        assert len(data[0].split()) == len(acked)
        # Every acknowledged message reads back whole.
        typ, data = im.fetch(f"1:{len(acked)}", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.SIZE)")
        subjects = [p[1].decode().strip() for p in data if isinstance(p, tuple)]
        assert subjects == [f"Subject: fill {i}" for i in acked]
        typ, data = im.fetch("1:*", "(BODY.PEEK[TEXT])")
        bodies = [p[1] for p in data if isinstance(p, tuple)]
        assert len(bodies) == len(acked)
        for i, b in zip(acked, bodies):
            assert b == message(i, 256 * 1024 if i < 1000 else 300).split(b"\r\n\r\n", 1)[1], i

        # Space returns: the same server takes mail again, no restart.
        ballast.unlink()
        deadline = time.time() + 60
        while True:
            c = smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=30)
            c.ehlo("far.test")
            try:
                c.sendmail("x@far.test", [ALICE], message(5000, 1024))
                break
            except smtplib.SMTPResponseException as e:
                assert e.smtp_code == 452, e
                assert time.time() < deadline, "no mail accepted after space returned"
                time.sleep(0.5)
            finally:
                c.close()
        typ, _ = im.append("INBOX", None, None, message(5001, 1024))
        assert typ == "OK"
        im.logout()

        # And after a restart everything is there, once.
        assert s.stop() == 0
        s.start()
        im = imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx())
        im.login(ALICE, PASSWORD)
        im.select("INBOX")
        typ, data = im.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = [p[1].decode().strip() for p in data if isinstance(p, tuple)]
        assert subjects == [f"Subject: fill {i}" for i in acked] + ["Subject: fill 5000", "Subject: fill 5001"]
        im.logout()
    finally:
        s.kill()
