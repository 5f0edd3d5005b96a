"""Postern with real mail servers as peers: Postfix relaying to Postern (Postern as its
smarthost), and Dovecot's idea of message structure against ours. The peer is the project's
own Postfix + Dovecot launcher, tests/postfix_dovecot.py."""

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import Postern, free_port
from helpers import ALICE, BOB, inbox, wait_for
from postfix_dovecot import PostfixDovecot


@pytest.fixture(scope="module")
def postfix_to_postern():
    with tempfile.TemporaryDirectory(prefix="postern-peer-") as d:
        root = Path(d)
        # Postfix and Dovecot run as their own users and must reach their directory.
        os.chmod(root, 0o755)
        (root / "pn").mkdir()
        s = Postern(root / "pn")
        s.add_user(ALICE)
        s.add_user(BOB)
        s.start()
        peer = PostfixDovecot(root / "peer", users=3, relayhost=f"127.0.0.1:{s.port('smtp')}", free_port=free_port)
        try:
            peer.start()
            yield s, peer
        finally:
            peer.stop()
            s.kill()


def test_postfix_relays_to_postern(postfix_to_postern):
    s, peer = postfix_to_postern
    port = peer.ports["smtp"]
    msg = ("From: someone@bench.test\r\nTo: alice@example.test, bob@example.test\r\n"
           "Subject: through postfix\r\n\r\nRelayed by Postfix.\r\n.leading dot\r\n")
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--from", "someone@bench.test",
                        "--to", f"{ALICE},{BOB}", "--data", "-"], input=msg, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    got = wait_for(lambda: inbox(s, ALICE), timeout=30)
    assert len(got) == 1
    raw = got[0]
    # Postfix added its own Received; ours is on top, and Postfix came over TLS.
    assert b"with ESMTPS id" in raw.split(b"\r\n\r\n")[0]
    assert b"Relayed by Postfix.\r\n.leading dot\r\n" in raw
    assert len(wait_for(lambda: inbox(s, BOB), timeout=30)) == 1
    # postlogd writes the log on its own time: wait for the delivery's line.
    log = wait_for(lambda: (lambda t: t if "status=sent" in t else None)(peer.postfix_log.read_text()),
                   timeout=30)
    assert "status=sent (250 2.0.0 OK: delivered as" in log
    assert re.search(r"Trusted TLS connection established to 127\.0\.0\.1|"
                     r"Untrusted TLS connection established to 127\.0\.0\.1|"
                     r"Anonymous TLS connection established to 127\.0\.0\.1", log), log


CORPUS = Path(__file__).parent / "corpus"


def fetch_structures(host_port, user, password, messages, tls=False):
    import imaplib
    m = imaplib.IMAP4(*host_port)
    m.login(user, password)
    m.select("INBOX")
    for raw in messages:
        typ, _ = m.append("INBOX", None, None, raw)
        assert typ == "OK"
    out = []
    for i in range(1, len(messages) + 1):
        typ, data = m.fetch(str(i), "(ENVELOPE BODYSTRUCTURE BODY)")
        text = b"".join(x if isinstance(x, bytes) else x[0] + x[1] for x in data)
        out.append(text.decode("utf-8", errors="replace"))
    m.logout()
    return out


def literals_as_quoted(resp: str) -> str:
    """{n} followed by n characters is the same IMAP string as "..."; compare them as equal."""
    out, i = [], 0
    while True:
        m = re.search(r"\{(\d+)\}", resp[i:])
        if not m:
            out.append(resp[i:])
            return "".join(out)
        start = i + m.start()
        n = int(m.group(1))
        body = resp[i + m.end(): i + m.end() + n]
        out.append(resp[i:start] + '"' + body.replace("\\", "\\\\").replace('"', '\\"') + '"')
        i = i + m.end() + n


def split_items(resp: str):
    """The ENVELOPE, BODYSTRUCTURE and BODY values of one FETCH response."""
    resp = literals_as_quoted(resp)
    items = {}
    for name in ("ENVELOPE", "BODYSTRUCTURE", "BODY"):
        i = resp.find(name + " (")
        while i > 0 and resp[i - 1] not in " (":
            i = resp.find(name + " (", i + 1)
        j = i + len(name) + 1
        depth, k, inq = 0, j, False
        while k < len(resp):
            c = resp[k]
            if inq:
                if c == "\\":
                    k += 1
                elif c == '"':
                    inq = False
            elif c == '"':
                inq = True
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        items[name] = resp[j:k + 1]
    return items


def test_bodystructure_and_envelope_match_dovecot(postfix_to_postern):
    s, peer = postfix_to_postern
    files = sorted(CORPUS.glob("*.eml"))
    messages = [f.read_bytes() for f in files]
    dovecot = fetch_structures(("127.0.0.1", peer.ports["imap"]), peer.address(2), peer.password, messages)
    import imaplib
    from helpers import insecure_ctx
    m = imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx())
    m.login(ALICE, "correct-horse-9")
    m.create("Corpus")
    m.select("Corpus")
    for raw in messages:
        assert m.append("Corpus", None, None, raw)[0] == "OK"
    ours = []
    for i in range(1, len(messages) + 1):
        typ, data = m.fetch(str(i), "(ENVELOPE BODYSTRUCTURE BODY)")
        text = b"".join(x if isinstance(x, bytes) else x[0] + x[1] for x in data)
        ours.append(text.decode("utf-8", errors="replace"))
    m.logout()
    diffs = []
    for f, d, o in zip(files, dovecot, ours):
        di, oi = split_items(d), split_items(o)
        for k in ("ENVELOPE", "BODYSTRUCTURE", "BODY"):
            if di[k] != oi[k]:
                diffs.append(f"{f.name} {k}:\n  dovecot {di[k]}\n  postern {oi[k]}")
    assert not diffs, "\n".join(diffs)
