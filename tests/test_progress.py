"""Progress of long storage commands: with stderr not a terminal, silence while they run and one
summary line at the end (through a running server's control socket and on the store opened
locally); on a terminal (a pseudo-terminal here), a live bar with counts and rates."""

import fcntl
import imaplib
import os
import re
import select
import struct
import subprocess
import termios

import pytest

from conftest import BIN
from helpers import ALICE, insecure_ctx

COUNT = 3000


def make_maildir(root):
    """A Maildir of COUNT small messages, written here; returns (path, bytes on disk)."""
    md = root / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    total = 0
    for i in range(COUNT):
        body = (f"From: Dave <dave@far.test>\nTo: {ALICE}\nSubject: note {i}\n"
                f"Message-ID: <note.{i}@far.test>\n\n" + f"Line {i} of a small message.\n" * (i % 7 + 1))
        data = body.encode()
        (md / "cur" / f"{1600000000 + i}.M{i}P1.far.test:2,S").write_bytes(data)
        total += len(data)
    return md, total


def size(n):
    """Binary units with one decimal, as a person writes them."""
    if n < 1024:
        return f"{n} B"
    v, units = n / 1024, ["KiB", "MiB", "GiB"]
    while v >= 1024 and len(units) > 1:
        v, units = v / 1024, units[1:]
    return f"{v:.1f} {units[0]}"


SUMMARY = re.compile(r"^(\w+): (\d+) messages, ([\d.]+ (?:B|KiB|MiB)) in [\d.]+ s "
                     r"\([\d.]+ (?:B|KiB|MiB)/s, \d+ msg/s\)$")


def one_summary(stderr, verb, count, nbytes=None):
    lines = stderr.splitlines()
    assert len(lines) == 1, f"one summary line, no progress while running: {stderr!r}"
    m = SUMMARY.match(lines[0])
    assert m, lines[0]
    assert m.group(1) == verb and int(m.group(2)) == count, lines[0]
    if nbytes is not None:
        assert m.group(3) == size(nbytes), (lines[0], nbytes)


def inbox_count(s):
    c = imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx())
    c.login(ALICE, "correct-horse-9")
    typ, data = c.status("INBOX", "(MESSAGES)")
    c.logout()
    return int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))


@pytest.mark.parametrize("running", [True, False], ids=["control-socket", "local-store"])
def test_not_on_a_terminal_one_summary_line_at_the_end(make_server, tmp_root, running):
    md, nbytes = make_maildir(tmp_root)
    s = make_server(listeners=("imaps",))
    s.add_user(ALICE)
    if running:
        s.start()
    quiet = s.cli("user", "list")
    assert ALICE in quiet.stdout and quiet.stderr == "", "a short command reports nothing"

    r = s.cli("storage", "import-maildir", ALICE, md, timeout=300)
    assert f"{COUNT} message(s) in 1 folder(s) imported into {ALICE}" in r.stdout, r.stdout
    one_summary(r.stderr, "imported", COUNT, nbytes)

    out = tmp_root / "export"
    r = s.cli("storage", "export-maildir", ALICE, out, timeout=300)
    assert f"{COUNT} message(s) in" in r.stdout, r.stdout
    one_summary(r.stderr, "exported", COUNT)
    assert len(list((out / "cur").iterdir())) == COUNT

    # A failed command writes its error as its one line.
    r = s.cli("storage", "import-maildir", "nobody@example.test", md, check=False)
    assert r.returncode == 1 and r.stderr.splitlines() == [
        "error: user nobody@example.test does not exist; add it first"], r.stderr

    if not running:
        # A copy of the whole store opens both stores here.
        r = s.cli("storage", "export", tmp_root / "copy", timeout=300)
        assert "copied; the counts agree" in r.stdout, r.stdout + r.stderr
        assert re.search(rf"messages\s+{COUNT}\s+{COUNT}\n", r.stdout), r.stdout
        one_summary(r.stderr, "copied", COUNT)
        s.start()
    assert inbox_count(s) == COUNT


def run_on_pty(args):
    """Runs postern with stderr on a pseudo-terminal (stdout a pipe); returns (rc, stdout,
    everything the terminal received)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = dict(os.environ, TERM="xterm")
    proc = subprocess.Popen([str(BIN), *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    screen = b""
    # The terminal is drained while the command runs, or its writes would block.
    while True:
        ready, _, _ = select.select([master], [], [], 1)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the last holder of the terminal's other end is gone
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    stdout = proc.stdout.read().decode()
    return proc.wait(timeout=300), stdout, screen.decode(errors="replace")


@pytest.mark.parametrize("running", [True, False], ids=["control-socket", "local-store"])
def test_on_a_terminal_a_live_bar(make_server, tmp_root, running):
    md, _ = make_maildir(tmp_root)
    s = make_server(listeners=("imaps",))
    s.add_user(ALICE)
    if running:
        s.start()
    rc, stdout, screen = run_on_pty(["-c", s.config, "storage", "import-maildir", ALICE, md])
    assert rc == 0, stdout + screen
    assert f"{COUNT} message(s) in 1 folder(s) imported" in stdout, stdout
    # The bar: messages done of the total, and rates.
    assert re.search(rf"\d+/{COUNT} messages", screen), screen
    assert "importing" in screen, screen
    assert "imported:" not in screen, "a terminal gets the bar, not the summary line"
    if not running:
        s.start()
    assert inbox_count(s) == COUNT
