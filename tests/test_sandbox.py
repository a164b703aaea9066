"""Hostile and broken programs in the code sandbox: each ends with a verdict, the host
is unharmed, nothing hangs."""

import os
import subprocess
import time

import pytest

from protege.sandbox import Limits, isolation_prefix, run_program

try:
    isolation_prefix()
    subprocess.run([*isolation_prefix(), "true"], check=True, timeout=30)
except (RuntimeError, subprocess.SubprocessError, OSError) as e:  # pragma: no cover
    pytest.skip(f"this machine cannot isolate programs: {e}", allow_module_level=True)

FAST = Limits(timeout_s=3, memory_mb=256, max_processes=16)
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"


def test_correct_and_wrong_programs():
    assert run_program("def add(a, b):\n    return a + b", TESTS, FAST).passed
    r = run_program("def add(a, b):\n    return a - b", TESTS, FAST)
    assert r.status == "failed" and "AssertionError" in r.stderr
    assert run_program("def add(a, b) return", TESTS, FAST).status == "failed"  # syntax


def test_infinite_loop_is_killed_at_the_limit():
    t0 = time.monotonic()
    r = run_program("while True:\n    pass", TESTS, FAST)
    assert r.status in ("timeout", "failed") and time.monotonic() - t0 < 10


def test_fork_bomb_is_contained_and_cleaned_up():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    t0 = time.monotonic()
    r = run_program(bomb, TESTS, FAST)
    assert not r.passed and time.monotonic() - t0 < 15
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-u", "65534", "-f", "solution.py"], capture_output=True)
    assert left.stdout.strip() == b""  # no stray processes survive


def test_memory_hog_fails_without_hurting_the_host():
    r = run_program("x = bytearray(2 << 30)", TESTS, FAST)
    assert r.status == "failed" and "MemoryError" in r.stderr


def test_writes_outside_its_directory_fail(tmp_path):
    target = tmp_path / "pwned.txt"
    os.chmod(tmp_path, 0o755)
    r = run_program(f"open({str(target)!r}, 'w').write('x')", "", FAST)
    assert r.status == "failed" and not target.exists()
    assert run_program("open('inside.txt', 'w').write('ok')", "", FAST).passed


def test_no_network():
    prog = ("import socket\ns = socket.socket()\ns.settimeout(2)\n"
            "s.connect(('127.0.0.1', 9))\n")  # fmt: skip
    r = run_program(prog, "", FAST)
    assert r.status == "failed" and ("unreachable" in r.stderr or "refused" in r.stderr)
    fetch = "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=2)"
    r = run_program(fetch, "", FAST)
    assert r.status == "failed"


def test_huge_output_is_cut():
    r = run_program("while True:\n    print('x' * 1000)", "", Limits(timeout_s=3, max_file_mb=1))
    assert not r.passed and len(r.stdout) <= Limits().max_output_chars
