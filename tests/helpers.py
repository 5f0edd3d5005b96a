"""Clients for the tests: thin wrappers over the standard library's real protocol clients,
plus a raw line client for the things libraries refuse to do (smuggling, injection)."""

import poplib
import smtplib
import socket
import ssl
import time

from conftest import DOMAIN, PASSWORD

ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN


def insecure_ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def submit(server, sender, rcpts, msg, user=ALICE, password=PASSWORD, port="submissions"):
    """Sends over submission with TLS and AUTH; returns smtplib's refused dict."""
    if port == "submissions":
        s = smtplib.SMTP_SSL("127.0.0.1", server.port(port), context=insecure_ctx(), timeout=30)
    else:
        s = smtplib.SMTP("127.0.0.1", server.port(port), timeout=30)
        s.starttls(context=insecure_ctx())
    s.login(user, password)
    r = s.sendmail(sender, rcpts, msg)
    s.quit()
    return r


def submit_id(server, sender, rcpts, msg, user=ALICE, password=PASSWORD):
    """Like submit, and returns the id from the 250 reply ("OK: delivered as ID")."""
    s = smtplib.SMTP_SSL("127.0.0.1", server.port("submissions"), context=insecure_ctx(), timeout=30)
    s.login(user, password)
    s.ehlo()
    assert s.mail(sender)[0] == 250
    for r in rcpts:
        assert s.rcpt(r)[0] == 250
    code, text = s.data(msg)
    assert code == 250, text
    s.quit()
    return text.decode().rsplit(" ", 1)[1]


def mx_send(server, sender, rcpts, msg):
    s = smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30)
    r = s.sendmail(sender, rcpts, msg)
    s.quit()
    return r


def pop3(server, user=ALICE, password=PASSWORD):
    p = poplib.POP3_SSL("127.0.0.1", server.port("pop3s"), context=insecure_ctx(), timeout=30)
    p.user(user)
    p.pass_(password)
    return p


def inbox(server, user=ALICE, password=PASSWORD):
    """Every message in the user's INBOX, raw bytes (CRLF), via POP3 without deleting."""
    p = pop3(server, user, password)
    n, _ = p.stat()
    out = [b"\r\n".join(p.retr(i)[1]) + b"\r\n" for i in range(1, n + 1)]
    p.quit()
    return out


def strip_trace(raw: bytes) -> bytes:
    """The message as the sender sent it: without the Return-Path and Received we prepend."""
    lines = raw.split(b"\r\n")
    i = 0
    if lines[0].startswith(b"Return-Path:"):
        i = 1
    assert lines[i].startswith(b"Received:"), lines[i]
    i += 1
    while lines[i].startswith(b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def wait_for(fn, timeout=10, step=0.05):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(step)


class Raw:
    """A line client over a plain or TLS socket."""

    def __init__(self, port, tls=False, timeout=15):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            self.sock = insecure_ctx().wrap_socket(self.sock)
        self.buf = b""

    def send(self, data: bytes):
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("closed: " + repr(self.buf))
            self.buf += d
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l

    def reply(self) -> tuple:
        """One SMTP reply: (code, [lines])."""
        lines = []
        while True:
            l = self.line()
            lines.append(l.decode(errors="replace"))
            if len(l) < 4 or l[3:4] != b"-":
                return int(l[:3]), lines

    def cmd(self, c: str):
        self.send(c.encode() + b"\r\n")
        return self.reply()

    def cmd_bytes(self, c: bytes):
        self.send(c + b"\r\n")
        return self.reply()

    def starttls(self):
        self.sock = insecure_ctx().wrap_socket(self.sock)
        self.buf = b""

    def closed(self, timeout=5) -> bool:
        """True when the server has closed the connection (after any pending data)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False
        except ssl.SSLError:
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def smtp_raw(server, port="smtp", ehlo=True):
    r = Raw(server.port(port), tls=(port == "submissions"))
    code, _ = r.reply()
    assert code == 220
    if ehlo:
        assert r.cmd("EHLO client.test")[0] == 250
    return r


def dkim_key_record(server, domain="example.test"):
    """(selector, DNS record text) for the domain's DKIM key in the server's data directory,
    made from the private key file by `cryptography`, not taken from anything Postern prints."""
    import base64
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    [pem] = (server.data / "dkim").glob(f"{domain}.*.pem")
    selector = pem.name[len(domain) + 1:-len(".pem")]
    key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        return selector, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    assert isinstance(key, ed25519.Ed25519PrivateKey), type(key)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return selector, "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()


def dkim_verify(raw: bytes, dns) -> bool:
    """dkimpy's verdict on a message's DKIM-Signature, keys looked up on the test's DNS server."""
    import dkim
    return dkim.verify(raw, dnsfunc=lambda name, timeout=5: dns.txt(name.decode().rstrip(".")))


class Workers:
    """Helper threads whose failures fail the test that started them: an exception (a failed
    assert too) in a thread is kept, and check() or join() raises it in the test's thread."""

    def __init__(self):
        import threading
        self._threading = threading
        self.threads, self.errors = [], []

    def start(self, fn, *args):
        import traceback

        def run():
            try:
                fn(*args)
            except BaseException as e:  # noqa: B036 - everything a thread raises is the test's
                self.errors.append((self._threading.current_thread().name, e, traceback.format_exc()))

        t = self._threading.Thread(target=run, name=getattr(fn, "__name__", "worker"), daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def check(self):
        if self.errors:
            name, e, tb = self.errors[0]
            raise AssertionError(f"helper thread {name} failed ({len(self.errors)} failure(s)); the first:\n{tb}") from e

    def join(self, timeout=60):
        deadline = time.time() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.time()))
        self.check()
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"helper threads still running after {timeout} s: {alive}"
