"""Test harness: starts the real `postern` binary on free loopback ports, one data directory per
test, and drives it with real clients."""

import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("POSTERN_BIN", ROOT / "target" / "debug" / "postern"))
DOMAIN = "example.test"
PASSWORD = "correct-horse-9"
ARTIFACTS = ROOT / "tests" / "artifacts"

REPORT = ARTIFACTS / "measurements.txt"

# In CI (CI=true) a skipped test fails the run unless tests/allowed-skips.txt names it with
# its reason: the rule is the plugin skiprule.py.
pytest_plugins = ["skiprule"]


def report(line: str):
    """A figure a test measured (kills survived, memory per connection...): printed at the end
    of the run, whatever the output options."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open(REPORT, "a") as f:
        f.write(line.strip() + "\n")


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):
        REPORT.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter):
    if REPORT.exists():
        terminalreporter.section("measurements")
        for line in REPORT.read_text().splitlines():
            terminalreporter.write_line(line)


LISTENERS = ["smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps", "http", "https"]


_HANDED_OUT: set[int] = set()


def _port_range():
    """This worker's own slice of the ports below the kernel's range for outgoing connections,
    so parallel workers never pick the same port between choosing it and binding it."""
    low = 32768
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    low = max(low, 12000)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    width = (low - 10000) // max(workers, 1)
    start = 10000 + width * (index % max(workers, 1))
    return start, start + width


def free_port(host="127.0.0.1"):
    """A port nobody listens on, below the kernel's range for outgoing connections: a port
    the kernel hands out (bind to 0) can meanwhile become the source port of one of the
    thousands of client connections other tests open. A port is handed out once per run, as
    servers of one test pick all their ports before any of them binds."""
    start, end = _port_range()
    for _ in range(500):
        port = random.randrange(start, end)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run(*args, input=None, check=True, config=None, timeout=60):
    cmd = [str(BIN)]
    if config:
        cmd += ["-c", str(config)]
    cmd += [str(a) for a in args]
    r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr}{r.stdout}")
    return r


class Postern:
    """One server: its data dir, config, ports and process."""

    def __init__(self, root: Path, listeners=("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps"),
                 extra_config: str = "", tls_extra: str = "", inbound_checks: bool = False):
        self.root = root
        self.data = root / "data"
        self.hostname = "mail." + DOMAIN
        r = run("init", "--domain", DOMAIN, "--data-dir", self.data, "--listen-ip", "127.0.0.1",
                "--port-offset", "30000")
        assert "DNS records" in r.stdout
        self.init_output = r.stdout
        self.config = self.data / "postern.toml"
        self.ports = {name: free_port() for name in listeners}
        self.proc = None
        self.log_path = root / "server.log"
        # SPF/DKIM/DMARC need DNS; tests that do not bring their own resolver turn them off.
        if not inbound_checks:
            extra_config += "\n[inbound]\ncheck = false\n"
        # Never the machine's resolver: what it answers (or whether it answers at all) differs
        # from one machine to the next. A test that needs DNS brings its own (peers.Dns); any
        # other lookup goes to a loopback port where nobody answers, a temporary failure.
        if "[dns]" not in extra_config:
            extra_config += f'\n[dns]\nnameservers = ["127.0.0.1:{free_port()}"]\ntimeout = "1s"\n'
        self.extra_config = extra_config
        self.tls_extra = tls_extra
        self.write_config()

    def write_config(self):
        listen = "\n".join(f'{k} = ["127.0.0.1:{p}"]' for k, p in self.ports.items())
        top, sections = split_extra(self.extra_config)
        self.config.write_text(f"""
hostname = "{self.hostname}"
data_dir = "{self.data}"
{top}
[listen]
{listen}

[tls]
cert = "{self.data}/tls/cert.pem"
key = "{self.data}/tls/key.pem"
{self.tls_extra}

{sections}
""")

    def cli(self, *args, **kw):
        return run(*args, config=self.config, **kw)

    def start(self, wait=True, preexec_fn=None):
        assert self.proc is None or self.proc.poll() is not None
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(BIN), "-c", str(self.config), "serve"],
                                     stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        for port in self.ports.values():
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise AssertionError(f"port {port} not ready:\n{self.log_text()}")
                    time.sleep(0.05)
        # The control socket appears last.
        while not (self.data / "control.sock").exists():
            if time.time() > deadline:
                raise AssertionError("control socket missing")
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, timeout=40):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("server did not stop on SIGTERM")
        rc = self.proc.returncode if self.proc else None
        if getattr(self, "log", None):
            self.log.close()
        return rc

    def kill(self):
        """SIGKILL: no shutdown at all."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def port(self, name):
        return self.ports[name]

    def add_user(self, address, password=PASSWORD, *extra):
        return self.cli("user", "add", address, "--password-stdin", *extra, input=password + "\n")


def split_extra(extra: str):
    """Top-level keys must come before any [section] in TOML."""
    lines = extra.strip("\n").splitlines()
    for i, l in enumerate(lines):
        if l.strip().startswith("["):
            return "\n".join(lines[:i]), "\n".join(lines[i:])
    return "\n".join(lines), ""


@pytest.fixture
def tmp_root():
    with tempfile.TemporaryDirectory(prefix="postern-test-") as d:
        yield Path(d)


@pytest.fixture
def make_server(tmp_root):
    servers = []

    def make(**kw):
        root = tmp_root / f"s{len(servers)}"
        root.mkdir()
        s = Postern(root, **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        try:
            s.kill()
        except Exception:
            pass


@pytest.fixture
def loopback_dns():
    """dnsmasq on loopback publishing nothing (every .test name is NXDOMAIN) until the test
    calls start() with records: for servers whose lookups must be answered, and fast."""
    from peers import Dns
    dns = Dns(free_port())
    dns.start()
    yield dns
    dns.stop()


@pytest.fixture
def postfix_dovecot(tmp_root):
    """make(**kw) -> a running Postfix + Dovecot pair (tests/postfix_dovecot.py) in this test's
    directory, on free loopback ports; stopped after the test."""
    from postfix_dovecot import PostfixDovecot
    peers = []
    os.chmod(tmp_root, 0o755)

    def make(**kw):
        p = PostfixDovecot(tmp_root / f"peer{len(peers)}", free_port=free_port, **kw)
        peers.append(p)
        return p.start()

    yield make
    for p in peers:
        p.stop()


@pytest.fixture
def server(make_server):
    """A running server with alice@ and bob@example.test (password PASSWORD)."""
    s = make_server()
    s.add_user("alice@" + DOMAIN)
    s.add_user("bob@" + DOMAIN)
    s.start()
    return s
