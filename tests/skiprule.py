"""The skip rule of the test suite, a pytest plugin (loaded by conftest.py): in CI (CI=true) a
skipped test fails the run unless the allow-list names it with its reason. The allow-list is
tests/allowed-skips.txt (POSTERN_ALLOWED_SKIPS names another, for the rule's own test); CI prints
it, and every skip not on it, in the terminal summary."""

import os
from pathlib import Path

import pytest

ALLOWED_SKIPS = Path(os.environ.get("POSTERN_ALLOWED_SKIPS", Path(__file__).parent / "allowed-skips.txt"))


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def allowed_skips() -> dict:
    """{test id: reason} from ALLOWED_SKIPS: one test a line, `TEST_ID  # REASON`; a line
    without a reason is an error (nobody may allow a skip without saying why)."""
    allowed = {}
    if not ALLOWED_SKIPS.exists():
        return allowed
    for n, line in enumerate(ALLOWED_SKIPS.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        test, _, reason = line.partition("#")
        if not reason.strip():
            raise pytest.UsageError(f"{ALLOWED_SKIPS}:{n}: an allowed skip needs its reason after '#'")
        allowed[test.strip()] = reason.strip()
    return allowed


def _skipped(terminalreporter):
    """(test id, reason) of every skipped test of the run (on xdist, the workers' reports)."""
    out = []
    for rep in terminalreporter.stats.get("skipped", []):
        if hasattr(rep, "wasxfail"):
            out.append((rep.nodeid, "xfail: " + str(rep.wasxfail)))
            continue
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        out.append((rep.nodeid, reason.removeprefix("Skipped: ")))
    return out


def _skip_summary(terminalreporter):
    skipped = _skipped(terminalreporter)
    if not in_ci():
        return
    allowed = allowed_skips()
    terminalreporter.section("skips (CI)")
    terminalreporter.write_line(f"allowed skips, from {os.path.relpath(ALLOWED_SKIPS)}: "
                                + ("none" if not allowed else ""))
    for test, reason in allowed.items():
        terminalreporter.write_line(f"  {test}  # {reason}")
    unexpected = [(t, r) for t, r in skipped if t not in allowed]
    terminalreporter.write_line(f"{len(skipped)} test(s) skipped, {len(unexpected)} of them not allowed")
    for test, reason in unexpected:
        terminalreporter.write_line(f"  NOT ALLOWED: {test}: {reason}", red=True)
    if unexpected:
        terminalreporter.write_line("the run fails: make these tests run here, or name them with their "
                                    f"reason in {os.path.relpath(ALLOWED_SKIPS)}", red=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """In CI a skip that the allow-list does not name fails the run."""
    if hasattr(session.config, "workerinput") or not in_ci():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    allowed = allowed_skips()
    if any(t not in allowed for t, _ in _skipped(reporter)) and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED



def pytest_terminal_summary(terminalreporter):
    _skip_summary(terminalreporter)
