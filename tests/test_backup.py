"""Backups of a running server and restores that mail programs do not notice: a backup taken
under SMTP load holds every message acknowledged before it began, once; an incremental one the
later state; the restored server has the same UIDVALIDITY, UIDs, MODSEQs, flags and POP3 UIDLs;
an account's deleted folder comes back into the running server."""

import imaplib
import json
import re
import smtplib
import threading
import time
from pathlib import Path

from conftest import DOMAIN, PASSWORD
from helpers import ALICE, insecure_ctx, pop3, wait_for


def imap(server, user=ALICE):
    c = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=60)
    c.login(user, PASSWORD)
    return c


def subjects(server, folder="INBOX"):
    """Every message's Subject in a folder, in UID order."""
    c = imap(server)
    typ, _ = c.select(f'"{folder}"', readonly=True)
    assert typ == "OK", folder
    typ, data = c.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    c.logout()
    out = []
    for item in data:
        if isinstance(item, tuple):
            m = re.search(rb"Subject: (.*?)\r\n", item[1])
            out.append(m.group(1).decode() if m else "")
    return out


def condstore_state(server):
    """What a CONDSTORE client caches: UIDVALIDITY, HIGHESTMODSEQ, UIDs and their flags."""
    c = imap(server)
    c.enable("CONDSTORE")
    typ, _ = c.select("INBOX", readonly=True)
    assert typ == "OK"
    uidvalidity = int(c.untagged_responses["UIDVALIDITY"][0])
    hms = int(c.untagged_responses["HIGHESTMODSEQ"][0])
    typ, data = c.uid("FETCH", "1:*", "(FLAGS MODSEQ)")
    flags = {}
    for line in data:
        line = line.decode() if isinstance(line, bytes) else line[0].decode()
        m = re.search(r"UID (\d+)", line)
        f = re.search(r"FLAGS \((.*?)\)", line)
        ms = re.search(r"MODSEQ \((\d+)\)", line)
        # \Recent belongs to a session, not to the message: clients do not cache it.
        names = sorted(x for x in f.group(1).split() if x != "\\Recent")
        flags[int(m.group(1))] = (names, int(ms.group(1)))
    c.logout()
    return uidvalidity, hms, flags


def uidls(server):
    p = pop3(server)
    _, lines, _ = p.uidl()
    p.quit()
    return sorted(l.decode().split()[1] for l in lines)


def restored_server(make_server, data: Path):
    """A server like the first one, on the data directory a restore made."""
    t = make_server()
    t.data = data
    t.config = data / "postern.toml"
    t.write_config()
    return t


class Load:
    """SMTP senders on the MX port; remembers what was acknowledged, and when."""

    def __init__(self, server, total, threads=4):
        self.server, self.total, self.threads = server, total, threads
        self.acked = []
        self.lock = threading.Lock()
        self.errors = []
        self.next = 0

    def run(self):
        def worker():
            s = smtplib.SMTP("127.0.0.1", self.server.port("smtp"), timeout=60)
            try:
                while True:
                    with self.lock:
                        if self.next >= self.total:
                            return
                        n = self.next
                        self.next += 1
                    msg = f"From: load@remote.test\r\nTo: {ALICE}\r\nSubject: load {n}\r\n\r\nmessage {n}\r\n"
                    s.sendmail("load@remote.test", [ALICE], msg)
                    with self.lock:
                        self.acked.append(f"load {n}")
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(e))
            finally:
                try:
                    s.quit()
                except Exception:  # noqa: BLE001
                    pass

        self.workers = [threading.Thread(target=worker) for _ in range(self.threads)]
        for w in self.workers:
            w.start()
        return self

    def count(self):
        with self.lock:
            return len(self.acked)

    def join(self):
        for w in self.workers:
            w.join(300)
        assert not self.errors, self.errors


def test_backup_under_load_restores_without_clients_noticing(make_server, tmp_root):
    s = make_server()
    s.start()
    s.add_user(ALICE)
    backups = tmp_root / "backups"
    load = Load(s, 3000).run()
    wait_for(lambda: load.count() >= 800, timeout=120)
    # Everything acknowledged before the backup starts must be in it.
    with load.lock:
        before = set(load.acked)
    r = s.cli("backup", backups, timeout=300)
    assert "(full)" in r.stdout and "verified" in r.stdout, r.stdout
    # Not on a terminal: one summary line on stderr, with the messages and the rate.
    assert re.fullmatch(r"backed up: \d+ messages, .* in .* \(.*/s.*\)\n", r.stderr), r.stderr
    full = re.search(r"backup (\S+) \(full\)", r.stdout).group(1)
    load.join()
    acked = set(load.acked)
    assert len(acked) == 3000 and len(before) >= 800

    # A client syncs and changes flags; then the incremental backup.
    c = imap(s)
    c.select("INBOX")
    c.uid("STORE", "1:5", "+FLAGS", r"(\Seen $Label1)")
    c.uid("STORE", "3", "+FLAGS", r"(\Flagged)")
    c.logout()
    seen_by_client = condstore_state(s)
    pop_uidls = uidls(s)
    r = s.cli("backup", backups, "--incremental", timeout=300)
    assert "(incremental, on " + full + ")" in r.stdout, r.stdout
    incr = re.search(r"backup (\S+) \(incremental", r.stdout).group(1)
    assert (backups / full).stat().st_mode & 0o077 == 0, "mail and keys are the owner's only"
    listing = s.cli("backup", "list", backups, "--verify").stdout
    assert full in listing and incr in listing and "incremental" in listing, listing
    assert listing.count("every file checks") == 2, listing
    incr_manifest = json.loads((backups / incr / "manifest.json").read_text())
    full_manifest = json.loads((backups / full / "manifest.json").read_text())
    new_bytes = sum(p["to"] - p["from"] for p in incr_manifest["segments"])
    old_bytes = sum(p["to"] - p["from"] for p in full_manifest["segments"])
    assert 0 < new_bytes, "the incremental backup holds the new messages"
    assert all(p["from"] > 0 or p["seg"] not in full_manifest["segment_ends"] for p in incr_manifest["segments"]), \
        "the incremental backup does not copy again what the full one holds"
    assert new_bytes + old_bytes >= sum(incr_manifest["segment_ends"].values())

    # The full backup, restored: every message acknowledged before it, each once.
    r = s.cli("restore", backups, "--name", full, "--data-dir", tmp_root / "restored-full", timeout=300)
    assert "checked against the backup" in r.stdout, r.stdout
    assert r.stderr.startswith("restored: "), r.stderr
    t = restored_server(make_server, tmp_root / "restored-full")
    t.start()
    got = subjects(t)
    assert len(got) == len(set(got)), "a message is there twice"
    missing = before - set(got)
    assert not missing, f"{len(missing)} acknowledged messages missing, e.g. {sorted(missing)[:5]}"
    assert set(got) <= acked
    t.stop()

    # The incremental one, restored: the later state, and a CONDSTORE client sees nothing new.
    s.cli("restore", backups, "--data-dir", tmp_root / "restored-incr", timeout=300)
    u = restored_server(make_server, tmp_root / "restored-incr")
    u.start()
    got = subjects(u)
    assert sorted(got) == sorted(acked)
    assert condstore_state(u) == seen_by_client, "UIDVALIDITY, HIGHESTMODSEQ, UIDs or flags differ"
    c = imap(u)
    c.enable("CONDSTORE")
    c.select("INBOX", readonly=True)
    typ, data = c.uid("FETCH", "1:*", f"(FLAGS) (CHANGEDSINCE {seen_by_client[1]})")
    assert typ == "OK" and data == [None], f"the client would fetch again: {data[:3]}"
    c.logout()
    assert uidls(u) == pop_uidls, "POP3 clients would download again"
    # A restored server takes mail as before.
    smtplib.SMTP("127.0.0.1", u.port("smtp")).sendmail("x@remote.test", [ALICE], "Subject: after\r\n\r\nhi\r\n")
    assert "after" in subjects(u)
    u.stop()

    # --at picks the newest backup taken by then; a later time than all gives the newest.
    r = s.cli("restore", backups, "--at", "2001-01-01", "--data-dir", tmp_root / "none", check=False)
    assert r.returncode != 0 and "at or before 2001-01-01" in r.stderr, r.stderr
    r = s.cli("restore", backups, "--at", "2999-01-01", "--data-dir", tmp_root / "restored-incr", check=False)
    assert r.returncode != 0 and "not empty" in r.stderr, r.stderr

    # A damaged backup is found by list --verify and refused by restore.
    seg = next((backups / incr).glob("seg-*.dat"))
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x20
    seg.write_bytes(bytes(data))
    r = s.cli("backup", "list", backups, "--verify", check=False)
    assert r.returncode != 0 and "damaged" in r.stdout, r.stdout
    r = s.cli("restore", backups, "--name", incr, "--data-dir", tmp_root / "bad", check=False)
    assert r.returncode != 0 and "damaged" in r.stderr, r.stderr
    assert not (tmp_root / "bad").exists(), "no half-restored data directory is left"
    s.stop()


def test_an_accounts_deleted_folder_comes_back_in_the_running_server(make_server, tmp_root):
    s = make_server()
    s.start()
    s.add_user(ALICE)
    c = imap(s)
    c.create("Projects")
    c.create("Projects/2026")
    c.subscribe("Projects")
    for i in range(3):
        c.append("Projects", r"(\Seen $Important)", None, f"Subject: plan {i}\r\n\r\nbody {i}\r\n".encode())
    c.append("Projects/2026", r"(\Flagged)", None, b"Subject: deep\r\n\r\nx\r\n")
    c.append("INBOX", None, None, b"Subject: inbox mail\r\n\r\ny\r\n")
    c.logout()
    backups = tmp_root / "backups"
    r = s.cli("backup", backups, "--user", ALICE)
    assert f"of {ALICE}" in r.stdout and "verified" in r.stdout, r.stdout

    # The user deletes the folder (and its subfolder) by mistake.
    c = imap(s)
    c.delete("Projects/2026")
    c.delete("Projects")
    c.logout()
    r = s.cli("restore", backups, "--user", ALICE, "--folder", "Projects")
    assert "Projects: 3 message(s) restored (folder created)" in r.stdout, r.stdout
    assert "Projects/2026: 1 message(s) restored" in r.stdout, r.stdout
    assert sorted(subjects(s, "Projects")) == ["plan 0", "plan 1", "plan 2"]
    assert subjects(s, "Projects/2026") == ["deep"]
    c = imap(s)
    c.select("Projects", readonly=True)
    typ, data = c.fetch("1:*", "(FLAGS INTERNALDATE)")
    assert all(b"\\Seen" in d and b"$Important" in d for d in data), data
    typ, lsub = c.lsub()
    assert any(b'"Projects"' in l or l.endswith(b" Projects") for l in lsub), lsub
    c.logout()
    # Again: nothing is there twice.
    r = s.cli("restore", backups, "--user", ALICE, "--folder", "Projects")
    assert "0 message(s) added, 4 already there" in r.stdout, r.stdout
    # Under another name, beside the one that is back.
    r = s.cli("restore", backups, "--user", ALICE, "--folder", "Projects", "--as", "Projects (old)")
    assert sorted(subjects(s, "Projects (old)")) == ["plan 0", "plan 1", "plan 2"]
    assert subjects(s, "Projects (old)/2026") == ["deep"]
    assert subjects(s, "INBOX") == ["inbox mail"], "the INBOX was not touched"
    r = s.cli("restore", backups, "--user", ALICE, "--folder", "Nope", check=False)
    assert r.returncode != 0 and "has no folder Nope" in r.stderr, r.stderr
    assert "account" in s.cli("backup", "list", backups).stdout
    s.stop()


def test_scheduled_backups_and_the_doctor(make_server, tmp_root, loopback_dns):
    backups = tmp_root / "scheduled"
    s = make_server(extra_config=f"""
[dns]
nameservers = ["127.0.0.1:{loopback_dns.port}"]
[backup]
dir = "{backups}"
every = "1m"
keep = 2
[doctor]
probe_domain = ""
ntp_server = ""
""")
    s.start()
    s.add_user(ALICE)
    wait_for(lambda: any(backups.glob("*/manifest.json")), timeout=30)
    listing = s.cli("backup", "list", backups).stdout
    assert "full" in listing, listing
    doc = json.loads(s.cli("doctor", "--json", check=False, timeout=120).stdout)
    section = next(x for x in doc["sections"] if x["title"] == "Backups")
    assert any("newest backup" in f["what"] and f["level"] == "ok" for f in section["findings"]), section
    s.stop()


def test_the_store_format_is_checked_on_restore(make_server, tmp_root):
    """A backup written by a newer format is refused with what to do, not half-restored."""
    s = make_server()
    s.start()
    s.add_user(ALICE)
    backups = tmp_root / "b"
    s.cli("backup", backups)
    m = next(backups.glob("*/manifest.json"))
    j = json.loads(m.read_text())
    j["format"] = 99
    m.write_text(json.dumps(j))
    r = s.cli("restore", backups, "--data-dir", tmp_root / "new", check=False)
    assert r.returncode != 0 and "format 99" in r.stderr and "reads up to" in r.stderr, r.stderr
    assert not (tmp_root / "new").exists()
    s.stop()
