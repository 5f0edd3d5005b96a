"""The sendmail(1) interface local programs use: `postern install-sendmail` links the binary
as /usr/sbin/sendmail and mailq, and bsd-mailx's `mail` (Debian's), `sendmail -t` and plain
`sendmail` reach mailboxes through the running server. The installation happens in a private
mount namespace, over overlay mounts of /etc, /usr/sbin and /usr/bin, so the machine's own
files are never touched."""

import email
import email.policy
import os
import subprocess

from conftest import BIN
from helpers import ALICE, BOB, inbox, wait_for


def headers(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_mailx_and_sendmail_through_the_installed_links(make_server, tmp_root):
    s = make_server(extra_config=f'[sendmail]\nusers = {{ root = "{ALICE}" }}')
    s.add_user(ALICE)
    s.add_user(BOB)
    s.start()
    ov = tmp_root / "overlay"
    script = f"""
set -e
for d in etc usr/sbin usr/bin; do
  mkdir -p {ov}/$d/up {ov}/$d/work
  mount -t overlay overlay -o lowerdir=/$d,upperdir={ov}/$d/up,workdir={ov}/$d/work /$d
done
{BIN} -c {s.config} install-sendmail
echo "Hello from cron." | mail -s "mailx test" {BOB}
printf 'To: {BOB}\\nBcc: {ALICE}\\nSubject: with -t\\n\\nbody t\\n' | /usr/sbin/sendmail -t -i -F "Root User"
printf 'Subject: dots\\n\\nline\\n.\\nafter the dot\\n' | /usr/sbin/sendmail {BOB}
mailq
"""
    env = {k: v for k, v in os.environ.items() if k != "POSTERN_CONFIG"}
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=120, cwd=tmp_root, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"/usr/sbin/sendmail -> {BIN.resolve()}" in r.stdout, r.stdout
    assert "/etc/postern/postern.toml ->" in r.stdout
    # The machine's own sendmail and /etc are as they were.
    assert os.path.realpath("/usr/sbin/sendmail") != str(BIN.resolve())
    assert not os.path.exists("/etc/postern/postern.toml")

    got = wait_for(lambda: (lambda m: m if len(m) == 3 else None)(inbox(s, BOB)), timeout=30)
    by_subject = {headers(m)["Subject"]: m for m in got}
    assert set(by_subject) == {"mailx test", "with -t", "dots"}, by_subject.keys()
    mailx = headers(by_subject["mailx test"])
    # root's mail goes as the address [sendmail] gives it, with the fields a message needs.
    assert mailx["Return-Path"] == f"<{ALICE}>"
    assert mailx["From"] == ALICE and mailx["Date"] and mailx["Message-ID"]
    assert "from local user root" in " ".join(mailx.get_all("Received"))
    assert b"Hello from cron." in by_subject["mailx test"]
    t = headers(by_subject["with -t"])
    assert f'From: "Root User" <{ALICE}>'.encode() in by_subject["with -t"] and t["Bcc"] is None
    assert b"Bcc" not in by_subject["with -t"]
    # Without -i a line with a lone dot ends the message.
    assert b"line" in by_subject["dots"] and b"after the dot" not in by_subject["dots"]
    # The Bcc recipient has her copy.
    [bcc] = wait_for(lambda: inbox(s, ALICE) or None, timeout=30)
    assert headers(bcc)["Subject"] == "with -t"
    assert "the queue is empty" in r.stdout


def test_sendmail_says_why_it_did_not_send(make_server):
    s = make_server()
    s.add_user(ALICE)
    # No server running: the program is told, and exits non-zero.
    r = subprocess.run([str(BIN), "-c", str(s.config), "sendmail", BOB], input=b"Subject: x\n\nx\n",
                       capture_output=True, timeout=30)
    assert r.returncode != 0 and b"not running" in r.stderr, r.stderr
    s.start()
    # An unknown local recipient and no recipient at all: refused, with the reason.
    r = subprocess.run([str(BIN), "-c", str(s.config), "sendmail", "nobody@example.test"],
                       input=b"Subject: x\n\nx\n", capture_output=True, timeout=30)
    assert r.returncode != 0 and b"no mailbox by this name" in r.stderr, r.stderr
    r = subprocess.run([str(BIN), "-c", str(s.config), "sendmail", "-t"],
                       input=b"Subject: x\n\nx\n", capture_output=True, timeout=30)
    assert r.returncode != 0 and b"no recipients" in r.stderr, r.stderr
    r = subprocess.run([str(BIN), "-c", str(s.config), "sendmail", "-bs"],
                       input=b"", capture_output=True, timeout=30)
    assert r.returncode != 0 and b"-bs is not supported" in r.stderr, r.stderr
    # The local user (root here) has no [sendmail] entry: root at the first local domain.
    r = subprocess.run([str(BIN), "-c", str(s.config), "sendmail", "-oi", ALICE],
                       input=b"Subject: plain\n\nhello\n", capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    [m] = wait_for(lambda: inbox(s, ALICE) or None, timeout=30)
    assert headers(m)["Return-Path"] == "<root@example.test>"
