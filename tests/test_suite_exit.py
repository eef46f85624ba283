"""The suite's exit watchdog (tests/conftest.py): a thread a test leaves running no longer holds the
process open after pytest's summary; the log names it and shows its stack, and pytest's status stands."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

LEAKY = '''
import threading, time

def test_leaves_a_thread_behind():
    threading.Thread(target=time.sleep, args=(3600,), name="left-behind", daemon=False).start()

def test_{outcome}():
    assert {verdict}
'''


@pytest.mark.parametrize("outcome, verdict, status", [("passes", True, 0), ("fails", False, 1)])
def test_a_thread_left_behind_does_not_hold_the_exit(tmp_path, outcome, verdict, status):
    (tmp_path / "test_leaky.py").write_text(LEAKY.format(outcome=outcome, verdict=verdict))
    env = dict(os.environ, FCLAB_TEST_EXIT_GRACE_S="2", PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    began = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_leaky.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - began
    assert out.returncode == status, out.stdout + out.stderr
    assert took < 60, took
    assert "still running at the end of the session: threads ['left-behind']" in out.stderr
    assert "has not exited 2.0 s after the session ended" in out.stderr
    assert "Thread 0x" in out.stderr and "threading.py" in out.stderr  # faulthandler's dump of the stacks
