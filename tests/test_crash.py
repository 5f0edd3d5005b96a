"""Crash consistency: the server is killed with SIGKILL at random moments under load, many
times; after each restart nothing acknowledged is lost or doubled, nothing half-stored shows,
and the queue resumes. Bounded: a fixed number of kills, then it stops by itself."""

import hashlib
import imaplib
import poplib
import random
import re
import smtplib
import threading
import time

import pytest

from conftest import PASSWORD, free_port, report
from helpers import ALICE, BOB, insecure_ctx
from peers import Dns, Sink

KILLS = 20


def body_of(token):
    lines = [f"{token} line {i} " + "x" * (i % 70) for i in range(random.randint(5, 400))]
    return "\r\n".join(lines) + "\r\n"


def make_msg(token, to):
    body = body_of(token)
    digest = hashlib.sha256(body.encode()).hexdigest()
    return (f"From: <load@far.test>\r\nTo: <{to}>\r\nSubject: {token}\r\nX-Check: {digest}\r\n"
            f"Message-ID: <{token}@far.test>\r\n\r\n{body}").encode()


class Load:
    """Client threads sending until stopped; each token is sent once. acked: got 250;
    maybe: the connection broke before the reply."""

    def __init__(self, server):
        self.server = server
        self.acked, self.maybe = set(), set()
        self.remote_acked, self.remote_maybe = set(), set()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = []

    def run_local(self, n):
        i = 0
        while not self.stop.is_set():
            try:
                c = smtplib.SMTP("127.0.0.1", self.server.port("smtp"), timeout=10)
            except OSError:
                time.sleep(0.05)
                continue
            try:
                while not self.stop.is_set():
                    token = f"L{n}-{i}"
                    i += 1
                    try:
                        c.sendmail("load@far.test", [ALICE], make_msg(token, ALICE))
                        with self.lock:
                            self.acked.add(token)
                    except (smtplib.SMTPException, OSError):
                        with self.lock:
                            self.maybe.add(token)
                        break
            finally:
                try:
                    c.close()
                except Exception:
                    pass

    def run_remote(self):
        i = 0
        while not self.stop.is_set():
            try:
                c = smtplib.SMTP_SSL("127.0.0.1", self.server.port("submissions"), context=insecure_ctx(),
                                     timeout=10)
                c.login(BOB, PASSWORD)
            except (smtplib.SMTPException, OSError):
                time.sleep(0.05)
                continue
            try:
                while not self.stop.is_set():
                    token = f"R-{i}"
                    i += 1
                    try:
                        c.sendmail(BOB, ["carol@far.test"], make_msg(token, "carol@far.test"))
                        with self.lock:
                            self.remote_acked.add(token)
                    except (smtplib.SMTPException, OSError):
                        with self.lock:
                            self.remote_maybe.add(token)
                        break
            finally:
                try:
                    c.close()
                except Exception:
                    pass

    def start(self, local_clients=3):
        for n in range(local_clients):
            self.threads.append(threading.Thread(target=self.run_local, args=(n,), daemon=True))
        self.threads.append(threading.Thread(target=self.run_remote, daemon=True))
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def imap_messages(server, user, mailbox="INBOX"):
    """(subject, X-Check, body) of every message in the mailbox."""
    im = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=60)
    im.login(user, PASSWORD)
    typ, _ = im.select(mailbox, readonly=True)
    if typ != "OK":
        im.logout()
        return []
    typ, data = im.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT X-CHECK)] BODY.PEEK[TEXT])")
    im.logout()
    out = []
    parts = [p for p in data if isinstance(p, tuple)]
    for head, text in zip(parts[0::2], parts[1::2]):
        h = head[1].decode()
        subject = re.search(r"Subject: (\S+)", h).group(1)
        check = re.search(r"X-Check: (\S+)", h).group(1)
        out.append((subject, check, text[1]))
    return out


def test_kill_under_smtp_load(make_server):
    dns = Dns(free_port())
    rport = free_port()
    sink = Sink("127.0.0.21", rport)
    s = make_server(listeners=("smtp", "submissions", "imaps"), extra_config=f"""
[smtp]
pregreet_wait_ms = 0
max_messages_per_hour = 0
max_recipients_per_hour = 0
[dns]
nameservers = ["127.0.0.1:{dns.port}"]
[delivery]
remote_port = {rport}
retry = ["1s"]
""")
    s.add_user(ALICE)
    s.add_user(BOB)
    dns.start(mx=[("far.test", "mx.far.test", 10)], a=[("mx.far.test", "127.0.0.21")])
    s.start()
    load = Load(s)
    rng = random.Random(7)
    try:
        load.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.5))
            s.kill()
            s.start()
        time.sleep(1)
        load.finish()
        assert s.stop() == 0
        s.start()

        msgs = imap_messages(s, ALICE)
        seen = {}
        for subject, check, body in msgs:
            # Whole, never half-stored: the body matches the digest its sender wrote.
            assert hashlib.sha256(body).hexdigest() == check, f"{subject} is damaged"
            seen[subject] = seen.get(subject, 0) + 1
        doubled = {t: n for t, n in seen.items() if n > 1}
        assert not doubled, f"stored more than once: {doubled}"
        lost = load.acked - seen.keys()
        assert not lost, f"acknowledged with 250 but missing: {sorted(lost)}"
        unexpected = seen.keys() - load.acked - load.maybe
        assert not unexpected, f"never finished sending, yet stored: {unexpected}"
        assert len(load.acked) > 100

        # The queue resumes: every acknowledged remote message reaches the remote server.
        deadline = time.time() + 90
        while True:
            delivered = [re.search(rb"Subject: (\S+)", m[2]).group(1).decode() for m in list(sink.messages)]
            got = set(delivered)
            if load.remote_acked <= got or time.time() > deadline:
                break
            time.sleep(0.5)
        for _, _, raw in list(sink.messages):
            head, body = raw.split(b"\r\n\r\n", 1)
            check = re.search(rb"X-Check: (\S+)", head).group(1).decode()
            assert hashlib.sha256(body).hexdigest() == check, "a delivered message is damaged"
        remote_dups = len(delivered) - len(got)
        missing = load.remote_acked - got
        assert not missing, f"queued with 250 but never delivered: {sorted(missing)[:10]}"
        report(f"crash, SMTP load: {KILLS} kills; {len(load.acked)} local messages acknowledged and verified "
              f"({len(load.maybe)} in flight at a kill, {len(seen.keys() & load.maybe)} of those stored); "
              f"{len(load.remote_acked)} remote messages acknowledged, all delivered "
              f"({remote_dups} delivered twice after a kill mid-delivery)")
    finally:
        load.finish()
        sink.stop()
        dns.stop()


def fill(server, user, prefix, n):
    c = smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30)
    for i in range(n):
        c.sendmail("load@far.test", [user], make_msg(f"{prefix}{i}", user))
    c.quit()


class Mailbox:
    """IMAP MOVE and EXPUNGE for alice, POP3 DELE+QUIT for bob, until stopped. Records what
    the server confirmed and what was in flight when the connection broke."""

    def __init__(self, server):
        self.server = server
        self.moved, self.expunged, self.popped = set(), set(), set()
        self.imap_maybe, self.pop_batches = set(), []
        self.stop = threading.Event()

    def imap_loop(self):
        while not self.stop.is_set():
            try:
                im = imaplib.IMAP4_SSL("127.0.0.1", self.server.port("imaps"), ssl_context=insecure_ctx(),
                                       timeout=10)
                im.login(ALICE, PASSWORD)
                im.select("INBOX")
            except Exception:
                time.sleep(0.05)
                continue
            try:
                while not self.stop.is_set():
                    typ, data = im.fetch("1", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                    items = [p for p in data if isinstance(p, tuple)]
                    if not items:
                        return
                    uid = re.search(rb"UID (\d+)", items[0][0]).group(1).decode()
                    token = re.search(rb"Subject: (\S+)", items[0][1]).group(1).decode()
                    self.imap_maybe.add(token)
                    if int(token[1:]) % 2 == 0:
                        typ, _ = im.uid("MOVE", uid, "Archive")
                        assert typ == "OK"
                        self.moved.add(token)
                    else:
                        im.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
                        typ, _ = im.uid("EXPUNGE", uid)
                        assert typ == "OK"
                        self.expunged.add(token)
                    self.imap_maybe.discard(token)
            except (imaplib.IMAP4.abort, OSError, imaplib.IMAP4.error):
                pass
            finally:
                try:
                    im.shutdown()
                except Exception:
                    pass

    def pop_loop(self):
        while not self.stop.is_set():
            try:
                p = poplib.POP3_SSL("127.0.0.1", self.server.port("pop3s"), context=insecure_ctx(), timeout=10)
                p.user(BOB)
                p.pass_(PASSWORD)
            except Exception:
                time.sleep(0.05)
                continue
            try:
                n, _ = p.stat()
                if n == 0:
                    return
                batch = []
                for i in range(1, min(n, 3) + 1):
                    head = b"\r\n".join(p.top(i, 0)[1])
                    batch.append(re.search(rb"Subject: (\S+)", head).group(1).decode())
                    p.dele(i)
                self.pop_batches.append(batch)
                p.quit()
                self.popped.update(batch)
                self.pop_batches.pop()
            except (poplib.error_proto, OSError):
                pass
            finally:
                try:
                    p.close()
                except Exception:
                    pass


N = 3000


def test_kill_during_move_expunge_and_pop3_delete(make_server):
    s = make_server(listeners=("smtp", "imaps", "pop3s"), extra_config="[smtp]\npregreet_wait_ms = 0")
    s.add_user(ALICE)
    s.add_user(BOB)
    s.start()
    t0 = time.time()
    fillers = [threading.Thread(target=fill, args=(s, ALICE, "a", N)), threading.Thread(target=fill, args=(s, BOB, "b", N))]
    for t in fillers:
        t.start()
    for t in fillers:
        t.join()
    print(f"filled in {time.time() - t0:.1f} s")
    im = imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx())
    im.login(ALICE, PASSWORD)
    im.create("Archive")
    im.logout()
    mb = Mailbox(s)
    threads = [threading.Thread(target=mb.imap_loop, daemon=True), threading.Thread(target=mb.pop_loop, daemon=True)]
    for t in threads:
        t.start()
    rng = random.Random(11)
    try:
        for _ in range(KILLS // 2):
            time.sleep(rng.uniform(0.2, 0.8))
            s.kill()
            s.start()
        time.sleep(0.5)
    finally:
        mb.stop.set()
        for t in threads:
            t.join(30)
    assert s.stop() == 0
    s.start()

    inbox = [m[0] for m in imap_messages(s, ALICE)]
    archive = [m[0] for m in imap_messages(s, ALICE, "Archive")]
    for subject, check, body in imap_messages(s, ALICE) + imap_messages(s, ALICE, "Archive"):
        assert hashlib.sha256(body).hexdigest() == check
    assert len(set(inbox)) == len(inbox) and len(set(archive)) == len(archive), "a message is doubled"
    assert not set(inbox) & set(archive), "a message is in both INBOX and Archive"
    assert not mb.moved & set(inbox), "a confirmed MOVE came back"
    assert mb.moved <= set(archive), "a confirmed MOVE is lost"
    assert not mb.expunged & (set(inbox) | set(archive)), "a confirmed EXPUNGE came back"
    everything = {f"a{i}" for i in range(N)}
    vanished = everything - set(inbox) - set(archive) - mb.expunged - mb.imap_maybe
    assert not vanished, f"lost without being expunged: {sorted(vanished)[:10]}"

    left = set()
    p = poplib.POP3_SSL("127.0.0.1", s.port("pop3s"), context=insecure_ctx())
    p.user(BOB)
    p.pass_(PASSWORD)
    n, _ = p.stat()
    for i in range(1, n + 1):
        left.add(re.search(rb"Subject: (\S+)", b"\r\n".join(p.top(i, 0)[1])).group(1).decode())
    p.quit()
    assert not mb.popped & left, "a message deleted by a confirmed QUIT came back"
    for batch in mb.pop_batches:
        # A session cut before QUIT's answer deletes all of its messages or none.
        assert set(batch) <= left or not set(batch) & left, f"half of a POP3 session's deletions: {batch}"
    assert ({f"b{i}" for i in range(N)} - mb.popped - {t for b in mb.pop_batches for t in b}) <= left
    report(f"crash, IMAP/POP3: {KILLS // 2} kills; {len(mb.moved)} moves, {len(mb.expunged)} expunges, {len(mb.popped)} POP3 deletions "
          f"confirmed and verified; {len(mb.pop_batches)} POP3 sessions cut before QUIT's answer")
