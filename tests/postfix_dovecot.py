#!/usr/bin/env python3
"""The reference peer of the tests and benchmarks: a Postfix (SMTP in, relay out) that hands
mail for its domain to a Dovecot (LMTP delivery into Maildirs, POP3 and IMAP with and without
TLS), every daemon of it on loopback ports of our choosing, all its state in one directory.

Used by tests/test_delivery.py, test_interop.py, test_maildir.py and bench/bench.py. By hand:

    python3 tests/postfix_dovecot.py start DIR [--users N] [--relayhost HOST:PORT]
    python3 tests/postfix_dovecot.py stop DIR

Postfix's and Dovecot's masters must run as root (they switch to their own users): without
root the start fails and says so. The Debian packages come from scripts/deps.
"""

import argparse
import fcntl
import json
import os
import pwd
import grp
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = "postfix dovecot-imapd dovecot-pop3d dovecot-lmtpd openssl"
SERVICES = ("smtp", "lmtp", "pop3", "pop3s", "imap", "imaps")
# The default main.cf: Postfix starts with another configuration directory only when that
# file lists it in alternate_config_directories. Every peer adds its own and removes it again.
DEFAULT_MAIN_CF = Path("/etc/postfix/main.cf")
LOCK = Path("/run/postern-peer-main-cf.lock") if os.access("/run", os.W_OK) else Path("/tmp/postern-peer-main-cf.lock")


def _loopback_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PeerError(RuntimeError):
    pass


class PostfixDovecot:
    """One Postfix + Dovecot pair. `ports` maps each of SERVICES to a port (missing ones are
    picked by `free_port`). Accounts user1..userN@domain, password `password`. With
    `relayhost` ("host:port"), Postfix relays mail for every other domain there (TLS when
    offered); otherwise it refuses other domains."""

    def __init__(self, dir, domain="bench.test", users=2, password="pw", relayhost="", ip="127.0.0.1",
                 ports=None, free_port=_loopback_port):
        self.dir = Path(dir).resolve()
        self.domain, self.users, self.password = domain, users, password
        self.relayhost, self.ip = relayhost, ip
        self.ports = dict(ports or {})
        for name in SERVICES:
            self.ports.setdefault(name, free_port())
        self.postfix_dir = self.dir / "postfix"
        self.queue_dir = self.dir / "spool"
        self.dovecot_conf = self.dir / "dovecot.conf"
        self.mail_dir = self.dir / "mail"
        self.postfix_log = self.dir / "postfix.log"
        self.dovecot_log = self.dir / "dovecot.log"
        self.cert, self.key = self.dir / "cert.pem", self.dir / "key.pem"
        self.running = False

    # ---- setup ------------------------------------------------------------------------------

    def _check_tools(self):
        missing = [t for t in ("postfix", "postconf", "dovecot", "doveadm", "openssl") if not shutil.which(t)]
        if missing or not Path("/usr/lib/dovecot/lmtp").exists():
            raise PeerError(f"Postfix/Dovecot missing ({' '.join(missing) or 'dovecot-lmtpd'}): "
                            f"run scripts/deps (Debian packages {PACKAGES})")
        if os.geteuid() != 0:
            raise PeerError("the Postfix + Dovecot peer needs root: Postfix's and Dovecot's masters start "
                            "as root and switch to their own users")

    def _write_dovecot(self):
        mail = pwd.getpwnam("mail")
        with open(self.dir / "users", "w") as f:
            for i in range(1, self.users + 1):
                f.write(f"user{i}@{self.domain}:{{PLAIN}}{self.password}:{mail.pw_uid}:{mail.pw_gid}::"
                        f"{self.mail_dir}/user{i}\n")
        p = self.ports
        listener = lambda name, port, tls: (f"  inet_listener {name} {{\n    address = {self.ip}\n"
                                            f"    port = {port}\n" + ("    ssl = yes\n" if tls else "") + "  }\n")
        self.dovecot_conf.write_text(
            f"# Written by tests/postfix_dovecot.py\n"
            f"base_dir = {self.dir}/dovecot-run\n"
            f"instance_name = postern-peer-{p['smtp']}\n"
            f"state_dir = {self.dir}/dovecot-state\n"
            "protocols = imap pop3 lmtp\n"
            f"listen = {self.ip}\n"
            f"log_path = {self.dovecot_log}\n"
            "ssl = yes\n"
            f"ssl_cert = <{self.cert}\n"
            f"ssl_key = <{self.key}\n"
            # Plain passwords over plain connections: the benchmarks' clients and the tests log
            # in without TLS on loopback.
            "disable_plaintext_auth = no\n"
            "auth_mechanisms = plain login\n"
            "mail_location = maildir:~/Maildir\n"
            "mail_fsync = always\n"
            "mail_uid = mail\nmail_gid = mail\nfirst_valid_uid = 1\n"
            f"passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {self.dir}/users\n}}\n"
            f"userdb {{\n  driver = passwd-file\n  args = username_format=%u {self.dir}/users\n}}\n"
            "service imap-login {\n" + listener("imap", p["imap"], False) + listener("imaps", p["imaps"], True) + "}\n"
            "service pop3-login {\n" + listener("pop3", p["pop3"], False) + listener("pop3s", p["pop3s"], True) + "}\n"
            "service lmtp {\n" + listener("lmtp", p["lmtp"], False) + "}\n"
            f"protocol lmtp {{\n  postmaster_address = postmaster@{self.domain}\n}}\n"
            # imaptest's stress mode logs 20 clients in to one account from one address.
            "protocol imap {\n  mail_max_userip_connections = 100\n}\n")

    def _write_postfix(self):
        self.postfix_dir.mkdir(parents=True, exist_ok=True)
        # Every service runs unchrooted (the chroot would need copies of /etc files), smtpd
        # only on our loopback port; postlogd writes maillog_file.
        services = [
            (f"{self.ip}:{self.ports['smtp']}", "inet", "n", "-", "n", "-", "-", "smtpd"),
            ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
            ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
            ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
            ("tlsmgr", "unix", "-", "-", "n", "1000?", "1", "tlsmgr"),
            ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
            ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
            ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
            ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
            ("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
            ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
            ("error", "unix", "-", "-", "n", "-", "-", "error"),
            ("retry", "unix", "-", "-", "n", "-", "-", "error"),
            ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
            ("local", "unix", "-", "n", "n", "-", "-", "local"),
            ("virtual", "unix", "-", "n", "n", "-", "-", "virtual"),
            ("lmtp", "unix", "-", "-", "n", "-", "-", "lmtp"),
            ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
            ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
            ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
        ]
        (self.postfix_dir / "master.cf").write_text(
            "# Written by tests/postfix_dovecot.py\n" + "".join(" ".join(s) + "\n" for s in services))
        relay = ""
        if self.relayhost:
            host, port = self.relayhost.rsplit(":", 1)
            relay = f"relayhost = [{host}]:{port}\nsmtp_tls_security_level = may\nsmtp_tls_loglevel = 1\n"
        (self.postfix_dir / "main.cf").write_text(
            "# Written by tests/postfix_dovecot.py\n"
            "compatibility_level = 3.6\n"
            f"queue_directory = {self.queue_dir}\n"
            f"data_directory = {self.dir}/postfix-data\n"
            "mail_owner = postfix\nsetgid_group = postdrop\n"
            f"myhostname = mx.{self.domain}\nmydomain = {self.domain}\n"
            # smtpd binds only where master.cf says; "all" keeps Postfix from refusing a
            # loopback address that no interface carries (127.0.0.2...).
            "inet_interfaces = all\ninet_protocols = ipv4\n"
            "mydestination =\nlocal_recipient_maps =\nalias_maps =\nalias_database =\n"
            f"virtual_mailbox_domains = {self.domain}\n"
            f"virtual_transport = lmtp:inet:{self.ip}:{self.ports['lmtp']}\n"
            "mynetworks = 127.0.0.0/8\n"
            "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"
            f"smtpd_banner = mx.{self.domain} ESMTP\n"
            # STARTTLS offered with the peer's own certificate; each TLS session is logged, and
            # the Received header says whether the message came over TLS.
            "smtpd_tls_security_level = may\n"
            f"smtpd_tls_cert_file = {self.cert}\nsmtpd_tls_key_file = {self.key}\n"
            "smtpd_tls_loglevel = 1\nsmtpd_tls_received_header = yes\n"
            f"maillog_file = {self.postfix_log}\n"
            "maillog_file_prefixes = /tmp, /var, /run, /root, /home\n"
            "default_process_limit = 100\n"
            + relay)

    def _register(self, add):
        """Adds or removes our directory in the default main.cf's alternate_config_directories,
        keeping whatever else is listed there (other peers may be running)."""
        LOCK.touch(exist_ok=True)
        with open(LOCK) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            DEFAULT_MAIN_CF.parent.mkdir(parents=True, exist_ok=True)
            lines = DEFAULT_MAIN_CF.read_text().splitlines() if DEFAULT_MAIN_CF.exists() else []
            dirs, rest = [], []
            for l in lines:
                if l.startswith("alternate_config_directories"):
                    dirs += [d for d in l.split("=", 1)[1].replace(",", " ").split() if d]
                else:
                    rest.append(l)
            mine = str(self.postfix_dir)
            # Directories of peers whose directory is gone are dropped on the way.
            dirs = [d for d in dict.fromkeys(dirs) if d != mine and Path(d).exists()]
            if add:
                dirs.append(mine)
            if not any(l.startswith("compatibility_level") for l in rest):
                rest.append("compatibility_level = 3.6")
            if not any(l.startswith("maillog_file_prefixes") for l in rest):
                rest.append("maillog_file_prefixes = /tmp, /var, /run, /root, /home")
            if dirs:
                rest.append("alternate_config_directories = " + ", ".join(dirs))
            tmp = DEFAULT_MAIN_CF.with_suffix(".postern-peer")
            tmp.write_text("\n".join(rest) + "\n")
            os.replace(tmp, DEFAULT_MAIN_CF)

    def _certificate(self):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "30", "-subj", f"/CN=mx.{self.domain}", "-keyout", str(self.key),
                        "-out", str(self.cert)], check=True, capture_output=True)
        os.chmod(self.key, 0o640)
        os.chown(self.key, 0, grp.getgrnam("dovecot").gr_gid)

    # ---- running ----------------------------------------------------------------------------

    def start(self, timeout=60):
        self._check_tools()
        self.stop()
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        # Postfix and Dovecot run as their own users and must reach everything below.
        tmp = Path(tempfile.gettempdir()).resolve()
        for d in [self.dir, *self.dir.parents]:
            if d == tmp or tmp not in d.parents:
                break
            mode = d.stat().st_mode
            if mode & 0o005 != 0o005:
                os.chmod(d, mode | 0o005)
        self.mail_dir.mkdir()
        self.queue_dir.mkdir()
        os.chown(self.mail_dir, pwd.getpwnam("mail").pw_uid, grp.getgrnam("mail").gr_gid)
        (self.dir / "postfix-data").mkdir()
        os.chown(self.dir / "postfix-data", pwd.getpwnam("postfix").pw_uid, -1)
        self._certificate()
        self._write_dovecot()
        self._write_postfix()
        self._register(True)
        self.running = True
        # The daemons must not keep our stdout/stderr open: their output goes to files.
        with open(self.dir / "dovecot-start.log", "wb") as out:
            r = subprocess.run(["dovecot", "-c", str(self.dovecot_conf)], stdin=subprocess.DEVNULL,
                               stdout=out, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise PeerError("Dovecot did not start: " + (self.dir / "dovecot-start.log").read_text())
        with open(self.dir / "postfix-start.log", "wb") as out:
            r = subprocess.run(["postfix", "-c", str(self.postfix_dir), "start"], stdin=subprocess.DEVNULL,
                               stdout=out, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise PeerError("Postfix did not start: " + (self.dir / "postfix-start.log").read_text())
        deadline = time.time() + timeout
        for name, greeting in (("smtp", b"220 "), ("lmtp", b"220 "), ("imap", b"* OK"), ("pop3", b"+OK")):
            while True:
                try:
                    with socket.create_connection((self.ip, self.ports[name]), timeout=5) as c:
                        if c.recv(512).startswith(greeting):
                            break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise PeerError(f"the peer's {name} port {self.ports[name]} did not answer; "
                                    f"see {self.postfix_log} and {self.dovecot_log}")
                time.sleep(0.1)
        return self

    def _pid(self, path):
        try:
            pid = int(Path(path).read_text().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def dovecot_master(self):
        return self._pid(self.dir / "dovecot-run" / "master.pid")

    def postfix_master(self):
        return self._pid(self.queue_dir / "pid" / "master.pid")

    def stop(self, timeout=60):
        masters = [self.dovecot_master(), self.postfix_master()]
        if self.dovecot_conf.exists():
            subprocess.run(["dovecot", "-c", str(self.dovecot_conf), "stop"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if (self.postfix_dir / "main.cf").exists():
            subprocess.run(["postfix", "-c", str(self.postfix_dir), "stop"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        for pid in filter(None, masters):
            while _alive(pid):
                if time.time() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
        if self.running or (self.postfix_dir / "main.cf").exists():
            self._register(False)
        self.running = False

    # ---- what the tests and benchmarks look at ----------------------------------------------

    def address(self, i):
        return f"user{i}@{self.domain}"

    def maildir(self, i):
        return self.mail_dir / f"user{i}" / "Maildir"

    def maildir_files(self, i, folder=""):
        """The message files of user i's folder (Dovecot's Maildir++ name: "" is the INBOX)."""
        md = self.maildir(i) / folder
        return sorted(f for d in ("new", "cur") if (md / d).exists() for f in (md / d).iterdir())

    def queue_empty(self):
        r = subprocess.run(["postqueue", "-c", str(self.postfix_dir), "-p"], capture_output=True, text=True)
        return "Mail queue is empty" in r.stdout

    def dovecot_pids(self):
        """This Dovecot's own processes: its master and everything below it (logins, imap, auth,
        lmtp...), never another Dovecot's on the same machine."""
        master = self.dovecot_master()
        return _descendants(master) if master else []

    def postfix_pids(self):
        master = self.postfix_master()
        return _descendants(master) if master else []

    def logs(self, lines=40):
        out = []
        for p in (self.postfix_log, self.dovecot_log):
            try:
                out.append(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:]))
            except OSError:
                pass
        return "\n".join(out)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        # A zombie is gone for our purpose.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _descendants(root):
    children = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return sorted(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("dir")
    ap.add_argument("--domain", default="bench.test")
    ap.add_argument("--users", type=int, default=2)
    ap.add_argument("--password", default="pw")
    ap.add_argument("--relayhost", default="")
    ap.add_argument("--ports", default="", help='JSON, e.g. {"smtp": 11025}; others are picked free')
    a = ap.parse_args()
    ports_file = Path(a.dir) / "ports.json"
    if a.action == "start":
        peer = PostfixDovecot(a.dir, a.domain, a.users, a.password, a.relayhost,
                              ports=json.loads(a.ports) if a.ports else None)
        peer.start()
        ports_file.write_text(json.dumps(peer.ports))
        print(json.dumps(peer.ports))
    else:
        ports = json.loads(ports_file.read_text()) if ports_file.exists() else None
        PostfixDovecot(a.dir, a.domain, ports=ports).stop()


if __name__ == "__main__":
    main()
