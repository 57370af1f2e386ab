"""The job runner: events arrive without waiting, errors carry the log's tail,
and cancel ends even a process tree that ignores SIGTERM."""

import os
import sys
import time

import pytest

from SlicerUADLib.jobs import Job

STUBBORN = '''
import json, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(json.dumps({"event": "start", "child": child.pid}), flush=True)
time.sleep(600)
'''


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie is dead
        return handle.read().split()[2] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cancel_kills_a_process_tree_that_ignores_sigterm(tmp_path):
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    job = Job([], module="stubborn", env={"PYTHONPATH": str(tmp_path)})
    deadline = time.monotonic() + 60
    events = []
    while not events and time.monotonic() < deadline:
        events = job.poll()  # never blocks
        time.sleep(0.05)
    child = events[0]["child"]
    assert alive(child) and job.running
    job.cancel(grace_seconds=0.5)
    job.wait(30)
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not job.running and not alive(child)
    assert job.cancelled and job.error_message() is None  # a cancelled job is not an error


def test_a_failing_command_reports_its_exit_code_and_log(tmp_path):
    job = Job(["check", str(tmp_path / "nowhere")])
    assert job.wait(120) == 2
    message = job.error_message()
    assert "exit code 2" in message and "nowhere" in message


def test_json_output_arrives_as_one_event(tmp_path, cohort):
    job = Job(["check", cohort, "--json"])
    assert job.wait(120) == 0
    events = job.poll()
    assert len(events) == 1 and len(events[0]["scans"]) == 6
