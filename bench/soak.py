#!/usr/bin/env python3
"""Soak: hours of mixed SMTP, POP3 and IMAP traffic against one server, restarted now and
then (alternately SIGTERM and kill -9). At the end every message that got 250 must have been
read by POP3 or IMAP, and the memory at the end of the last run must be no higher than at the
end of the first (within 50% + the store's 64 MB page cache).

  scripts/soak [--minutes 60] [--restart-every 10] [--senders 4] [--users 20]

Not part of CI: it takes as long as you give it.
"""

import argparse
import base64
import imaplib
import os
import poplib
import random
import re
import signal
import smtplib
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("POSTERN_BIN", str(ROOT / "target" / "release" / "postern"))
import conftest  # noqa: E402
from helpers import insecure_ctx  # noqa: E402

DOMAIN = conftest.DOMAIN
PW = conftest.PASSWORD
ID_RE = re.compile(rb"X-Soak-Id: (\d+)")


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}      # id -> user, after 250
        self.seen = set()    # ids read by POP3 or IMAP
        self.next_id = 0
        self.errors = 0
        self.counts = {"smtp": 0, "pop3": 0, "imap": 0}
        self.stop = threading.Event()

    def new_id(self):
        with self.lock:
            self.next_id += 1
            return self.next_id


def sender(st, srv, users, k):
    rnd = random.Random(k)
    while not st.stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as s:
                for _ in range(20):
                    if st.stop.is_set():
                        return
                    n = st.new_id()
                    u = rnd.choice(users)
                    body = os.urandom(rnd.choice([200, 2000, 20000, 200000]))
                    msg = (f"From: soak@far.test\r\nTo: {u}\r\nSubject: soak {n}\r\nX-Soak-Id: {n}\r\n"
                           f"\r\n").encode() + base64.encodebytes(body).replace(b"\n", b"\r\n")
                    s.sendmail("soak@far.test", [u], msg)
                    with st.lock:
                        st.acked[n] = u
                        st.counts["smtp"] += 1
        except (OSError, smtplib.SMTPException):
            with st.lock:
                st.errors += 1
            time.sleep(0.5)


def pop3_reader(st, srv, users, k):
    rnd = random.Random(100 + k)
    while not st.stop.is_set():
        try:
            p = poplib.POP3_SSL("127.0.0.1", srv.port("pop3s"), context=insecure_ctx(), timeout=30)
            p.user(rnd.choice(users))
            p.pass_(PW)
            for i in range(1, min(len(p.list()[1]), 50) + 1):
                raw = b"\r\n".join(p.retr(i)[1])
                ids = [int(m) for m in ID_RE.findall(raw)]
                with st.lock:  # the reader has it: counted before it can be deleted
                    st.seen.update(ids)
                    st.counts["pop3"] += len(ids)
                p.dele(i)
            p.quit()
        except (OSError, poplib.error_proto):
            with st.lock:
                st.errors += 1
            time.sleep(0.5)
        time.sleep(0.2)


def imap_reader(st, srv, users, k):
    rnd = random.Random(200 + k)
    while not st.stop.is_set():
        try:
            imap_drain(srv, rnd.choice(users), st, limit=50)
        except (OSError, imaplib.IMAP4.error, imaplib.IMAP4.abort):
            with st.lock:
                st.errors += 1
            time.sleep(0.5)
        time.sleep(0.2)


def imap_drain(srv, user, st, limit=None):
    """Reads messages' ids (counted as read at once), moves half to Archive and expunges the
    rest."""
    m = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=insecure_ctx(), timeout=30)
    m.login(user, PW)
    for box in ("INBOX", "Archive"):
        m.select(box)
        typ, data = m.uid("SEARCH", None, "ALL")
        uids = data[0].split()[: limit or None]
        if not uids:
            continue
        typ, data = m.uid("FETCH", b",".join(uids).decode(), "(BODY.PEEK[HEADER.FIELDS (X-SOAK-ID)])")
        ids = [int(x) for part in data if isinstance(part, tuple) for x in ID_RE.findall(part[1])]
        with st.lock:
            st.seen.update(ids)
            st.counts["imap"] += len(ids)
        half = uids[: len(uids) // 2] if box == "INBOX" and limit else []
        rest = [u for u in uids if u not in half]
        if half:
            m.uid("MOVE", b",".join(half).decode(), "Archive")
        if rest:
            m.uid("STORE", b",".join(rest).decode(), "+FLAGS.SILENT", r"(\Deleted)")
            m.expunge()
    m.logout()


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--restart-every", type=float, default=10, help="minutes")
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--users", type=int, default=20)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="postern-soak-"))
    srv = conftest.Postern(root, listeners=("smtp", "pop3s", "imaps"),
                           extra_config="[smtp]\npregreet_wait_ms = 0\nmax_connections_per_ip = 1000\n"
                                        "[imap]\nmax_connections_per_ip = 1000\n"
                                        "[pop3]\nmax_connections_per_ip = 1000\n"
                                        "[auth]\nfailure_delay_ms = 0\n")
    users = [f"u{i}@{DOMAIN}" for i in range(a.users)]
    for u in users:
        srv.add_user(u, PW)
    srv.start()
    st = State()
    threads = [threading.Thread(target=sender, args=(st, srv, users, k)) for k in range(a.senders)]
    threads += [threading.Thread(target=pop3_reader, args=(st, srv, users, k)) for k in range(2)]
    threads += [threading.Thread(target=imap_reader, args=(st, srv, users, k)) for k in range(2)]
    for t in threads:
        t.start()
    t0 = time.time()
    end = t0 + a.minutes * 60
    cycle = a.restart_every * 60
    rss = []  # (minute, KB) at the end of each run, just before it is stopped
    kills = 0
    next_restart = t0 + cycle
    try:
        while time.time() < end:
            time.sleep(min(5, max(0, end - time.time())))
            if time.time() >= next_restart and time.time() < end - 30:
                rss.append(((time.time() - t0) / 60, rss_kb(srv.proc.pid)))
                if kills % 2 == 0:
                    srv.stop()
                else:
                    srv.kill()
                kills += 1
                srv.start()
                next_restart = time.time() + cycle
            with st.lock:
                print(f"{(time.time() - t0) / 60:6.1f} min  acked {len(st.acked)}  read {len(st.seen)}  "
                      f"rss {rss_kb(srv.proc.pid)} KB  restarts {kills}  client errors {st.errors}", flush=True)
        rss.append(((time.time() - t0) / 60, rss_kb(srv.proc.pid)))
    finally:
        st.stop.set()
        for t in threads:
            t.join(60)
    # Whatever is still in mailboxes is read now.
    for u in users:
        imap_drain(srv, u, st)
    srv.stop()
    lost = [n for n in st.acked if n not in st.seen]
    print(f"\n{a.minutes:g} minutes, {kills} restarts ({(kills + 1) // 2} graceful, {kills // 2} kill -9)")
    print(f"messages acknowledged {len(st.acked)}, read {len(st.seen & set(st.acked))}, lost {len(lost)}")
    print(f"reads: POP3 {st.counts['pop3']}, IMAP {st.counts['imap']}; client-side errors (cut by restarts, POP3 mailbox in use) {st.errors}")
    print("RSS at the end of each run: " + ", ".join(f"{m:.0f} min {kb / 1024:.1f} MB" for m, kb in rss))
    # The store's page cache (storage.cache_size, 64 MB) fills as the data grows: growth up to
    # it is expected, beyond it is not.
    first, last = rss[0][1], rss[-1][1]
    flat = last <= first * 1.5 + 64 * 1024
    print(f"memory: first run {first / 1024:.1f} MB, last run {last / 1024:.1f} MB: {'flat' if flat else 'GROWING'}")
    if lost:
        print("lost ids:", lost[:20])
    sys.exit(0 if flat and not lost else 1)


if __name__ == "__main__":
    main()
