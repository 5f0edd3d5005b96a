"""Maildir in and out, against Dovecot: a tree Dovecot wrote (mail delivered by Postfix and
LMTP, folders, flags, keywords and dates set over IMAP) is imported into a Postern account and
reads the same over Postern's IMAP; exported again, Python's mailbox module and Dovecot itself
read the export with the same folders, flags, keywords and dates."""

import email.utils
import imaplib
import mailbox
import re
import shutil
import smtplib
import subprocess

import pytest

from helpers import ALICE, insecure_ctx, wait_for

# (folder as Dovecot names it, flags, INTERNALDATE, subject)
MESSAGES = [
    ("INBOX", r"(\Seen \Flagged)", "02-Jan-2020 10:11:12 +0000", "read and flagged"),
    ("INBOX", "()", "03-Feb-2021 08:00:00 +0000", "plain"),
    ("Work", r"(\Answered $Label1)", "04-Mar-2022 09:30:00 +0000", "answered with a label"),
    ("Work.Projects", r"(\Draft \Seen)", "05-Apr-2023 12:00:00 +0000", "a draft"),
    ("Caf&AOk-", r"(\Seen $Forwarded)", "06-May-2024 18:45:00 +0000", "forwarded, in Café"),
]


def message(subject):
    return (f"From: Dave <dave@bench.test>\r\nTo: user1@bench.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@bench.test>\r\n\r\nBody of {subject}.\r\n").encode()


def fetch_all(conn, folder):
    """{subject: (flags set, internaldate, body)} of a folder over IMAP."""
    typ, _ = conn.select(f'"{folder}"', readonly=True)
    assert typ == "OK", folder
    typ, data = conn.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
    out = {}
    for part in data:
        if not isinstance(part, tuple):
            continue
        head = part[0].decode()
        flags = set(re.search(r"FLAGS \(([^)]*)\)", head).group(1).split()) - {"\\Recent"}
        date = re.search(r'INTERNALDATE "([^"]+)"', head).group(1)
        subject = re.search(rb"Subject: (.*)\r\n", part[1]).group(1).decode()
        out[subject] = (flags, email.utils.parsedate_to_datetime(date.replace("-", " ")).timestamp(), part[1])
    return out


def test_dovecot_maildir_round_trip(make_server, postfix_dovecot, tmp_root):
    root = tmp_root
    peer = postfix_dovecot()
    # Dovecot writes the tree: one message through Postfix and LMTP (it stays in new/),
    # the others appended over IMAP with flags and dates, in folders.
    with smtplib.SMTP("127.0.0.1", peer.ports["smtp"], timeout=30) as smtp:
        smtp.sendmail("dave@bench.test", ["user1@bench.test"], message("delivered by postfix"))
    dove = imaplib.IMAP4("127.0.0.1", peer.ports["imap"])
    dove.login("user1@bench.test", "pw")
    wait_for(lambda: dove.select("INBOX")[1][0] != b"0", timeout=30)
    for folder in ("Work", "Work.Projects", "Caf&AOk-"):
        assert dove.create(f'"{folder}"')[0] == "OK"
    for folder, flags, date, subject in MESSAGES:
        typ, r = dove.append(f'"{folder}"', flags, f'"{date}"', message(subject))
        assert typ == "OK", r
    expected = {f: fetch_all(dove, f) for f in ("INBOX", "Work", "Work.Projects", "Caf&AOk-")}
    dove.logout()
    maildir = peer.maildir(1)
    assert (maildir / ".Work.Projects" / "cur").is_dir()
    # Mail nobody has looked at yet stays in new/.
    with smtplib.SMTP("127.0.0.1", peer.ports["smtp"], timeout=30) as smtp:
        smtp.sendmail("dave@bench.test", ["user1@bench.test"], message("not seen yet"))
    fresh = wait_for(lambda: list((maildir / "new").iterdir()), timeout=30)[0]
    raw = fresh.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    expected["INBOX"]["not seen yet"] = (set(), int(fresh.stat().st_mtime), raw)

    # Import into a running Postern, through the CLI.
    s = make_server(listeners=("smtp", "imaps"))
    s.add_user(ALICE)
    s.start()
    r = s.cli("storage", "import-maildir", ALICE, str(maildir))
    assert r.returncode == 0, r.stderr
    assert "7 message(s) in 4 folder(s) imported" in r.stdout, r.stdout
    c = imaplib.IMAP4_SSL("127.0.0.1", s.port("imaps"), ssl_context=insecure_ctx())
    c.login(ALICE, "correct-horse-9")
    names = {"INBOX": "INBOX", "Work": "Work", "Work.Projects": "Work/Projects", "Caf&AOk-": "Caf&AOk-"}
    typ, listed = c.list()
    listed = b"\n".join(listed).decode()
    for ours in ("Work", "Work/Projects", "Caf&AOk-"):
        assert f'"{ours}"' in listed or f" {ours}" in listed, listed
    for theirs, ours in names.items():
        got = fetch_all(c, ours)
        assert got.keys() == expected[theirs].keys(), (ours, got.keys())
        for subject, (flags, date, body) in expected[theirs].items():
            assert got[subject][0] == flags, (subject, got[subject][0], flags)
            assert got[subject][1] == date, (subject, "internal date")
            assert got[subject][2] == body, (subject, "body")
    c.logout()

    # Export, and read it with Python's Maildir reader.
    out = root / "export"
    r = s.cli("storage", "export-maildir", ALICE, str(out))
    assert r.returncode == 0, r.stderr
    assert "7 message(s)" in r.stdout
    md = mailbox.Maildir(out, factory=None, create=False)
    assert set(md.list_folders()) >= {"Work", "Work.Projects", "Caf&AOk-"}
    inbox = {m["Subject"]: m for m in md}
    assert inbox["read and flagged"].get_flags() == "FS"
    assert inbox["read and flagged"].get_date() == email.utils.parsedate_to_datetime("Thu, 02 Jan 2020 10:11:12 +0000").timestamp()
    assert inbox["plain"].get_flags() == "" and inbox["not seen yet"].get_flags() == ""
    [cafe] = list(md.get_folder("Caf&AOk-"))
    assert cafe.get_flags() == "PSa" and "forwarded, in Caf".encode() in cafe.as_bytes()
    assert b"\r\n" not in cafe.as_bytes(), "Maildir keeps LF line ends"
    again = s.cli("storage", "export-maildir", ALICE, str(out), check=False)
    assert again.returncode == 1 and "not empty" in again.stderr, "never into a full directory"

    # Dovecot reads the export as its own: user2's Maildir becomes the exported tree.
    target = peer.maildir(2)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(out, target)
    subprocess.run(["chown", "-R", "mail:mail", str(peer.maildir(2).parent)], check=True)
    dove = imaplib.IMAP4("127.0.0.1", peer.ports["imap"])
    dove.login("user2@bench.test", "pw")
    for theirs in names:
        got = fetch_all(dove, theirs)
        assert got.keys() == expected[theirs].keys(), (theirs, got.keys())
        for subject, (flags, date, body) in expected[theirs].items():
            assert got[subject][0] == flags, (subject, got[subject][0], flags)
            assert got[subject][1] == date, subject
            assert got[subject][2] == body, subject
    dove.logout()
