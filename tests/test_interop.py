"""Postern with real mail servers as peers: Postfix relaying to Postern (Postern as its
smarthost), from ../shared/peers/postfix_dovecot.sh."""

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, Postern, free_port
from helpers import ALICE, BOB, inbox, strip_trace, wait_for

PEER_SCRIPT = ROOT.parent / "shared" / "peers" / "postfix_dovecot.sh"

pytestmark = [
    pytest.mark.xdist_group("peer"),
    pytest.mark.skipif(not PEER_SCRIPT.exists(), reason="peer script not present"),
]


def peer_env(root: Path, relay: str) -> dict:
    ports = {k: free_port() for k in ("SMTP", "LMTP", "POP3", "IMAP", "POP3S", "IMAPS")}
    env = dict(os.environ, PEER_DIR=str(root / "peer"), PEER_USERS="3", PEER_RELAYHOST=relay)
    env.update({f"PEER_{k}_PORT": str(v) for k, v in ports.items()})
    return env


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
        env = peer_env(root, f"127.0.0.1:{s.port('smtp')}")
        # The daemons keep inherited descriptors open: their output goes to a file, not a pipe.
        log = root / "peer-start.log"
        with open(log, "w") as f:
            r = subprocess.run(["bash", str(PEER_SCRIPT), "start"], env=env, stdout=f, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, timeout=300)
        assert r.returncode == 0, log.read_text()
        try:
            yield s, env
        finally:
            subprocess.run(["bash", str(PEER_SCRIPT), "stop"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=60)
            s.kill()


def test_postfix_relays_to_postern(postfix_to_postern):
    s, env = postfix_to_postern
    port = env["PEER_SMTP_PORT"]
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
    log = (Path(env["PEER_DIR"]) / "postfix.log").read_text()
    assert "status=sent (250 2.0.0 OK: delivered as" in log
