#!/usr/bin/env python3
"""POP3 retrieval load against any POP3 server (the project's own load tool, used by
scripts/bench for the POP3 figure and checked by tests/test_popload.py).

Accounts FIRST..LAST (USER_FORMAT % i) are shared out among PROCS processes; each process
takes its accounts one after another: log in with USER/PASS, LIST, send RETR for every
message in pipelined windows of --window commands, read every reply to its terminating
line, check that each message arrived with the size LIST announced, and QUIT without
deleting anything. The result is one line (or JSON with --json): messages, octets, seconds,
messages/s and MB/s over the whole run. Any error or size mismatch makes the exit status 1.

  popload.py HOST:PORT USER_FORMAT PASSWORD FIRST LAST PROCS [--tls] [--window N] [--json]
  e.g. popload.py 127.0.0.1:995 user%d@bench.test pw 1 20 4 --tls
"""

import argparse
import json
import multiprocessing
import socket
import ssl
import sys
import time

TERMINATOR = b"\r\n.\r\n"


class Pop3Error(Exception):
    pass


class Session:
    """One POP3 connection with its own read buffer (replies may arrive many at once)."""

    def __init__(self, host, port, tls, timeout=120):
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.buf = bytearray()
        self.status()

    def _fill(self):
        data = self.sock.recv(1 << 18)
        if not data:
            raise Pop3Error("the server closed the connection")
        self.buf += data

    def status(self):
        """One status line; -ERR raises."""
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                break
            self._fill()
        line = bytes(self.buf[:end])
        del self.buf[:end + 2]
        if not line.startswith(b"+OK"):
            raise Pop3Error(line.decode(errors="replace"))
        return line

    def multiline(self):
        """A status line and its dot-terminated body, returned undone of dot-stuffing."""
        self.status()
        # Stuffing leaves no body line that is a lone ".": an empty body is ".\r\n" at once,
        # any other ends at the first CRLF "." CRLF.
        while len(self.buf) < 3:
            self._fill()
        if self.buf.startswith(b".\r\n"):
            del self.buf[:3]
            return b""
        start = 0
        while True:
            end = self.buf.find(TERMINATOR, start)
            if end >= 0:
                break
            start = max(0, len(self.buf) - len(TERMINATOR) + 1)
            self._fill()
        body = bytes(self.buf[:end + 2])
        del self.buf[:end + len(TERMINATOR)]
        if b"\r\n.." in body or body.startswith(b".."):
            body = b"\r\n".join(l[1:] if l.startswith(b".") else l for l in body.split(b"\r\n"))
        return body

    def command(self, line):
        self.sock.sendall(line.encode() + b"\r\n")
        return self.status()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def retrieve(job):
    """Every message of one account: (messages, octets, size mismatches)."""
    host, port, user, password, tls, window = job
    s = Session(host, port, tls)
    try:
        s.command(f"USER {user}")
        s.command(f"PASS {password}")
        s.sock.sendall(b"LIST\r\n")
        sizes = {}
        for line in s.multiline().split(b"\r\n"):
            if line:
                n, size = line.split()
                sizes[int(n)] = int(size)
        numbers = sorted(sizes)
        octets = mismatches = 0
        for i in range(0, len(numbers), window):
            batch = numbers[i:i + window]
            s.sock.sendall(b"".join(b"RETR %d\r\n" % n for n in batch))
            for n in batch:
                body = s.multiline()
                octets += len(body)
                mismatches += len(body) != sizes[n]
        s.command("QUIT")
        return len(numbers), octets, mismatches
    finally:
        s.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("server", help="HOST:PORT")
    ap.add_argument("user_format", help="e.g. user%%d@bench.test")
    ap.add_argument("password")
    ap.add_argument("first", type=int)
    ap.add_argument("last", type=int)
    ap.add_argument("procs", type=int)
    ap.add_argument("--tls", action="store_true", help="implicit TLS (POP3S); certificates are not checked")
    ap.add_argument("--window", type=int, default=64, help="RETR commands in flight at once (default 64)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    host, port = a.server.rsplit(":", 1)
    jobs = [(host, int(port), a.user_format % i, a.password, a.tls, max(1, a.window))
            for i in range(a.first, a.last + 1)]
    started = time.perf_counter()
    with multiprocessing.Pool(max(1, a.procs)) as pool:
        results = pool.map(retrieve, jobs, chunksize=1)
    seconds = time.perf_counter() - started
    messages = sum(r[0] for r in results)
    octets = sum(r[1] for r in results)
    mismatches = sum(r[2] for r in results)
    out = dict(accounts=len(jobs), processes=a.procs, tls=a.tls, messages=messages, octets=octets,
               seconds=round(seconds, 3), msg_per_s=round(messages / seconds, 1),
               mb_per_s=round(octets / 1e6 / seconds, 2), size_mismatches=mismatches)
    if a.json:
        print(json.dumps(out))
    else:
        print(f"pop3 retrieve: {messages} msgs {octets / 1e6:.1f} MB from {len(jobs)} accounts in "
              f"{seconds:.2f}s -> {out['msg_per_s']:.0f} msg/s {out['mb_per_s']:.1f} MB/s"
              + (f"; {mismatches} sizes differ from LIST" if mismatches else ""))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
