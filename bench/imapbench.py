"""IMAP load for bench.py: APPEND throughput, FETCH of headers+flags, SEARCH by text, and the
memory of many idle logged-in TLS connections. The same client code runs against both servers."""

import asyncio
import os
import socket
import ssl
import time
from multiprocessing import Pool


def _ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


class Conn:
    def __init__(self, port, user, pw):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.buf = bytearray()
        self.n = 0
        self.line()
        self.cmd(f"LOGIN {user} {pw}".encode())

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(1 << 18)
            if not d:
                raise ConnectionError("closed")
            self.buf += d
        i = self.buf.index(b"\r\n")
        l = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return l

    def cmd(self, c: bytes):
        """Sends a command; reads until its tagged reply; returns the bytes received."""
        self.n += 1
        tag = b"b%d " % self.n
        self.s.sendall(tag + c + b"\r\n")
        want = b"\r\n" + tag
        got = bytearray(self.buf)
        self.buf = bytearray()
        # Only what arrived since the last look is searched: the client must not be what the
        # benchmark measures (a 15 MB answer searched from the start at every read was).
        seen = 0
        while True:
            j = got.find(want, max(0, seen - len(want)))
            seen = len(got)
            if j < 0 and got.startswith(tag):
                j = -2
            if j != -1:
                start = j + 2 if j >= 0 else 0
                end = got.find(b"\r\n", start)
                if end >= 0:
                    line = bytes(got[start:end])
                    if b" OK" not in line[:len(tag) + 3]:
                        raise RuntimeError(line.decode(errors="replace"))
                    self.buf = got[end + 2:]
                    return got[:start]
            d = self.s.recv(1 << 20)
            if not d:
                raise ConnectionError("closed")
            got += d


def message(i):
    needle = " needle" if i % 100 == 7 else ""
    body = "".join(f"Line {k} of message {i}: lorem ipsum dolor sit amet{needle if k == 3 else ''}\r\n" for k in range(20))
    return (f"From: Sender {i % 37} <sender{i % 37}@far.test>\r\nTo: user1@bench.test\r\n"
            f"Subject: Benchmark message {i}\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <{i}@bench.test>\r\n\r\n{body}").encode()


def _append_worker(args):
    port, user, pw, start, count = args
    c = Conn(port, user, pw)
    for i in range(start, start + count):
        m = message(i)
        c.cmd(b"APPEND INBOX {%d+}\r\n" % len(m) + m)
    c.cmd(b"LOGOUT")


def append(port, user, pw, total, clients, offset=0):
    """APPENDs messages offset..offset+total-1, shared out among the clients; messages/s."""
    counts = [total // clients + (k < total % clients) for k in range(clients)]
    starts = [offset + sum(counts[:k]) for k in range(clients)]
    t = time.time()
    with Pool(clients) as p:
        p.map(_append_worker, [(port, user, pw, start, count) for start, count in zip(starts, counts) if count])
    return total / (time.time() - t)


def fetch_headers(port, user, pw):
    c = Conn(port, user, pw)
    c.cmd(b"SELECT INBOX")
    t = time.time()
    data = c.cmd(b"UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)])")
    dt = time.time() - t
    n = data.count(b" FETCH (")
    c.cmd(b"LOGOUT")
    return n, dt


def search_text(port, user, pw):
    c = Conn(port, user, pw)
    c.cmd(b"SELECT INBOX")
    t = time.time()
    data = c.cmd(b"UID SEARCH BODY needle")
    dt = time.time() - t
    hits = len(data.split(b"* SEARCH", 1)[1].split()) if b"* SEARCH" in data else 0
    c.cmd(b"LOGOUT")
    return hits, dt


async def _idle_one(port, user, pw, ready, stop, tls):
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=_ctx() if tls else None)
    await r.readline()

    async def cmd(tag, c):
        w.write(f"{tag} {c}\r\n".encode())
        await w.drain()
        while True:
            l = await r.readline()
            if not l:
                raise ConnectionError("closed")
            if l.startswith(tag.encode()):
                return l

    await cmd("a", f"LOGIN {user} {pw}")
    await cmd("b", "SELECT INBOX")
    w.write(b"c IDLE\r\n")
    await w.drain()
    await r.readline()
    ready.append(1)
    await stop.wait()
    w.close()


async def _idle_many(port, users, per_user, pw, measure, tls):
    ready, stop = [], asyncio.Event()
    tasks = []
    for u in users:
        for _ in range(per_user):
            tasks.append(asyncio.create_task(_idle_one(port, u, pw, ready, stop, tls)))
            # In waves, so a server that forks per connection is not asked for 2,000 at once.
            if len(tasks) % 100 == 0:
                while len(ready) < len(tasks) - 50:
                    if any(t.done() and t.exception() for t in tasks):
                        break
                    await asyncio.sleep(0.05)
    deadline = time.time() + 300
    while len(ready) < len(tasks):
        failed = [t for t in tasks if t.done() and t.exception()]
        if failed:
            raise failed[0].exception()
        if time.time() > deadline:
            raise RuntimeError(f"only {len(ready)} of {len(tasks)} connections ready")
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)
    result = measure()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return result


def idle_connections(port, users, per_user, pw, measure, tls=False):
    return asyncio.run(_idle_many(port, users, per_user, pw, measure, tls))


def pss_kb(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for l in f:
                    if l.startswith("Pss:"):
                        total += int(l.split()[1])
        except OSError:
            pass
    return total
