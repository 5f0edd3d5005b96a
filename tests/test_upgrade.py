"""Upgrading a data directory written by an older Postern: the store of format 1 in
tests/fixtures (made by tests/fixtures/make_store_schema1.py with the last build that wrote that
format) opened by this build must show every folder, UID, flag and UIDL as the old server showed
them, keep a safety copy of the old store, and make that copy once."""

import hashlib
import imaplib
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import PASSWORD, Postern
from helpers import ALICE, insecure_ctx, pop3

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE = FIXTURES / "store-schema1.tar.gz"
RECORDED = FIXTURES / "store-schema1.json"
LISTENERS = ("smtp", "pop3s", "imaps")


def _names(lines):
    """Mailbox names out of LIST/LSUB lines."""
    out = []
    for raw in lines:
        if raw is None:
            continue
        line = raw.decode() if isinstance(raw, bytes) else raw
        m = re.match(r'\((?P<attrs>[^)]*)\) (?:NIL|"[^"]*") (?P<name>.+)$', line)
        assert m, line
        name = m["name"]
        if name.startswith('"'):
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out.append(name)
    return sorted(out)


def _folder(m, name):
    typ, data = m.status(name, "(MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)")
    assert typ == "OK", data
    status = dict(re.findall(r"(MESSAGES|UIDNEXT|UIDVALIDITY|HIGHESTMODSEQ) (\d+)", data[0].decode()))
    typ, data = m.select(name, readonly=True)
    assert typ == "OK", data
    messages = []
    if int(status["MESSAGES"]):
        typ, data = m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
        assert typ == "OK", data
        for part in data:
            if not isinstance(part, tuple):
                continue
            head, body = part
            head = head.decode()
            uid = int(re.search(r"UID (\d+)", head)[1])
            flags = re.search(r"FLAGS \(([^)]*)\)", head)[1].split()
            messages.append({
                "uid": uid,
                # \Recent belongs to a session, not to the store.
                "flags": sorted(f for f in flags if f != "\\Recent"),
                "sha256": hashlib.sha256(body).hexdigest(),
            })
    m.close()
    return {
        "uidvalidity": int(status["UIDVALIDITY"]),
        "uidnext": int(status["UIDNEXT"]),
        "highestmodseq": int(status["HIGHESTMODSEQ"]),
        "messages": sorted(messages, key=lambda x: x["uid"]),
    }


def observe(server, user=ALICE, password=PASSWORD):
    """What a server shows of an account over IMAP and POP3, changing nothing (EXAMINE, PEEK,
    no DELE)."""
    m = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=30)
    m.login(user, password)
    typ, listed = m.list()
    assert typ == "OK", listed
    typ, subscribed = m.lsub()
    assert typ == "OK", subscribed
    names = _names(listed)
    folders = {name: _folder(m, name) for name in names}
    m.logout()
    p = pop3(server, user, password)
    uidl = [line.decode().split() for line in p.uidl()[1]]
    p.quit()
    return {
        "list": names,
        "lsub": _names(subscribed),
        "folders": folders,
        "pop3_uidl": [[int(n), u] for n, u in uidl],
    }


def unpack_fixture(s: Postern):
    """The fixture's store in place of the one `postern init` made; the config, certificate
    and DKIM key stay this build's."""
    (s.data / "store.redb").unlink()
    shutil.rmtree(s.data / "blobs", ignore_errors=True)
    with tarfile.open(FIXTURE) as t:
        t.extractall(s.data, filter="data")


def copies(s: Postern):
    return sorted(p.name for p in (s.data / "pre-upgrade").glob("*"))


def test_schema1_store_opens_as_it_was(make_server):
    recorded = json.loads(RECORDED.read_text())
    s = make_server(listeners=LISTENERS)
    unpack_fixture(s)
    s.start()
    try:
        assert observe(s) == recorded["observed"]
    finally:
        assert s.stop() == 0
    made = copies(s)
    assert len(made) == 1 and re.fullmatch(r"store-schema-1-\d{8}T\d{6}Z\.redb", made[0]), made
    log = s.log_text()
    assert str(s.data / "pre-upgrade" / made[0]) in log, log
    # A second start finds the store current: no second copy, the same mail.
    s.start()
    try:
        assert observe(s) == recorded["observed"]
    finally:
        assert s.stop() == 0
    assert copies(s) == made


def test_copy_is_the_way_back(make_server):
    """Putting the safety copy back as store.redb gives the old store again, which this build
    upgrades again (the way back for the older build is the same file)."""
    recorded = json.loads(RECORDED.read_text())
    s = make_server(listeners=LISTENERS)
    unpack_fixture(s)
    s.start()
    s.stop()
    [copy] = copies(s)
    shutil.copyfile(s.data / "pre-upgrade" / copy, s.data / "store.redb")
    s.start()
    try:
        assert observe(s) == recorded["observed"]
    finally:
        s.stop()
    assert len(copies(s)) == 2


@pytest.fixture
def small_disk(tmp_root):
    root = tmp_root / "srv"
    data = root / "data"
    data.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {r.stderr.strip()}")
    yield root
    subprocess.run(["umount", "-l", str(data)])


def test_no_room_for_the_copy_no_upgrade(small_disk):
    """A full disk: the copy cannot be made, so the store is not touched and the server says
    why; with room again it upgrades."""
    recorded = json.loads(RECORDED.read_text())
    s = Postern(small_disk, listeners=LISTENERS)
    unpack_fixture(s)
    size = (s.data / "store.redb").stat().st_size
    # Full to the last block, then room for the lock file and small writes but not the copy.
    ballast = s.data / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (1 << 16, 1 << 12):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError:
                    break
        os.ftruncate(fd, os.fstat(fd).st_size - (32 << 10))
    finally:
        os.close(fd)
    assert size > 64 << 10
    s.start(wait=False)
    try:
        rc = s.proc.wait(30)
    finally:
        s.kill()
    log = s.log_text()
    assert rc != 0, log
    assert "cannot make the safety copy" in log and "the disk is full" in log, log
    assert "the store was left unchanged (format 1)" in log, log
    assert copies(s) == []
    ballast.unlink()
    s.start()
    try:
        assert observe(s) == recorded["observed"]
    finally:
        s.stop()
    # Still format 1 when space came back: the upgrade happened now.
    [copy] = copies(s)
    assert copy.startswith("store-schema-1-"), copy
