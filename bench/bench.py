#!/usr/bin/env python3
"""Side-by-side benchmarks: Postern against Postfix + Dovecot (the project's own launcher,
tests/postfix_dovecot.py) on this machine, in the same run, reported as ratios. Everything
printed also goes to bench/results/DATE-MACHINE.txt, headed by the date, the machine and the
versions measured: the README's tables are copied from such a file.

  scripts/bench [smtp] [pop3] [imap] [relay] [storage] [--messages N] [--sessions S] [--users U]

smtp:  messages/s accepted by smtp-source (Postfix's load generator) and messages/s readable in
       the mailbox (Postern stores before it answers 250; Postfix hands over to Dovecot via LMTP).
pop3:  messages/s retrieved over TLS by bench/popload.py from many accounts at once.
imap:  APPEND messages/s, FETCH of headers+flags of a 50,000-message INBOX, SEARCH BODY over it,
       and the memory (PSS) of 2,000 idle logged-in connections.
relay: messages/s accepted and relayed to a smarthost (Postfix's smtp-sink), until the queue is
       empty; smtp-source sends from a network both servers let relay.
"""

import argparse
import datetime
import json
from concurrent.futures import ThreadPoolExecutor
import platform
import resource
import os
import signal
import socket
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POPLOAD = ROOT / "bench" / "popload.py"
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
import imapbench  # noqa: E402
from postfix_dovecot import PostfixDovecot  # noqa: E402
from peers import Dns  # noqa: E402
BIN = ROOT / "target" / "release" / "postern"
DOMAIN = "bench.test"
PW = "pw"


_HANDED_OUT = set()


def free_port():
    """A free port below the kernel's range for outgoing connections (one the kernel hands
    out could meanwhile become the source port of a client connection), never twice."""
    import random
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(1000):
        port = random.randrange(10000, max(low, 12000))
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port")


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


class Peer(PostfixDovecot):
    """The reference pair, with what the benchmarks need on top: Maildir counts and fills,
    and Dovecot's limits raised for thousands of connections."""

    def __init__(self, root: Path, users: int, relayhost: str = ""):
        super().__init__(root / "peer", domain=DOMAIN, users=users, password=PW, relayhost=relayhost,
                         free_port=free_port)
        # The names bench code uses for the ports.
        self.ports.update({k.upper(): v for k, v in list(self.ports.items())})

    def maildir_count(self, user):
        return len(self.maildir_files(int(user.removeprefix("user"))))

    def maildir_fill(self, user, start, end):
        import pwd
        md = self.maildir(int(user.removeprefix("user")))
        for d in ("new", "cur", "tmp"):
            (md / d).mkdir(parents=True, exist_ok=True)
        mail = pwd.getpwnam("mail")
        t = int(time.time())
        for i in range(start, end):
            p = md / "new" / f"{t}.M{i}P{os.getpid()}.bench"
            p.write_bytes(imapbench.message(i).replace(b"\r\n", b"\n"))
            os.chown(p, mail.pw_uid, mail.pw_gid)

    def log_tail(self):
        try:
            lines = [l for l in self.dovecot_log.read_text().splitlines()
                     if "Inotify" not in l and "Info: Login" not in l]
            return "\n".join(lines[-20:])
        except OSError:
            return ""

    def allow_many_connections(self):
        """The peer's Dovecot runs with the defaults (100 processes, 10 per user and IP)."""
        conf = self.dovecot_conf
        conf.write_text(conf.read_text() + """
default_process_limit = 5000
default_client_limit = 20000
service imap {
  process_limit = 5000
}
service imap-login {
  process_limit = 5000
}
service anvil {
  client_limit = 100000
}
service auth {
  client_limit = 100000
}
protocol imap {
  mail_max_userip_connections = 1000
}
""")
        # A restart, not a reload: service limits apply to new master processes only.
        master = self.dovecot_master()
        subprocess.run(["dovecot", "-c", str(conf), "stop"], check=True)
        for _ in range(600):
            if master is None or not Path(f"/proc/{master}").exists():
                break
            time.sleep(0.1)
        subprocess.run(["dovecot", "-c", str(conf)], check=True)
        wait_port(self.ports["IMAP"])


class Server:
    """A Postern. By default the load generator's network may relay through it (its mail is
    trusted, as a relay network's); with `dns_port`, it is an MX that checks mail from other
    servers (SPF, DKIM, ARC, DMARC, iprev) and asks that loopback DNS server."""

    def __init__(self, root: Path, users: int, relay_port: int, name: str = "postern", storage: str = "",
                 setup: bool = True, dns_port: int = 0):
        self.root = root / name
        self.data = self.root / "data"
        self.root.mkdir(parents=True)
        subprocess.run([str(BIN), "init", "--domain", DOMAIN, "--data-dir", str(self.data), "--listen-ip",
                        "127.0.0.1", "--port-offset", "40000"], check=True, capture_output=True)
        self.ports = {k: free_port() for k in ("smtp", "submission", "pop3", "pop3s", "imap", "imaps")}
        listen = "\n".join(f'{k} = ["127.0.0.1:{p}"]' for k, p in self.ports.items())
        self.config = self.data / "postern.toml"
        self.config.write_text(f"""hostname = "mx.{DOMAIN}"
data_dir = "{self.data}"
[listen]
{listen}
[tls]
cert = "{self.data}/tls/cert.pem"
key = "{self.data}/tls/key.pem"
[auth]
min_password_length = 2
allow_plaintext = true
[smtp]
max_connections_per_ip = 1000
{'' if dns_port else 'relay_networks = ["127.0.0.0/8"]'}
[relay]
host = "127.0.0.2:{relay_port}"
tls = "none"
[pop3]
max_connections_per_ip = 1000
[imap]
max_connections_per_ip = 100000
max_connections = 100000
[log]
level = "warn"
[dns]
nameservers = ["127.0.0.1:{dns_port or 9}"]
timeout = "2s"
[inbound]
check = {"true" if dns_port else "false"}
{storage}
""")
        if storage and setup:
            subprocess.run([str(BIN), "-c", str(self.config), "domain", "add", DOMAIN], check=True,
                           capture_output=True)
        for i in range(1, users + 1 if setup else 1):
            subprocess.run([str(BIN), "-c", str(self.config), "user", "add", f"user{i}@{DOMAIN}", "--password", PW],
                           check=True, capture_output=True)
        self.proc = None

    def start(self):
        self.log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen([str(BIN), "-c", str(self.config), "serve"], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        for p in self.ports.values():
            wait_port(p)

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)

    def queue_empty(self):
        out = subprocess.run([str(BIN), "-c", str(self.config), "queue", "list"], capture_output=True,
                             text=True).stdout
        return "the queue is empty" in out

    def count(self, user):
        out = subprocess.run([str(BIN), "-c", str(self.config), "user", "list"], capture_output=True,
                             text=True).stdout
        for l in out.splitlines():
            if l.startswith(user + "\t"):
                return int(l.split("\t")[1].split()[0])
        return 0


def rss_kb(pids):
    total = 0
    for p in pids:
        try:
            for l in open(f"/proc/{p}/smaps_rollup"):
                if l.startswith("Pss:"):
                    total += int(l.split()[1])
        except OSError:
            pass
    return total


def smtp_source(port, n, sessions, size, to):
    t = time.time()
    subprocess.run(["/usr/sbin/smtp-source", "-s", str(sessions), "-m", str(n), "-l", str(size),
                    "-f", f"load@{DOMAIN}", "-t", to, f"127.0.0.1:{port}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
    return time.time() - t


def bench_smtp(peer, pn, args, results, mx=None):
    n, s, size = args.messages, args.sessions, args.size
    print(f"SMTP: {n} messages of {size} bytes, {s} parallel sessions, one connection per message")
    # Warm-up: Postern's pregreet check trusts a client after its first polite connection.
    smtp_source(pn.ports["smtp"], 20, 2, size, f"user2@{DOMAIN}")
    smtp_source(peer.ports["SMTP"], 20, 2, size, f"user2@{DOMAIN}")
    target = f"user1@{DOMAIN}"
    t0 = time.time()
    acc = smtp_source(peer.ports["SMTP"], n, s, size, target)
    while peer.maildir_count("user1") < n:
        if time.time() - t0 > 3600:
            raise RuntimeError("Postfix+Dovecot did not deliver everything")
        time.sleep(0.02)
    e2e = time.time() - t0
    pf = (n / acc, n / e2e)
    t0 = time.time()
    acc = smtp_source(pn.ports["smtp"], n, s, size, target)
    got = pn.count(target)
    e2e = time.time() - t0
    assert got >= n, f"postern has {got} of {n}"
    po = (n / acc, n / e2e)
    print(f"  Postfix+Dovecot: {pf[0]:8.0f} msg/s accepted, {pf[1]:8.0f} msg/s readable in the mailbox")
    print(f"  Postern:         {po[0]:8.0f} msg/s accepted, {po[1]:8.0f} msg/s readable in the mailbox"
          f"  (from a relay network: trusted, no checks)")
    print(f"  ratio (end to end): {po[1] / pf[1]:.2f}x")
    results["smtp"] = (pf, po)
    if mx is not None:
        # As a real MX: every message checked (SPF for HELO and MAIL FROM, DKIM, ARC, DMARC,
        # iprev), each lookup answered by a DNS server that knows no records.
        smtp_source(mx.ports["smtp"], 20, 2, size, f"user2@{DOMAIN}")
        t0 = time.time()
        acc = smtp_source(mx.ports["smtp"], n, s, size, target)
        got = mx.count(target)
        e2e = time.time() - t0
        assert got >= n, f"postern (MX) has {got} of {n}"
        # The checks ran: the stored messages carry their results.
        c = imapbench.Conn(mx.ports["imap"], target, PW)
        c.cmd(b"EXAMINE INBOX")
        head = c.cmd(b"FETCH 1 (BODY.PEEK[HEADER.FIELDS (AUTHENTICATION-RESULTS X-SPAM-SCORE)])")
        assert b"spf=" in head and b"X-Spam-Score" in head, head
        pm = (n / acc, n / e2e)
        print(f"  Postern as MX:   {pm[0]:8.0f} msg/s accepted, {pm[1]:8.0f} msg/s readable in the mailbox"
              f"  (inbound checks on, loopback DNS without records)")
        print(f"  ratio (end to end, checks on): {pm[1] / pf[1]:.2f}x")
        results["smtp_checked"] = pm


def bench_pop3(peer, pn, args, results, mirror=None):
    """`mirror`: another Postern that gets the same mail (the IMAP run later compares its
    mailbox with the peer's, which holds this mail too)."""
    users, per = args.users, args.pop_messages
    print(f"POP3: {users} accounts x {per} messages of {args.size} bytes, retrieved over TLS by {args.procs} processes"
          f" (bench/popload.py)")
    for i in range(1, users + 1):
        ports = [peer.ports["SMTP"], pn.ports["smtp"]] + ([mirror.ports["smtp"]] if mirror else [])
        for port in ports:
            smtp_source(port, per, 10, args.size, f"user{i}@{DOMAIN}")
    deadline = time.time() + 600
    while any(peer.maildir_count(f"user{i}") < per for i in range(1, users + 1)):
        if time.time() > deadline:
            raise RuntimeError("peer did not deliver the POP3 fill")
        time.sleep(0.1)

    def run(port):
        out = subprocess.run([sys.executable, str(POPLOAD), f"127.0.0.1:{port}", f"user%d@{DOMAIN}", PW, "1",
                              str(users), str(args.procs), "--tls", "--json"], capture_output=True, text=True,
                             check=True, timeout=3600).stdout
        r = json.loads(out)
        assert r["messages"] >= users * per and r["size_mismatches"] == 0, r
        return r["msg_per_s"], r["messages"]

    # Two rounds each, the better one counts (the first warms caches on both sides).
    dovecot = [run(peer.ports["POP3S"]) for _ in range(2)]
    postern = [run(pn.ports["pop3s"]) for _ in range(2)]
    # Both hold the same mail (every load so far went to both): the same count retrieved.
    assert {n for _, n in dovecot} == {n for _, n in postern}, (dovecot, postern)
    d = max(rate for rate, _ in dovecot)
    p = max(rate for rate, _ in postern)
    print(f"  Dovecot: {d:8.0f} msg/s")
    print(f"  Postern: {p:8.0f} msg/s  (the MX with inbound checks on took the mail: it carries their results)")
    print(f"  ratio: {p / d:.2f}x")
    results["pop3"] = (d, p)


def bench_imap(peer, pn, args, results):
    n, clients = args.imap_messages, 8
    first = min(args.append_messages, n)
    print(f"IMAP: APPEND of {first} messages by {clients} clients into an empty INBOX; then the INBOX is"
          f" filled to {n} and searched and fetched")
    u = f"user1@{DOMAIN}"
    d_app = imapbench.append(peer.ports["IMAP"], u, PW, first, clients)
    p_app = imapbench.append(pn.ports["imap"], u, PW, first, clients)
    print(f"  APPEND   Dovecot {d_app:8.0f} msg/s   Postern {p_app:8.0f} msg/s   ratio {p_app / d_app:.2f}x")
    if n > first:
        # Dovecot's APPEND into a Maildir this size takes many minutes (it slows to a few per
        # second past 40,000), so the rest is written into the Maildir as a delivery agent would;
        # Dovecot indexes it at the next SELECT, before anything is timed.
        peer.maildir_fill("user1", first, n)
        imapbench.append(pn.ports["imap"], u, PW, n - first, clients, offset=first)
    best = lambda f, port: min((f(port, u, PW) for _ in range(3)), key=lambda r: r[1])
    dn, dt = best(imapbench.fetch_headers, peer.ports["IMAP"])
    pn_, pt = best(imapbench.fetch_headers, pn.ports["imap"])
    assert dn == pn_ >= n, (dn, pn_)
    print(f"  FETCH    Dovecot {dt:8.3f} s       Postern {pt:8.3f} s       ratio {dt / pt:.2f}x  "
          f"(FLAGS + 4 header fields of {pn_} messages, best of 3)")
    dh, ds = best(imapbench.search_text, peer.ports["IMAP"])
    ph, ps = best(imapbench.search_text, pn.ports["imap"])
    assert dh == ph, (dh, ph)
    print(f"  SEARCH   Dovecot {ds:8.3f} s       Postern {ps:8.3f} s       ratio {ds / ps:.2f}x  "
          f"(BODY needle over {pn_} messages, {ph} hits, best of 3)")
    users = [f"user{i}@{DOMAIN}" for i in range(2, 2 + args.idle_users)]
    per = args.idle_per_user
    conns = len(users) * per
    peer.allow_many_connections()
    # Plain IMAP: over TLS Dovecot keeps a login proxy process per connection as well, and
    # cannot hold 2,000 of them within this machine's descriptor limit. Plain is its cheapest.
    d0 = imapbench.pss_kb(peer.dovecot_pids())
    try:
        d1 = imapbench.idle_connections(peer.ports["IMAP"], users, per, PW,
                                        lambda: imapbench.pss_kb(peer.dovecot_pids()))
    except Exception:
        print("Dovecot's log:\n" + peer.log_tail())
        raise
    p0 = imapbench.pss_kb([pn.proc.pid])
    p1 = imapbench.idle_connections(pn.ports["imap"], users, per, PW, lambda: imapbench.pss_kb([pn.proc.pid]))
    dper, pper = (d1 - d0) / conns, (p1 - p0) / conns
    print(f"  IDLE     Dovecot {dper:8.1f} KB/conn Postern {pper:8.1f} KB/conn ratio {dper / max(pper, 0.1):.1f}x  "
          f"({conns} logged-in connections in IDLE; PSS of every process of each server: Dovecot's master and "
          f"its children, Postern's one process)")
    p2 = imapbench.pss_kb([pn.proc.pid])
    p3 = imapbench.idle_connections(pn.ports["imaps"], users, per, PW, lambda: imapbench.pss_kb([pn.proc.pid]),
                                    tls=True)
    tper = (p3 - p2) / conns
    print(f"  IDLE/TLS Postern {tper:8.1f} KB per idle TLS IMAP connection ({conns} connections)")
    results["imap"] = dict(append=(d_app, p_app), fetch=(dt, pt), search=(ds, ps), idle=(dper, pper), tls=tper)


def imaptest_stress(port, user, secs):
    """Dovecot's imaptest in stress mode (20 clients on one account, its default mix of
    commands): (commands per second, error lines)."""
    if not shutil.which("imaptest"):
        raise SystemExit("imaptest is missing: build Dovecot's imaptest (github.com/dovecot/imaptest, "
                         "release-2.3 line) and install it as /usr/local/bin/imaptest")
    mbox = Path("/usr/local/share/imaptest/tests/default.mbox")
    r = subprocess.run(["imaptest", "host=127.0.0.1", f"port={port}", f"user={user}", f"pass={PW}",
                        "clients=20", f"secs={secs}", f"mbox={mbox}"],
                       capture_output=True, text=True, timeout=secs + 120)
    out = r.stdout + r.stderr
    lines = out.splitlines()
    totals = lines[lines.index("Totals:") + 1:]
    counts = [l for l in totals if re.fullmatch(r"[\d ]+", l.strip() or "x")][-1]
    errors = [l for l in lines if "Error:" in l]
    return sum(int(x) for x in counts.split()) / secs, errors


def bench_imaptest(peer, pn, args, results):
    secs = args.imaptest_secs
    print(f"imaptest stress: 20 clients on one account for {secs} s, plain IMAP, each server's own account")
    d_rate, d_err = imaptest_stress(peer.ports["IMAP"], f"user1@{DOMAIN}", secs)
    p_rate, p_err = imaptest_stress(pn.ports["imap"], f"user1@{DOMAIN}", secs)
    print(f"  commands Dovecot {d_rate:8.0f} /s ({len(d_err)} errors)   Postern {p_rate:8.0f} /s "
          f"({len(p_err)} errors)   ratio {p_rate / d_rate:.2f}x")
    for e in d_err[:5]:
        print(f"    Dovecot: {e}")
    for e in p_err[:10]:
        print(f"    Postern: {e}")
    results["imaptest"] = dict(dovecot=(d_rate, len(d_err)), postern=(p_rate, len(p_err)))


def bench_relay(root, pn, args, results, relay_port):
    n, s, size = args.messages, args.sessions, args.size
    print(f"RELAY: {n} messages of {size} bytes from {s} sessions, relayed to a smarthost (smtp-sink)")
    sink = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "nobody", f"127.0.0.2:{relay_port}", "1000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peer = Peer(root / "relay", 2, relayhost=f"127.0.0.2:{relay_port}")
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.2", relay_port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        peer.start()
        smtp_source(peer.ports["SMTP"], 20, 2, size, "warm@far.test")
        smtp_source(pn.ports["smtp"], 20, 2, size, "warm@far.test")
        time.sleep(2)

        def run(port, empty):
            t0 = time.time()
            smtp_source(port, n, s, size, "someone@far.test")
            while not empty():
                if time.time() - t0 > 3600:
                    raise RuntimeError("the queue did not drain")
                time.sleep(0.05)
            return n / (time.time() - t0)

        pf = run(peer.ports["SMTP"], peer.queue_empty)
        po = run(pn.ports["smtp"], pn.queue_empty)
        print(f"  Postfix {pf:8.0f} msg/s   Postern {po:8.0f} msg/s   ratio {po / pf:.2f}x  (accepted, relayed, queue empty)")
        results["relay"] = (pf, po)
    finally:
        peer.stop()
        sink.terminate()


def bench_backup(root, peer, pn, args, results):
    """A whole-store backup of a Postern holding the same mail as the peer's Maildir, against
    what a Postfix+Dovecot administrator does: tar the Maildir, fsync it, and checksum it."""
    n, size = args.backup_messages, args.backup_size
    u = "user3"
    print(f"BACKUP: {n} messages of {size} bytes in one mailbox; Postern's backup (written, fsynced,"
          f" read back and checked) against tar + sync + sha256sum of the peer's Maildir")
    smtp_source(peer.ports["SMTP"], n, 10, size, f"{u}@{DOMAIN}")
    smtp_source(pn.ports["smtp"], n, 10, size, f"{u}@{DOMAIN}")
    t0 = time.time()
    while peer.maildir_count(u) < n or pn.count(f"{u}@{DOMAIN}") < n:
        if time.time() - t0 > 1800:
            raise RuntimeError("the mail did not arrive")
        time.sleep(0.2)
    subprocess.run(["sync"], check=True)
    md = peer.maildir(int(u.removeprefix("user")))
    mail_bytes = sum(p.stat().st_size for p in md.rglob("*") if p.is_file())
    out = root / "peer-backup.tar"
    t0 = time.time()
    for cmd in (["tar", "-cf", str(out), "-C", str(md), "."], ["sync", "-f", str(out)], ["sha256sum", str(out)]):
        subprocess.run(cmd, check=True, capture_output=True)
    peer_s = time.time() - t0
    dest = root / "backups"
    t0 = time.time()
    line = subprocess.run([str(BIN), "-c", str(pn.config), "backup", str(dest)], check=True,
                          capture_output=True, text=True).stdout
    pn_s = time.time() - t0
    held = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    smtp_source(pn.ports["smtp"], n // 10, 10, size, f"{u}@{DOMAIN}")
    t0 = time.time()
    incr = subprocess.run([str(BIN), "-c", str(pn.config), "backup", str(dest), "--incremental"],
                          check=True, capture_output=True, text=True).stdout
    incr_s = time.time() - t0
    t0 = time.time()
    subprocess.run([str(BIN), "-c", str(pn.config), "restore", str(dest), "--data-dir", str(root / "restored")],
                   check=True, capture_output=True)
    restore_s = time.time() - t0
    mib = lambda b, t: b / (1 << 20) / t
    print(f"  peer: tar+sync+sha256sum  {mail_bytes / (1 << 20):7.1f} MiB of Maildir in {peer_s:6.2f} s"
          f" = {mib(mail_bytes, peer_s):6.1f} MiB/s")
    print(f"  Postern: backup           {held / (1 << 20):7.1f} MiB in {pn_s:6.2f} s = {mib(held, pn_s):6.1f} MiB/s"
          f"  ({line.strip().split(': ', 1)[-1]})")
    print(f"  Postern: incremental      after {n // 10} more messages: {incr_s:6.2f} s"
          f"  ({incr.strip().split(': ', 1)[-1]})")
    print(f"  Postern: restore          {restore_s:6.2f} s = {mib(held, restore_s):6.1f} MiB/s (every byte checked)")
    print(f"  ratio (MiB/s, Postern backup / tar of the Maildir): {mib(held, pn_s) / mib(mail_bytes, peer_s):.2f}x")
    results["backup"] = (mib(mail_bytes, peer_s), mib(held, pn_s), restore_s)


def psql(sql):
    url = os.environ.get("POSTERN_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
    subprocess.run(["psql", url, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True, capture_output=True)
    return url.rsplit("/", 1)[0]


def bench_storage(root, args, results):
    """SMTP acceptance and IMAP FETCH on the embedded store, on PostgreSQL with one node, and
    with two nodes sharing one database (SMTP split between them, FETCH on the second)."""
    n, s, size = args.messages, args.sessions, args.size
    print(f"STORAGE: {n} messages of {size} bytes by {s} SMTP sessions, then FETCH of the INBOX")
    dbs = [f"postern_bench_{os.getpid()}_{i}" for i in (1, 2)]
    server = psql(f"CREATE DATABASE {dbs[0]}")
    psql(f"CREATE DATABASE {dbs[1]}")
    conf = lambda db: f'[storage]\nbackend = "postgres"\nurl = "{server}/{db}"\nmax_connections = 32'
    setups = {
        "embedded": [Server(root, 2, 1, "st-embedded")],
        "postgres, 1 node": [Server(root, 2, 1, "st-pg1", conf(dbs[0]))],
        "postgres, 2 nodes": [Server(root, 2, 1, "st-pg2a", conf(dbs[1])),
                              Server(root, 2, 1, "st-pg2b", conf(dbs[1]), setup=False)],
    }
    u = f"user1@{DOMAIN}"
    try:
        for label, nodes in setups.items():
            for x in nodes:
                x.start()
            for x in nodes:
                smtp_source(x.ports["smtp"], 10, 2, size, f"user2@{DOMAIN}")
            t0 = time.time()
            with ThreadPoolExecutor(len(nodes)) as ex:
                list(ex.map(lambda x: smtp_source(x.ports["smtp"], n // len(nodes), max(1, s // len(nodes)),
                                                  size, u), nodes))
            acc = n / (time.time() - t0)
            got, ft = min((imapbench.fetch_headers(nodes[-1].ports["imap"], u, PW) for _ in range(3)),
                          key=lambda r: r[1])
            print(f"  {label:<18} SMTP {acc:8.0f} msg/s accepted   FETCH {ft:7.3f} s for {got} messages")
            results.setdefault("storage", {})[label] = (acc, ft)
            for x in nodes:
                x.stop()
    finally:
        for db in dbs:
            psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


class Tee:
    """stdout to the terminal and to the results file at once."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()


def sh(*cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine():
    """What a figure depends on: when, on what, of which versions."""
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    return [
        f"date:       {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"machine:    {platform.node()}: {os.cpu_count()} cores ({cpu}), {mem / 1024 / 1024:.1f} GiB RAM, "
        f"{sh('sh', '-c', '. /etc/os-release && echo $PRETTY_NAME')}, Linux {platform.release()}",
        f"load:       {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) at the start",
        f"postern:    {sh('git', '-C', str(ROOT), 'describe', '--always', '--dirty')} (release build)",
        f"peers:      Postfix {sh('postconf', '-h', 'mail_version')}, Dovecot {sh('dovecot', '--version')}, "
        f"PostgreSQL {sh('psql', '--version')}",
        f"command:    scripts/bench {' '.join(sys.argv[1:])}",
    ]


def main():
    if sys.argv[1:2] == ["webmail"]:
        # The webmail's figure has options of its own (bench/webmailbench.py).
        import webmailbench
        return webmailbench.main(sys.argv[2:], machine, Tee)
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="*", default=["smtp", "pop3", "imap", "relay"])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--pop-messages", type=int, default=200)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--imap-messages", type=int, default=50000)
    ap.add_argument("--append-messages", type=int, default=10000)
    ap.add_argument("--idle-users", type=int, default=200)
    ap.add_argument("--backup-messages", type=int, default=4000)
    ap.add_argument("--backup-size", type=int, default=50000)
    ap.add_argument("--idle-per-user", type=int, default=10)
    ap.add_argument("--imaptest-secs", type=int, default=30)
    ap.add_argument("--out", help="the raw results file (default bench/results/DATE-MACHINE.txt)")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "postern"], cwd=ROOT, check=True)
    out = Path(args.out) if args.out else RESULTS / (
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}-{platform.node().split('.')[0]}.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        terminal = sys.stdout
        sys.stdout = Tee(terminal, f)
        try:
            print("\n".join(machine()))
            results = run(args)
            print(f"load:       {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) at the end")
            print("results:    " + json.dumps(results))
        finally:
            sys.stdout = terminal
    print(f"raw results written to {out}")
    return results


def run(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    results = {}
    with tempfile.TemporaryDirectory(prefix="postern-bench-") as d:
        root = Path(d)
        os.chmod(root, 0o755)
        if "storage" in args.what:
            bench_storage(root, args, results)
            if args.what == ["storage"]:
                return results
        users = max(args.users, 2, args.idle_users + 2 if "imap" in args.what else 0)
        relay_port = free_port()
        peer = Peer(root, users)
        pn = Server(root, users, relay_port)
        # The MX with inbound checks: SMTP's second figure, and the POP3 run reads what it stored.
        checked = {"smtp", "pop3"} & set(args.what)
        dns = Dns(free_port()) if checked else None
        mx = Server(root, max(args.users, 2), relay_port, name="postern-mx", dns_port=dns.port) if dns else None
        peer.start()
        pn.start()
        if dns:
            dns.start()
            mx.start()
        try:
            if "smtp" in args.what:
                bench_smtp(peer, pn, args, results, mx)
            if "pop3" in args.what:
                bench_pop3(peer, mx, args, results, mirror=pn if mx is not pn else None)
            if mx:
                mx.stop()
                dns.stop()
            if "imap" in args.what:
                bench_imap(peer, pn, args, results)
            if "backup" in args.what:
                bench_backup(root, peer, pn, args, results)
            if "imaptest" in args.what:
                bench_imaptest(peer, pn, args, results)
            if "relay" in args.what:
                # The relaying pair is another peer; this one is no longer needed.
                peer.stop()
                bench_relay(root, pn, args, results, relay_port)
        finally:
            pn.stop()
            peer.stop()
    return results


if __name__ == "__main__":
    main()
