"""IMAP over real sockets: imaplib for every command, raw sessions for exact responses,
two clients at once (IDLE), POP3 and IMAP on one INBOX, mbsync, and bad input."""

import email
import imaplib
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import PASSWORD
from helpers import ALICE, BOB, Raw, insecure_ctx, mx_send, pop3

MIXED = (b"From: \"Alice A.\" <alice@example.test>\r\nTo: bob@example.test\r\nSubject: report\r\n"
         b"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.test>\r\n"
         b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\n"
         b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello quarterly numbers\r\nworld\r\n--XX\r\n"
         b"Content-Type: application/octet-stream; name=\"a.bin\"\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQ=\r\n--XX--\r\n")


def imap(server, user=ALICE, password=PASSWORD):
    m = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx(), timeout=30)
    m.login(user, password)
    return m


class ImapRaw:
    """A raw IMAP client over TLS: send a command, get (untagged lines, tagged line)."""

    def __init__(self, server, login=True, port="imaps"):
        self.r = Raw(server.port(port), tls=(port == "imaps"))
        self.n = 0
        self.greeting = self.r.line()
        if login:
            self.ok(f"LOGIN {ALICE} {PASSWORD}")

    def read_response_line(self):
        line = self.r.line()
        # Literals: {n} at the end, then n bytes, then the rest of the line.
        while True:
            m = re.search(rb"\{(\d+)\}$", line)
            if not m:
                return line
            n = int(m.group(1))
            while len(self.r.buf) < n:
                self.r.buf += self.r.sock.recv(65536)
            data, self.r.buf = self.r.buf[:n], self.r.buf[n:]
            line = line + b"\r\n" + data + self.r.line()

    def cmd(self, c, raw=False):
        self.n += 1
        tag = f"t{self.n}"
        self.r.send(f"{tag} ".encode() + (c if isinstance(c, bytes) else c.encode()) + b"\r\n")
        untagged = []
        while True:
            l = self.read_response_line()
            if l.startswith(tag.encode() + b" "):
                return untagged, l.decode(errors="replace")
            untagged.append(l if raw else l.decode(errors="replace"))

    def ok(self, c):
        u, t = self.cmd(c)
        assert " OK " in t, (c, u, t)
        return u

    def close(self):
        self.r.close()


def test_login_capabilities_and_plaintext_refusal(server):
    m = imaplib.IMAP4("127.0.0.1", server.port("imap"))
    assert "STARTTLS" in m.capabilities and "LOGINDISABLED" in m.capabilities
    with pytest.raises(imaplib.IMAP4.error) as e:
        m.login(ALICE, PASSWORD)
    assert "PRIVACYREQUIRED" in str(e.value) and "SSL/TLS" in str(e.value)
    m.starttls(ssl_context=insecure_ctx())
    assert "AUTH=PLAIN" in m.capabilities and "STARTTLS" not in m.capabilities
    assert m.login(ALICE, PASSWORD)[0] == "OK"
    m.logout()
    m = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=insecure_ctx())
    with pytest.raises(imaplib.IMAP4.error) as e:
        m.login(ALICE, "wrong")
    assert "AUTHENTICATIONFAILED" in str(e.value) and "full email address" in str(e.value)
    # AUTHENTICATE PLAIN, with and without SASL-IR.
    m.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{PASSWORD}".encode())
    assert m.state == "AUTH"
    m.logout()
    r = ImapRaw(server, login=False)
    import base64
    ir = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    u, t = r.cmd(f"AUTHENTICATE PLAIN {ir}")
    assert "OK [CAPABILITY" in t


def test_mailboxes_create_rename_delete_list_status(server):
    m = imap(server)
    assert m.create("Work/Projects/2026")[0] == "OK"
    names = [l.decode() for l in m.list()[1]]
    assert any(n.endswith('"Work"') and "\\HasChildren" in n for n in names)
    assert any(n.endswith('"Work/Projects/2026"') for n in names)
    assert any("\\Sent" in n and n.endswith('"Sent"') for n in names)
    assert m.create("Work")[0] == "NO"
    assert m.rename("Work", "Job")[0] == "OK"
    names = [l.decode() for l in m.list('""', "Job/*")[1]]
    assert len(names) == 2
    assert m.delete("Job")[0] == "NO", "has children"
    assert m.delete("Job/Projects/2026")[0] == "OK"
    assert m.delete("INBOX")[0] == "NO"
    assert m.subscribe("Job")[0] == "OK"
    assert m.unsubscribe("Job")[0] == "OK"
    lsub = [l.decode() for l in m.lsub()[1]]
    assert not any(l.endswith('"Job"') for l in lsub) and any("INBOX" in l for l in lsub)
    mx_send(server, "x@far.test", [ALICE], MIXED)
    typ, data = m.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN SIZE HIGHESTMODSEQ DELETED)")
    st = data[0].decode()
    assert "MESSAGES 1" in st and "UNSEEN 1" in st and "UIDNEXT 2" in st and "DELETED 0" in st
    size = int(re.search(r"SIZE (\d+)", st).group(1))
    assert size > len(MIXED)
    # Non-ASCII names: modified UTF-7 for IMAP4rev1 clients.
    assert m.create("&AMQ-rger")[0] == "OK"
    assert any(b'"&AMQ-rger"' in l for l in m.list()[1])
    m.logout()


def test_list_extended_status_special_use_namespace(server):
    r = ImapRaw(server)
    u = r.ok('LIST (SPECIAL-USE) "" "*"')
    assert len(u) == 5 and all(re.search(r"\\(Sent|Drafts|Trash|Junk|Archive)", l) for l in u)
    u = r.ok('LIST "" ("INBOX" "Sent") RETURN (STATUS (MESSAGES UNSEEN) SUBSCRIBED)')
    assert u[0].startswith('* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"')
    assert u[1].startswith('* STATUS "INBOX" (MESSAGES 0 UNSEEN 0)')
    assert '"Sent"' in u[2] and "\\Sent" in u[2]
    assert r.ok('LIST "" ""') == ['* LIST (\\Noselect) "/" ""']
    assert r.ok("NAMESPACE") == ['* NAMESPACE (("" "/")) (("Shared/" "/")) NIL']
    u = r.ok('ID ("name" "test")')
    assert u[0].startswith('* ID ("name" "Postern"')
    # UTF-8 mailbox names once enabled.
    assert r.ok("ENABLE UTF8=ACCEPT") == ["* ENABLED UTF8=ACCEPT"]
    r.ok('CREATE "Bücher"')
    assert any('"Bücher"' in l for l in r.ok('LIST "" "B*"'))


def test_select_fetch_everything(server):
    mx_send(server, "x@far.test", [ALICE], MIXED)
    r = ImapRaw(server)
    u = r.ok("SELECT INBOX")
    assert "* 1 EXISTS" in u and any("UIDVALIDITY" in l for l in u) and any("HIGHESTMODSEQ" in l for l in u)
    u = r.ok("FETCH 1 (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY)")
    f = u[0]
    assert 'ENVELOPE ("Sat, 28 Nov 2026 10:00:00 +0000" "report" (("Alice A." NIL "alice" "example.test"))' in f
    assert '("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 30 1 NIL NIL NIL NIL)' in f
    assert '("application" "octet-stream" ("name" "a.bin") NIL NIL "base64" 8 NIL ("attachment" ("filename" "a.bin")) NIL NIL) "mixed" ("boundary" "XX") NIL NIL NIL)' in f
    # The first session told of a message sees it \Recent (IMAP4rev1, RFC 3501 2.3.2).
    assert "BODY ((" in f and "FLAGS (\\Recent)" in f
    u = r.ok("FETCH 1 (BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[HEADER.FIELDS (Subject)] BODY.PEEK[TEXT]<0.8> BINARY.PEEK[2] BINARY.SIZE[2])")
    f = u[0]
    assert "BODY[1] {30}\r\nhello quarterly numbers\r\nworld" in f
    assert "BODY[2.MIME] {" in f and "Content-Disposition: attachment" in f
    assert "BODY[HEADER.FIELDS (Subject)] {19}\r\nSubject: report\r\n\r\n" in f
    assert "BODY[TEXT]<0> {8}\r\npreamble" in f
    assert "BINARY[2] ~{5}\r\n\x00\x01\x02\x03\x04" in f
    assert "BINARY.SIZE[2] 5" in f
    assert "\\Seen" not in f, "PEEK does not set \\Seen"
    u = r.ok("FETCH 1 (BODY[HEADER])")
    assert "FLAGS (\\Recent \\Seen)" in u[0], "BODY[] sets \\Seen and says so"
    u = r.ok("UID FETCH 1:* (RFC822.HEADER RFC822.TEXT)")
    assert "UID 1" in u[0] and "RFC822.HEADER {" in u[0]
    u = r.ok("FETCH 1 FAST")
    assert "RFC822.SIZE" in u[0] and "INTERNALDATE" in u[0]
    _, t = r.cmd("FETCH 1 (BODY[1.HEADER.FIELDS (Subject)")
    assert " BAD " in t


def test_store_search_expunge_copy_move_uidplus(server):
    for i in range(5):
        mx_send(server, "x@far.test", [ALICE],
                f"Subject: msg {i}\r\nFrom: sender{i}@far.test\r\n\r\nbody {i} {'needle' if i % 2 else 'hay'}\r\n".encode())
    m = imap(server)
    m.select("INBOX")
    typ, d = m.store("1:2", "+FLAGS", "(\\Seen $Work)")
    assert typ == "OK" and b"$Work" in d[0]
    assert m.store("2", "-FLAGS.SILENT", "(\\Seen)")[1] == [None]
    assert m.search(None, "SEEN")[1] == [b"1"]
    assert m.search(None, "UNSEEN")[1] == [b"2 3 4 5"]
    assert m.search(None, "KEYWORD", "$Work")[1] == [b"1 2"]
    assert m.search(None, "BODY", "needle")[1] == [b"2 4"]
    assert m.search(None, "OR", "SUBJECT", '"msg 0"', "FROM", "sender3")[1] == [b"1 4"]
    assert m.search(None, "NOT", "BODY", "needle", "2:5")[1] == [b"3 5"]
    assert m.search(None, "LARGER", "10", "SMALLER", "100000")[1] == [b"1 2 3 4 5"]
    assert m.search(None, "SINCE", "1-Jan-2020", "BEFORE", "1-Jan-2099")[1] == [b"1 2 3 4 5"]
    assert m.search(None, "HEADER", "Subject", '"msg 4"')[1] == [b"5"]
    assert m.uid("SEARCH", None, "UID", "3:*")[1] == [b"3 4 5"]
    assert m.search(None, "TEXT", "sender2")[1] == [b"3"]
    typ, d = m.copy("1:2", "Archive")
    assert typ == "OK"
    typ, d = m._simple_command("MOVE", "3", "Archive")
    assert typ == "OK"
    assert m.select("Archive")[1] == [b"3"]
    m.select("INBOX")
    assert m.search(None, "ALL")[1] == [b"1 2 3 4"]
    m.store("1", "+FLAGS", "\\Deleted")
    m.store("4", "+FLAGS", "\\Deleted")
    typ, d = m.uid("EXPUNGE", "5")
    assert typ == "OK" and m.response("EXPUNGE")[1] == [b"4"]
    typ, d = m.expunge()
    assert d == [b"1"]
    assert m.search(None, "ALL")[1] == [b"1 2"]
    m.logout()
    r = ImapRaw(server)
    r.ok("SELECT Archive")
    u = r.ok("UID SEARCH RETURN (MIN MAX COUNT ALL) ALL")
    assert u == [f'* ESEARCH (TAG "t{r.n}") UID MIN 1 MAX 3 COUNT 3 ALL 1:3']
    u, t = r.cmd("UID COPY 1:2 Trash")
    assert re.search(r"OK \[COPYUID \d+ 1:2 1:2\]", t)
    u, t = r.cmd("APPEND Nowhere {3+}\r\nabc")
    assert "[TRYCREATE]" in t
    u, t = r.cmd("EXAMINE Archive")
    assert "READ-ONLY" in t
    u, t = r.cmd("STORE 1 +FLAGS (\\Deleted)")
    assert " NO " in t and "READ-ONLY" in t
    r.ok("UNSELECT")
    u, t = r.cmd("FETCH 1 FLAGS")
    assert " BAD " in t and "SELECT first" in t


def test_append_multiappend_literals_and_limit(server):
    r = ImapRaw(server)
    u, t = r.cmd('APPEND Drafts (\\Draft $x) "05-Mar-2026 10:00:00 +0100" {20+}\r\nSubject: a\r\n\r\nbody\r\n {3+}\r\nxyz')
    assert re.search(r"OK \[APPENDUID \d+ 1:2\]", t), t
    r.ok("SELECT Drafts")
    u = r.ok("FETCH 1:2 (FLAGS INTERNALDATE RFC822.SIZE)")
    assert '(\\Recent \\Draft $x)' in u[0] and '"05-Mar-2026 09:00:00 +0000"' in u[0]
    # A synchronizing literal gets its continuation; bare LF becomes CRLF.
    r.r.send(b"x1 APPEND INBOX {14}\r\n")
    assert r.r.line().startswith(b"+ ")
    r.r.send(b"Subject: z\n\nq\n\r\n")
    while True:
        l = r.r.line()
        if l.startswith(b"x1 "):
            assert b"OK [APPENDUID" in l
            break
    r.ok("SELECT INBOX")
    u = r.ok("FETCH 1 BODY.PEEK[]")
    assert "{17}\r\nSubject: z\r\n\r\nq\r\n" in u[0]


def test_condstore_qresync(server):
    for i in range(3):
        mx_send(server, "x@far.test", [ALICE], f"Subject: {i}\r\n\r\nx\r\n".encode())
    r = ImapRaw(server)
    assert r.ok("ENABLE QRESYNC") == ["* ENABLED QRESYNC"]
    u = r.ok("SELECT INBOX")
    uidvalidity = re.search(r"UIDVALIDITY (\d+)", " ".join(u)).group(1)
    hms = int(re.search(r"HIGHESTMODSEQ (\d+)", " ".join(u)).group(1))
    u = r.ok("STORE 2 +FLAGS (\\Flagged)")
    assert re.search(r"\* 2 FETCH \(FLAGS \(\\Recent \\Flagged\) MODSEQ \((\d+)\)\)", u[0])
    m2 = int(re.search(r"MODSEQ \((\d+)\)", u[0]).group(1))
    assert m2 > hms
    u, t = r.cmd(f"STORE 2 (UNCHANGEDSINCE {hms}) -FLAGS (\\Flagged)")
    assert "[MODIFIED 2]" in t
    u = r.ok(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {hms})")
    assert len(u) == 1 and u[0].startswith("* 2 FETCH")
    u = r.ok(f"SEARCH MODSEQ {hms + 1}")
    assert u[0].startswith("* SEARCH 2 (MODSEQ")
    r.ok("STORE 3 +FLAGS (\\Deleted)")
    u = r.ok("EXPUNGE")
    assert "* VANISHED 3" in u
    r.ok("UNSELECT")
    u = r.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {hms}))")
    assert "* VANISHED (EARLIER) 3" in u
    assert any(l.startswith("* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ") for l in u)
    u = r.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hms} VANISHED)")
    assert u[0] == "* VANISHED (EARLIER) 3"


def test_quota(make_server):
    s = make_server()
    s.add_user(ALICE, PASSWORD, "--quota", "2K")
    s.start()
    r = ImapRaw(s)
    u = r.ok("GETQUOTAROOT INBOX")
    assert u == ['* QUOTAROOT "INBOX" ""', '* QUOTA "" (STORAGE 0 2)']
    u, t = r.cmd(b"APPEND INBOX {1500+}\r\n" + b"Subject: q\r\n\r\n" + b"x" * 1486)
    assert " OK " in t
    u, t = r.cmd(b"APPEND INBOX {1500+}\r\n" + b"Subject: q\r\n\r\n" + b"x" * 1486)
    assert "NO [OVERQUOTA]" in t
    u = r.ok('GETQUOTA ""')
    assert u == ['* QUOTA "" (STORAGE 2 2)']


def test_idle_sees_changes_from_another_client(server):
    mx_send(server, "x@far.test", [ALICE], b"Subject: first\r\n\r\nx\r\n")
    r = ImapRaw(server)
    r.ok("SELECT INBOX")
    r.r.send(b"i1 IDLE\r\n")
    assert r.r.line().startswith(b"+ ")
    other = imap(server)
    other.select("INBOX")

    def expect(pattern, timeout=30):
        r.r.sock.settimeout(timeout)
        deadline = time.time() + timeout
        while time.time() < deadline:
            l = r.r.line().decode()
            if re.search(pattern, l):
                return l
        raise AssertionError(pattern)

    other.append("INBOX", None, None, b"Subject: appended\r\n\r\ny\r\n")
    expect(r"^\* 2 EXISTS$")
    mx_send(server, "x@far.test", [ALICE], b"Subject: by smtp\r\n\r\nz\r\n")
    expect(r"^\* 3 EXISTS$")
    other.store("1", "+FLAGS", "\\Flagged")
    # This session selected first: the message is recent to it, not to the other.
    expect(r"^\* 1 FETCH \(FLAGS \(\\Recent \\Flagged\)\)$")
    other.store("2", "+FLAGS", "\\Deleted")
    other.expunge()
    expect(r"^\* 2 EXPUNGE$")
    r.r.send(b"DONE\r\n")
    expect(r"^i1 OK")
    other.logout()


def test_pop3_and_imap_on_one_inbox(server):
    """One INBOX seen by both protocols: a deletion over POP3 is an expunge over IMAP, an
    expunge over IMAP is gone from POP3, and POP3's unique ids stay with their messages
    (whatever their format: RFC 1939 leaves it to the server)."""
    for i in range(4):
        mx_send(server, "x@far.test", [ALICE], f"Subject: {i}\r\n\r\nx\r\n".encode())

    def pop_ids():
        """{subject: UIDL} over POP3."""
        p = pop3(server)
        out = {}
        for line in p.uidl()[1]:
            n, uid = line.split()
            subject = [l for l in p.top(int(n), 0)[1] if l.startswith(b"Subject: ")][0]
            out[subject[9:].decode()] = uid
        p.quit()
        return out

    before = pop_ids()
    assert sorted(before) == ["0", "1", "2", "3"] and len(set(before.values())) == 4, before
    r = ImapRaw(server)
    r.ok("SELECT INBOX")
    p = pop3(server)
    assert p.uidl(2).split()[2] == before["1"]
    p.dele(2)
    p.quit()
    u = r.ok("NOOP")
    assert "* 2 EXPUNGE" in u
    u = r.ok("UID FETCH 1:* (UID)")
    assert [re.search(r"UID (\d+)", l).group(1) for l in u] == ["1", "3", "4"]
    # An expunge over IMAP: gone from POP3; the others keep their ids.
    r.ok("UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    r.ok("UID EXPUNGE 3")
    assert pop_ids() == {"0": before["0"], "3": before["3"]}
    # A copy of a message is another message, with an id of its own.
    r.ok("UID COPY 1 INBOX")
    p = pop3(server)
    uids = [l.split()[1] for l in p.uidl()[1]]
    p.quit()
    assert len(uids) == 3 and len(set(uids)) == 3 and before["0"] in uids and before["3"] in uids, uids


def test_starttls_injection_discarded(server):
    mx_send(server, "x@far.test", [ALICE], b"Subject: x\r\n\r\nx\r\n")
    r = Raw(server.port("imap"))
    r.line()
    r.send(b"a STARTTLS\r\nb LOGIN " + ALICE.encode() + b" " + PASSWORD.encode() + b"\r\nc SELECT INBOX\r\n")
    assert r.line().startswith(b"a OK")
    r.starttls()
    r.send(b"d SELECT INBOX\r\n")
    assert r.line().startswith(b"d BAD"), "the injected LOGIN never ran"


def test_limits_and_bad_input(make_server):
    s = make_server(extra_config="[imap]\nmax_errors = 6\nmax_literal_unauth = \"1K\"\nmax_line = 2000\n")
    s.add_user(ALICE)
    s.start()
    r = ImapRaw(s, login=False)
    # A big literal before login is refused without asking for it.
    r.r.send(b"a1 LOGIN {5000}\r\n")
    assert r.r.line().startswith(b"a1 NO [TOOBIG]")
    r.r.send(b"a2 LOGIN " + b"x" * 3000 + b"\r\n")
    assert r.r.line().startswith(b"* BAD Command line too long")
    u, t = r.cmd("SEARCH " + "NOT " * 50 + "ALL")
    assert " BAD " in t
    u, t = r.cmd("FOO")
    assert " BAD " in t and "unknown command" in t
    r.r.send(b"\r\n")
    assert b"BAD" in r.r.line()
    u, t = r.cmd("SELECT INBOX")
    assert " BAD " in t and "log in first" in t
    r.r.send(b"z LOGIN {5000+}\r\n")
    assert b"BYE [TOOBIG]" in r.r.line()
    assert r.r.closed()


def test_mbsync_both_ways(server, tmp_root):
    for i in range(3):
        mx_send(server, "x@far.test", [ALICE], f"Subject: server {i}\r\n\r\nx\r\n".encode())
    m = imap(server)
    m.create("Work")
    m.append("Work", None, None, b"Subject: in work\r\n\r\nw\r\n")
    m.logout()
    local = tmp_root / "mail"
    local.mkdir()
    rc = tmp_root / "mbsyncrc"
    rc.write_text(f"""IMAPAccount test
Host 127.0.0.1
Port {server.port('imaps')}
User {ALICE}
Pass {PASSWORD}
SSLType IMAPS
CertificateFile {server.data}/tls/cert.pem
SystemCertificates no

IMAPStore remote
Account test

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel all
Far :remote:
Near :local:
Patterns *
Create Both
Sync All
Expunge Both
SyncState *
""")
    def run():
        return subprocess.run(["mbsync", "-c", str(rc), "-a"], capture_output=True, text=True, timeout=120)
    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(list((local / "INBOX" / "new").iterdir()) + list((local / "INBOX" / "cur").iterdir())) == 3
    assert len(list((local / "Work" / "cur").iterdir()) + list((local / "Work" / "new").iterdir())) == 1
    # Local changes go up: a new message in a new folder, a flag.
    (local / "Notes" / "cur").mkdir(parents=True)
    (local / "Notes" / "new").mkdir()
    (local / "Notes" / "tmp").mkdir()
    (local / "Notes" / "cur" / "1.local:2,S").write_bytes(b"Subject: from laptop\r\n\r\nhi\r\n")
    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    m = imap(server)
    typ, d = m.select("Notes")
    assert d == [b"1"]
    assert b"\\Seen" in m.fetch("1", "(FLAGS)")[1][0]
    m.logout()
