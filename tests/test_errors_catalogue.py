"""docs/errors.md explains every status code the code can send: read from the source, so a new
reply cannot ship undocumented."""

import re
from pathlib import Path

from conftest import ROOT

SOURCES = [p for p in (ROOT / "crates").rglob("*.rs")]
CATALOGUE = (ROOT / "docs" / "errors.md").read_text()


def source():
    return "\n".join(p.read_text() for p in SOURCES)


def test_every_smtp_reply_is_documented():
    src = source()
    found = set(re.findall(r'Reply::new\(\s*(\d{3}),\s*"(\d\.\d+\.\d+)"', src))
    found |= set(re.findall(r'code:\s*(\d{3}),\s*lines:\s*vec!\[\s*"(\d\.\d+\.\d+)', src))
    assert len(found) > 30, "the pattern still finds the replies"
    missing = sorted(f"{c} {e}" for c, e in found if f"`{c} {e}`" not in CATALOGUE)
    assert not missing, f"not in docs/errors.md: {missing}"


def test_every_notification_status_is_documented():
    src = (ROOT / "crates" / "queue" / "src" / "runner.rs").read_text()
    found = set(re.findall(r'status:\s*"(\d\.\d+\.\d+)"', src))
    assert found
    missing = sorted(s for s in found if f"`{s}`" not in CATALOGUE)
    assert not missing, f"not in docs/errors.md: {missing}"


def test_every_pop3_and_imap_response_code_is_documented():
    pop3 = "\n".join(p.read_text() for p in (ROOT / "crates" / "pop3").rglob("*.rs"))
    imap = "\n".join(p.read_text() for p in (ROOT / "crates" / "imap").rglob("*.rs"))
    codes = set(re.findall(r'-ERR \[([A-Z/-]+)\]|"\[([A-Z/-]+)\]', pop3))
    codes = {a or b for a, b in codes}
    codes |= set(re.findall(r'(?:NO|OK|BYE|BAD) \[([A-Z-]+)[\] ]', imap))
    codes |= set(re.findall(r'"\[([A-Z-]{4,})[\] ]', imap))
    assert {"AUTH", "IN-USE", "OVERQUOTA", "TRYCREATE"} <= codes
    missing = sorted(c for c in codes if f"`[{c}]`" not in CATALOGUE and f"[{c}]`" not in CATALOGUE)
    assert not missing, f"not in docs/errors.md: {missing}"
