"""Peers for delivery tests: a real DNS server (dnsmasq) on loopback, and a small scriptable
SMTP server that records what it receives (a destination that can say 451 or 550 on purpose)."""

import os
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from pathlib import Path


class Dns:
    """dnsmasq answering only for the records given; restart() to change them."""

    def __init__(self, port):
        self.port = port
        self.proc = None

    def start(self, mx=(), a=(), txt=(), null_mx=(), srv=(), cname=(), ptr=(), a_only=()):
        """mx: (domain, host, pref); a: (name, ip), with the reverse (PTR) record too;
        txt: (name, text); null_mx: domains; srv: (name, target, port); cname: (alias,
        target); ptr: (ip, name); a_only: (name, ip) without the reverse."""
        self.stop()
        args = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
                f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                "--pid-file=", "--log-facility=-", "--conf-file=/dev/null", "--user=root",
                # Names we do not publish do not exist (NXDOMAIN), as on the internet.
                "--local=/test/", "--local=/invalid/", "--local=/in-addr.arpa/"]
        for domain, host, pref in mx:
            args.append(f"--mx-host={domain},{host},{pref}")
        for name, ip in a:
            args.append(f"--host-record={name},{ip}")
        for name, text in txt:
            chunks = [text[i:i + 250] for i in range(0, len(text), 250)]
            if "," in text:
                # dnsmasq splits --txt-record at commas: such a text goes as raw record data
                # (type 16: each string its length, then its bytes).
                rdata = b"".join(bytes([len(c.encode())]) + c.encode() for c in chunks)
                args.append(f"--dns-rr={name},16,{rdata.hex()}")
            else:
                args.append(f"--txt-record={name}," + ",".join(chunks))
        for name, target, port in srv:
            args.append(f"--srv-host={name},{target},{port},0,0")
        for name, ip in a_only:
            args.append(f"--address=/{name}/{ip}")
        for alias, target in cname:
            args.append(f"--cname={alias},{target}")
        for ip, name in ptr:
            rev = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
            args.append(f"--ptr-record={rev},{name}")
        for domain in null_mx:
            # MX 0 "." (RFC 7505) as raw record data: preference 0, root name.
            args.append(f"--dns-rr={domain},15,000000")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dnsmasq exited: " + self.proc.stderr.read().decode())
            try:
                import dns.resolver
                r = dns.resolver.Resolver(configure=False)
                r.nameservers = ["127.0.0.1"]
                r.port = self.port
                r.lifetime = 1
                r.resolve("probe.invalid", "A")
            except Exception as e:  # NXDOMAIN is the expected answer: the server is up
                if "does not exist" in str(e) or "NXDOMAIN" in type(e).__name__:
                    return self
            time.sleep(0.05)
        raise RuntimeError("dnsmasq did not answer")

    def txt(self, name):
        import dns.resolver
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = ["127.0.0.1"]
        r.port = self.port
        ans = r.resolve(name, "TXT")
        return b"".join(b"".join(rd.strings) for rd in ans)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class _Handler(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        sink = self.server.sink
        sink.connections += 1
        self.reply("220 sink.test ESMTP")
        mail, rcpts, authed, secure = None, [], False, False
        while True:
            raw = self.rfile.readline(4096)
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip("\r\n")
            cmd = line.split(" ", 1)[0].upper()
            sink.commands.append(line)
            override = sink.script(cmd, line, sink) if sink.script else None
            if override:
                self.reply(override)
                if cmd == "DATA" and override.startswith("354"):
                    pass
                else:
                    continue
            if cmd in ("EHLO", "HELO"):
                caps = ["250-sink.test", "250-PIPELINING", "250-8BITMIME", "250-SIZE 10000000", "250-DSN"]
                if sink.auth:
                    caps.append("250-AUTH PLAIN")
                if sink.tls and not secure:
                    caps.append("250-STARTTLS")
                caps += [f"250-{c}" for c in sink.caps]
                caps.append("250 ENHANCEDSTATUSCODES")
                for c in caps:
                    self.wfile.write(c.encode() + b"\r\n")
                self.wfile.flush()
            elif cmd == "STARTTLS" and sink.tls and not secure:
                self.reply("220 2.0.0 go ahead")
                try:
                    self.connection = sink.tls.wrap_socket(self.connection, server_side=True)
                except (OSError, ValueError) as e:
                    sink.tls_errors.append(str(e))
                    return
                self.rfile = self.connection.makefile("rb")
                self.wfile = self.connection.makefile("wb")
                secure, mail, rcpts = True, None, []
            elif cmd == "AUTH":
                import base64
                creds = base64.b64decode(line.split()[2]).split(b"\0")
                if sink.auth and (creds[1].decode(), creds[2].decode()) == sink.auth:
                    authed = True
                    self.reply("235 2.7.0 ok")
                else:
                    self.reply("535 5.7.8 no")
            elif cmd == "MAIL":
                if sink.auth and not authed:
                    self.reply("530 5.7.0 auth first")
                    continue
                mail, rcpts = line[10:].split(">")[0].lstrip("<"), []
                self.reply("250 2.1.0 ok")
            elif cmd == "RCPT":
                rcpts.append(line[8:].split(">")[0].lstrip("<"))
                self.reply("250 2.1.5 ok")
            elif cmd == "DATA":
                if not override:
                    self.reply("354 go ahead")
                # `wire` keeps the lines exactly as sent (dot-stuffed); `data` undoes the
                # stuffing for convenience. Tests of the stuffing itself judge `wire`.
                data, wire = bytearray(), bytearray()
                while True:
                    l = self.rfile.readline(1 << 20)
                    if not l:
                        return
                    if l == b".\r\n":
                        break
                    wire += l
                    if l.startswith(b"."):
                        l = l[1:]
                    data += l
                sink.current = bytes(wire)
                end = sink.script("END", "", sink) if sink.script else None
                if end:
                    sink.refused.append(bytes(wire))
                    self.reply(end)
                else:
                    sink.messages.append((mail, list(rcpts), bytes(data)))
                    sink.wire.append(bytes(wire))
                    sink.secure.append(secure)
                    self.reply("250 2.0.0 queued")
                mail, rcpts = None, []
            elif cmd == "RSET":
                mail, rcpts = None, []
                self.reply("250 2.0.0 ok")
            elif cmd == "QUIT":
                self.reply("221 2.0.0 bye")
                return
            else:
                self.reply("502 5.5.2 what")


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class Sink:
    """An SMTP server on ip:port. `script(cmd, line, sink)` may return a reply to use instead;
    cmd "END" is the end of data (`current` holds its wire lines then). With `tls` (an ssl.SSLContext) it offers STARTTLS; `secure`
    says, for each message received, whether it came over TLS; `wire`, its DATA lines exactly
    as they were sent (still dot-stuffed, without the final ".")."""

    def __init__(self, ip, port, script=None, auth=None, tls=None, caps=()):
        self.messages, self.commands, self.connections = [], [], 0
        # More EHLO keywords to offer ("REQUIRETLS"...).
        self.caps = list(caps)
        self.secure, self.tls_errors, self.wire = [], [], []
        # DATA refused at its end by the script: the wire lines, as `wire` keeps them.
        self.refused, self.current = [], b""
        self.script, self.auth, self.tls = script, auth, tls
        self.server = _Server((ip, port), _Handler)
        self.server.sink = self
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Ntp:
    """An SNTP server on 127.0.0.1 whose clock is `offset` seconds off ours."""

    def __init__(self, port, offset=0.0):
        import struct
        self.port, self.offset = port, offset
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.running = True

        def serve():
            while self.running:
                try:
                    data, addr = self.sock.recvfrom(512)
                except (socket.timeout, OSError):
                    continue
                if len(data) < 48:
                    continue
                t = time.time() + self.offset + 2208988800
                secs, frac = int(t), int((t % 1) * 2**32)
                # Leap 0, version 4, mode 4 (server); stratum 2; the client's transmit time
                # echoed as originate time; receive and transmit times ours.
                reply = struct.pack("!BBbb11I", 0x24, 2, 6, -20, 0, 0, 0, 0, 0,
                                    *struct.unpack("!II", data[40:48]), secs, frac, secs, frac)
                self.sock.sendto(reply, addr)

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def stop(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()


class Pki:
    """A certificate authority, and certificates it (or nobody) issues, as PEM files in `dir`."""

    def __init__(self, dir):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        self.dir = Path(dir)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Postern Test CA")])
        now = __import__("datetime").datetime.now(__import__("datetime").timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - __import__("datetime").timedelta(days=1))
                     .not_valid_after(now + __import__("datetime").timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca_file = self.dir / "ca.pem"
        self.ca_file.write_bytes(self.pem(self.cert))

    @staticmethod
    def pem(cert):
        from cryptography.hazmat.primitives import serialization
        return cert.public_bytes(serialization.Encoding.PEM)

    @staticmethod
    def der(cert):
        from cryptography.hazmat.primitives import serialization
        return cert.public_bytes(serialization.Encoding.DER)

    @staticmethod
    def spki(cert):
        from cryptography.hazmat.primitives import serialization
        return cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)

    def issue(self, names, self_signed=False):
        """A certificate for `names`; returns (cert, an ssl.SSLContext serving it)."""
        import datetime
        import ssl
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(subject)
                .issuer_name(subject if self_signed else self.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
                .sign(key if self_signed else self.key, hashes.SHA256()))
        stem = self.dir / (names[0] + (".self" if self_signed else ""))
        chain = self.pem(cert) + (b"" if self_signed else self.pem(self.cert))
        Path(f"{stem}.crt").write_bytes(chain)
        Path(f"{stem}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(f"{stem}.crt", f"{stem}.key")
        return cert, ctx


class PolicyServer:
    """An HTTPS server on 127.0.0.1 serving /.well-known/mta-sts.txt from `policies`, a dict
    of Host header to policy text (a missing host gets 404)."""

    def __init__(self, port, ctx, policies):
        import http.server
        self.policies, self.requests = policies, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                host = (self.headers.get("Host") or "").split(":")[0]
                outer.requests.append((host, self.path))
                body = outer.policies.get(host)
                if self.path != "/.well-known/mta-sts.txt" or body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.running = True

    def stop(self):
        if self.running:
            self.running = False
            self.server.shutdown()
            self.server.server_close()


class SignedDns:
    """unbound on 127.0.0.1 validating DNSSEC: it serves `records` (zone file lines relative to
    `origin`) as a zone signed with a fresh key it trusts, so its answers carry the AD bit.
    `tamper(old, new)` rewrites a signed record's text after signing (a bogus answer)."""

    def __init__(self, port, origin, records, tamper=()):
        import dns.dnssec
        import dns.zone
        from cryptography.hazmat.primitives.asymmetric import ec
        self.port, self.origin = port, origin.rstrip(".") + "."
        self.dir = Path(tempfile.mkdtemp(prefix="postern-unbound-"))
        text = (f"$ORIGIN {self.origin}\n$TTL 300\n"
                f"@ SOA ns.{self.origin} admin.{self.origin} 1 3600 600 86400 300\n"
                f"@ NS ns.{self.origin}\nns A 127.0.0.1\n" + "\n".join(records) + "\n")
        zone = dns.zone.from_text(text, origin=self.origin)
        key = ec.generate_private_key(ec.SECP256R1())
        dnskey = dns.dnssec.make_dnskey(key.public_key(), dns.dnssec.Algorithm.ECDSAP256SHA256, flags=257)
        with zone.writer() as txn:
            dns.dnssec.sign_zone(zone, txn=txn, keys=[(key, dnskey)], lifetime=30 * 86400)
        signed = zone.to_text()
        for old, new in tamper:
            assert old in signed, old
            signed = signed.replace(old, new)
        (self.dir / "zone").write_text(signed)
        (self.dir / "unbound.conf").write_text(f"""server:
  interface: 127.0.0.1
  port: {port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{self.dir}"
  pidfile: "{self.dir}/pid"
  use-syslog: no
  logfile: ""
  verbosity: 1
  do-not-query-localhost: no
  module-config: "validator iterator"
  trust-anchor: "{self.origin} DNSKEY {dnskey.to_text()}"
  local-zone: "test." nodefault
  access-control: 127.0.0.0/8 allow
auth-zone:
  name: "{self.origin}"
  zonefile: "{self.dir}/zone"
  for-downstream: no
  for-upstream: yes
  fallback-enabled: no
remote-control:
  control-enable: no
""")
        self.proc = subprocess.Popen(["unbound", "-d", "-c", str(self.dir / "unbound.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        import dns.flags
        import dns.message
        import dns.query
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("unbound exited: " + self.proc.stderr.read().decode())
            try:
                q = dns.message.make_query(self.origin, "SOA", want_dnssec=True)
                r = dns.query.udp(q, "127.0.0.1", port=port, timeout=1)
                if r.flags & dns.flags.AD:
                    return
            except Exception:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("unbound did not answer with validated data")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class Pebble:
    """Debian's pebble, a local ACME CA (RFC 8555), on loopback: it validates challenges by
    connecting to `http_port` / `tls_port` at the addresses `dns_port` gives for each name."""

    def __init__(self, dir, dns_port, http_port, tls_port, validity=3600):
        import datetime
        import ipaddress
        import json
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        from conftest import free_port
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.mgmt_port = free_port(), free_port()
        # A throwaway CA for pebble's own HTTPS (what [acme] ca_file trusts).
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Pebble HTTPS test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=1))
              .not_valid_after(now + datetime.timedelta(days=30))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                    critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem = serialization.Encoding.PEM
        self.ca_file = self.dir / "pebble-ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(pem))
        (self.dir / "cert.pem").write_bytes(cert.public_bytes(pem))
        (self.dir / "key.pem").write_bytes(key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.config = self.dir / "pebble.json"
        self.config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(self.dir / "cert.pem"),
            "privateKey": str(self.dir / "key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "certificateValidityPeriod": validity,
        }}))
        self.dns_port = dns_port
        self.directory = f"https://127.0.0.1:{self.port}/dir"
        self.proc = None

    def _ctx(self):
        import ssl
        return ssl.create_default_context(cafile=str(self.ca_file))

    def start(self):
        import urllib.request
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0",
                   PEBBLE_AUTHZREUSE="0")
        self.log = open(self.dir / "pebble.log", "ab")
        self.proc = subprocess.Popen(
            ["pebble", "-config", str(self.config), "-dnsserver", f"127.0.0.1:{self.dns_port}",
             "-strict=false"], stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=self.dir)
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("pebble exited: " + (self.dir / "pebble.log").read_text())
            try:
                urllib.request.urlopen(self.directory, context=self._ctx(), timeout=2).read()
                return self
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("pebble did not answer")
                time.sleep(0.1)

    def root(self) -> str:
        """The root that issues the certificates (new at every start of pebble)."""
        import urllib.request
        url = f"https://127.0.0.1:{self.mgmt_port}/roots/0"
        return urllib.request.urlopen(url, context=self._ctx(), timeout=5).read().decode()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.close()
