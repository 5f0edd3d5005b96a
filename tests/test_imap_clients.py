"""Real mail programs' ways of keeping in step: mbsync (isync) syncing a local Maildir both
ways (flags, deletions, new messages and new folders on either side), and a Thunderbird-like
resync: a client that was offline comes back with CONDSTORE/QRESYNC and learns, in one SELECT
and one FETCH, everything another client changed meanwhile."""

import imaplib
import os
import re
import subprocess
from pathlib import Path

from conftest import PASSWORD
from helpers import ALICE, insecure_ctx, mx_send


def login(server):
    c = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=30)
    c.login(ALICE, PASSWORD)
    return c


def mbsync(server, root: Path):
    """Runs mbsync once with a config for ALICE against the server; returns its output."""
    conf = root / "mbsyncrc"
    local = root / "Mail"
    local.mkdir(exist_ok=True)
    (root / "pass").write_text(PASSWORD)
    conf.write_text(f"""
IMAPAccount postern
Host 127.0.0.1
Port {server.port("imaps")}
User {ALICE}
PassCmd "cat {root / 'pass'}"
SSLType IMAPS
CertificateFile {server.data / 'tls' / 'cert.pem'}

IMAPStore remote
Account postern

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns * !Shared*
Create Both
Remove Both
Expunge Both
SyncState *
Sync All
""")
    r = subprocess.run(["mbsync", "-c", str(conf), "-a"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "HOME": str(root)})
    assert r.returncode == 0, r.stdout + r.stderr
    return local


def maildir_messages(folder: Path):
    """{subject: set of Maildir flag letters} of a Maildir folder."""
    out = {}
    for sub in ("cur", "new"):
        for f in (folder / sub).iterdir() if (folder / sub).exists() else []:
            subject = re.search(rb"^Subject: (.*?)\r?$", f.read_bytes(), re.M).group(1).decode()
            flags = f.name.split(":2,")[1] if ":2," in f.name else ""
            out[subject] = set(flags)
    return out


def set_maildir_flags(folder: Path, subject: str, flags: str):
    for sub in ("cur", "new"):
        for f in (folder / sub).iterdir():
            if f"Subject: {subject}".encode() in f.read_bytes():
                base = f.name.split(":2,")[0]
                f.rename(folder / "cur" / f"{base}:2,{''.join(sorted(flags))}")
                return
    raise AssertionError(f"no local message {subject}")


def remote_state(c, box):
    """{subject: flags} of a mailbox on the server."""
    typ, _ = c.select(f'"{box}"')
    assert typ == "OK"
    typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    out = {}
    for item in data:
        if isinstance(item, tuple):
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode().split()
            subject = re.search(rb"Subject: (.*?)\r", item[1]).group(1).decode()
            out[subject] = set(flags)
    return out


def test_mbsync_syncs_both_ways(server, tmp_path):
    for i in range(1, 4):
        mx_send(server, "x@far.test", [ALICE], f"Subject: inbox {i}\r\n\r\nbody {i}\r\n".encode())
    c = login(server)
    assert c.create("Work")[0] == "OK"
    assert c.append("Work", "(\\Flagged)", None, b"Subject: work 1\r\n\r\nw\r\n")[0] == "OK"
    local = mbsync(server, tmp_path)
    assert set(maildir_messages(local / "INBOX")) == {"inbox 1", "inbox 2", "inbox 3"}
    assert maildir_messages(local / "Work") == {"work 1": {"F"}}

    # Changes on both sides while apart.
    set_maildir_flags(local / "INBOX", "inbox 1", "S")
    set_maildir_flags(local / "INBOX", "inbox 2", "ST")
    (local / "Notes" / "cur").mkdir(parents=True)
    (local / "Notes" / "new").mkdir()
    (local / "Notes" / "tmp").mkdir()
    (local / "Notes" / "cur" / "1700000000.1.host:2,S").write_bytes(b"Subject: note 1\r\n\r\nn\r\n")
    c.select("INBOX")
    assert c.store("3", "+FLAGS", "(\\Answered)")[0] == "OK"
    mx_send(server, "x@far.test", [ALICE], b"Subject: inbox 4\r\n\r\nbody 4\r\n")
    assert c.create("Remote")[0] == "OK"
    assert c.append("Remote", None, None, b"Subject: remote 1\r\n\r\nr\r\n")[0] == "OK"

    mbsync(server, tmp_path)
    remote = remote_state(c, "INBOX")
    assert set(remote) == {"inbox 1", "inbox 3", "inbox 4"}, "the trashed message was expunged"
    assert "\\Seen" in remote["inbox 1"]
    assert "\\Answered" in remote["inbox 3"]
    assert remote_state(c, "Notes") == {"note 1": {"\\Seen"}}
    near = maildir_messages(local / "INBOX")
    assert set(near) == {"inbox 1", "inbox 3", "inbox 4"}, near
    assert near["inbox 3"] == {"R"} and near["inbox 1"] == {"S"}
    assert set(maildir_messages(local / "Remote")) == {"remote 1"}
    # A third run finds nothing to do and changes nothing.
    mbsync(server, tmp_path)
    assert remote_state(c, "INBOX") == remote
    c.logout()


def tagged(c, line):
    """Sends a raw command; returns (untagged lines, tagged line)."""
    tag = c._new_tag()
    c.send(tag + b" " + line.encode() + b"\r\n")
    lines = []
    while True:
        l = c._get_line().decode()
        if l.startswith(tag.decode() + " "):
            return lines, l
        lines.append(l)


def test_an_offline_client_resyncs_with_qresync_as_thunderbird_does(server):
    for i in range(1, 6):
        mx_send(server, "x@far.test", [ALICE], f"Subject: m{i}\r\n\r\nx\r\n".encode())
    # The client's cache: UIDVALIDITY, HIGHESTMODSEQ and the UIDs and flags it has.
    tb = login(server)
    tagged(tb, "ENABLE QRESYNC")
    lines, t = tagged(tb, "SELECT INBOX")
    assert "OK" in t
    uv = int(re.search(r"UIDVALIDITY (\d+)", " ".join(lines)).group(1))
    hms = int(re.search(r"HIGHESTMODSEQ (\d+)", " ".join(lines)).group(1))
    lines, _ = tagged(tb, "UID FETCH 1:* (FLAGS)")
    assert len(lines) == 5
    tb.logout()

    # Meanwhile another client (a phone) reads, flags, deletes and receives.
    phone = login(server)
    phone.select("INBOX")
    phone.store("1", "+FLAGS", "(\\Seen)")
    phone.store("2", "+FLAGS", "($Label1 \\Flagged)")
    phone.store("4", "+FLAGS", "(\\Deleted)")
    phone.expunge()
    mx_send(server, "x@far.test", [ALICE], b"Subject: m6\r\n\r\nx\r\n")
    phone.logout()

    tb = login(server)
    tagged(tb, "ENABLE QRESYNC")
    lines, t = tagged(tb, f"SELECT INBOX (QRESYNC ({uv} {hms} 1:5))")
    assert "OK" in t, t
    text = "\n".join(lines)
    assert "* VANISHED (EARLIER) 4" in text, text
    assert re.search(r"\* 1 FETCH \(UID 1 FLAGS \([^)]*\\Seen", text), text
    assert re.search(r"\* 2 FETCH \(UID 2 FLAGS \([^)]*\$Label1", text), text
    assert "* 5 EXISTS" in text, text
    assert "$Label1" in re.search(r"\* FLAGS \(([^)]*)\)", text).group(1), "keyword announced"
    new_hms = int(re.search(r"HIGHESTMODSEQ (\d+)", text).group(1))
    assert new_hms > hms
    # Thunderbird then fetches what changed since its modseq, with VANISHED.
    lines, t = tagged(tb, f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hms} VANISHED)")
    text = "\n".join(lines)
    assert lines[0] == "* VANISHED (EARLIER) 4", lines
    uids = sorted(int(u) for u in re.findall(r"UID (\d+)", text))
    assert uids == [1, 2, 6], text
    # And nothing is new the second time.
    lines, t = tagged(tb, f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {new_hms} VANISHED)")
    assert lines == [], lines
    # A wrong UIDVALIDITY (the mailbox was re-created) gets a full SELECT, no VANISHED.
    lines, t = tagged(tb, f"SELECT INBOX (QRESYNC ({uv + 1} {hms}))")
    assert "OK" in t and not any("VANISHED" in l for l in lines), lines
    tb.logout()
