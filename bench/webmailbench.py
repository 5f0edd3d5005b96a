"""`scripts/bench webmail`: the server time of the first page of a large folder in the webmail.

A Postern (release build, or the debug one with --debug) gets a folder of --messages messages
by IMAP APPEND; a web session then asks for the folder's first page (newest first, 50 lines)
--tries times, and the figure is the server's own time for it (its Server-Timing header), the
median and the best, with the whole request's time beside them."""

import argparse
import datetime
import http.client
import json
import os
import platform
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imapbench

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "bench.test"
USER = f"user1@{DOMAIN}"
PW = "pw"


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=30):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not ready")


def request(port, method, path, cookie=None, body=None, csrf=None):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=120)
    h = {"Host": f"127.0.0.1:{port}"}
    if body is not None:
        h["Content-Type"] = "application/json"
    if cookie:
        h["Cookie"] = cookie
    if csrf:
        h["X-CSRF-Token"] = csrf
    t = time.perf_counter()
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    data = r.read()
    return r, data, time.perf_counter() - t


def main(argv, machine, tee):
    """Runs the measure, printing as it goes and into bench/results/DATE-MACHINE.txt, headed
    by what `machine()` says of the machine."""
    out = ROOT / "bench" / "results" / (
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}-{platform.node().split('.')[0]}.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    args = options(argv)
    profile = "debug" if args.debug else "release"
    with open(out, "a") as f:
        terminal = sys.stdout
        sys.stdout = tee(terminal, f)
        try:
            print("\n".join(l.replace("(release build)", f"({profile} build)") for l in machine()))
            results = measure(args)
            print(f"load:       {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) at the end")
            print("results:    " + json.dumps(results))
        finally:
            sys.stdout = terminal
    print(f"raw results written to {out}")
    return results


def options(argv):
    ap = argparse.ArgumentParser(prog="scripts/bench webmail")
    ap.add_argument("--messages", type=int, default=50000)
    ap.add_argument("--tries", type=int, default=20)
    ap.add_argument("--debug", action="store_true", help="the debug build (target/debug), not a release build")
    return ap.parse_args(argv)


def measure(args):
    profile = "debug" if args.debug else "release"
    if not args.debug:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "postern"], cwd=ROOT, check=True)
    binary = ROOT / "target" / profile / "postern"
    with tempfile.TemporaryDirectory(prefix="postern-bench-webmail-") as d:
        data = Path(d) / "data"
        subprocess.run([str(binary), "init", "--domain", DOMAIN, "--data-dir", str(data), "--listen-ip",
                        "127.0.0.1", "--port-offset", "40000"], check=True, capture_output=True)
        ports = {k: free_port() for k in ("imap", "https")}
        config = data / "postern.toml"
        listen = "\n".join(f'{k} = ["127.0.0.1:{p}"]' for k, p in ports.items())
        config.write_text(f"""hostname = "mx.{DOMAIN}"
data_dir = "{data}"
[listen]
{listen}
[tls]
cert = "{data}/tls/cert.pem"
key = "{data}/tls/key.pem"
[auth]
min_password_length = 2
allow_plaintext = true
[imap]
max_connections_per_ip = 1000
[log]
level = "warn"
[dns]
nameservers = ["127.0.0.1:9"]
[inbound]
check = false
""")
        subprocess.run([str(binary), "-c", str(config), "user", "add", USER, "--password", PW],
                       check=True, capture_output=True)
        log = open(Path(d) / "server.log", "ab")
        proc = subprocess.Popen([str(binary), "-c", str(config), "serve"], stdout=log, stderr=subprocess.STDOUT)
        try:
            for p in ports.values():
                wait_port(p)
            t = time.time()
            rate = imapbench.append(ports["imap"], USER, PW, args.messages, 8)
            print(f"webmail: {args.messages} messages APPENDed to INBOX in {time.time() - t:.0f} s ({rate:.0f}/s)")
            r, body, _ = request(ports["https"], "POST", "/api/v1/session", body={"address": USER, "password": PW})
            cookie = r.getheader("Set-Cookie").split(";")[0]
            r, body, _ = request(ports["https"], "GET", "/api/v1/me/mail/folders", cookie)
            inbox = [f for f in json.loads(body)["folders"] if f["name"] == "INBOX"][0]
            assert inbox["messages"] == args.messages, inbox
            server, total = [], []
            for _ in range(args.tries):
                r, body, dt = request(ports["https"], "GET", f"/api/v1/me/mail/folders/{inbox['id']}/messages?limit=50",
                                      cookie)
                page = json.loads(body)
                assert r.status == 200 and page["total"] == args.messages and len(page["messages"]) == 50
                timing = r.getheader("Server-Timing")
                server.append(float(timing.split("dur=")[1]))
                total.append(dt * 1000)
            print(f"  first page of a {args.messages}-message folder ({profile} build): server time "
                  f"median {statistics.median(server):.1f} ms, best {min(server):.1f} ms; whole request "
                  f"median {statistics.median(total):.1f} ms (of {args.tries})")
            return {"webmail": {"messages": args.messages, "server_ms_median": statistics.median(server),
                                "server_ms_best": min(server), "request_ms_median": statistics.median(total),
                                "build": profile}}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
