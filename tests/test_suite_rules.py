"""The suite's own rules, checked: a skip fails CI unless the allow-list names it (the
skiprule plugin, run here on a throwaway test file), and the suite needs nothing from outside
the repository."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

PROBE = '''
import pytest

def test_runs():
    pass

def test_cannot_run_here():
    pytest.skip("needs something this machine lacks")
'''


def run_probe(tmp_path, ci, allowed=None, workers=0):
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"), POSTERN_ALLOWED_SKIPS=str(tmp_path / "allowed.txt"))
    env.pop("CI", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_XDIST_WORKER_COUNT", None)
    if ci:
        env["CI"] = "true"
    if allowed is not None:
        (tmp_path / "allowed.txt").write_text(allowed)
    cmd = [sys.executable, "-m", "pytest", "-p", "skiprule", "-p", "no:cacheprovider", "-q", "-rs",
           "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_probe.py")]
    if workers:
        cmd += ["-n", str(workers)]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("workers", [0, 2], ids=["serial", "xdist"])
def test_a_skip_fails_ci_unless_allowed(tmp_path, workers):
    r = run_probe(tmp_path, ci=False, workers=workers)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SKIPPED [1]" in r.stdout and "needs something this machine lacks" in r.stdout, "-rs lists it"
    r = run_probe(tmp_path, ci=True, workers=workers)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "NOT ALLOWED: test_probe.py::test_cannot_run_here: needs something this machine lacks" in r.stdout
    r = run_probe(tmp_path, ci=True, allowed="# why, always\ntest_probe.py::test_cannot_run_here  # no such device\n",
                  workers=workers)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test_probe.py::test_cannot_run_here  # no such device" in r.stdout, "CI prints the allow-list"
    r = run_probe(tmp_path, ci=True, allowed="test_probe.py::test_cannot_run_here\n", workers=workers)
    assert r.returncode != 0 and "needs its reason" in r.stdout + r.stderr, "an entry without a reason"


def test_the_allow_list_is_empty():
    lines = [l for l in (ROOT / "tests" / "allowed-skips.txt").read_text().splitlines()
             if l.strip() and not l.lstrip().startswith("#")]
    assert lines == [], "every test runs here: make a skipped one run rather than allow it"


def test_nothing_from_outside_the_repository_and_no_check_that_cannot_fail():
    # Spelled in pieces, so this file does not find itself.
    outside = ["../" + "shared", "/work/" + "shared"]
    always = ["or " + "True", "assert " + "True"]
    found = []
    for top in ("tests", "scripts", "bench", ".ci"):
        for path in sorted((ROOT / top).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".png", ".pyc", ".eml"):
                continue
            text = path.read_text(errors="replace")
            for needle in outside + (always if path.suffix == ".py" else []):
                if needle in text:
                    found.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not found, found
