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


# a launcher like PythonSlicer (a CTK launcher): starts the real interpreter as its
# child, forwards no signal, and ends at once when it is itself terminated
LAUNCHER = '''
import subprocess, sys
child = subprocess.Popen([sys.executable, "-m", "uadcore", *sys.argv[1:]])
with open(sys.argv[-1] + ".child-pid", "w") as handle:  # where the test can find the real job
    handle.write(str(child.pid))
sys.exit(child.wait())
'''


def _tree_alive(pids):
    return [pid for pid in pids if alive(pid)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cancel_through_a_launcher_stops_the_real_job_with_a_checkpoint(tmp_path, cohort):
    import json as json_module

    from uadcore.io.checkpoint import load_checkpoint

    (tmp_path / "launcher.py").write_text(LAUNCHER.replace("sys.argv[-1]", "sys.argv[sys.argv.index('--out') + 1]"))
    settings = tmp_path / "settings.json"
    settings.write_text(json_module.dumps({"model_params": {"channels": [2, 4, 8, 16], "latent": 16}, "epochs": 500,
                                           "batch_size": 2, "reinit_at": [], "val_fraction": 0.0, "workers": 1,
                                           "checkpoint_every": 1}))
    run = tmp_path / "run"
    args = ["train", "--data", cohort, "--config", str(settings), "--out", str(run), "--events"]
    job = Job(args, module="launcher", env={"PYTHONPATH": str(tmp_path)}, stop_file=str(run / "STOP"))
    deadline, epochs = time.monotonic() + 300, []
    while len(epochs) < 1 and time.monotonic() < deadline:
        epochs += [e for e in job.poll() if e.get("event") == "epoch"]
        time.sleep(0.05)
    child = int((tmp_path / "run.child-pid").read_text())
    assert epochs and alive(child)
    job.cancel(grace_seconds=60)
    deadline = time.monotonic() + 120
    while job.running and time.monotonic() < deadline:
        time.sleep(0.01)
    # running is decided from the job's pipes, not from the launcher's exit (which
    # came at once): when it says "not running", the real interpreter is gone too
    assert not job.running and not _tree_alive([job.process.pid, child])
    state = load_checkpoint(str(run / "checkpoint.pt"))
    assert not state["done"] and state["epoch"] >= 1  # resumable
    assert not (run / "STOP").exists()  # the engine consumed it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_stop_at_exit_waits_until_nothing_of_the_tree_is_left(tmp_path):
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    job = Job([], module="stubborn", env={"PYTHONPATH": str(tmp_path)})
    deadline, events = time.monotonic() + 60, []
    while not events and time.monotonic() < deadline:
        events = job.poll()
        time.sleep(0.05)
    job.stop(grace_seconds=0.5)  # returns only when the tree is gone
    assert not job.running and not _tree_alive([job.process.pid, events[0]["child"]])


def test_a_stray_byte_in_the_output_does_not_end_the_reader(tmp_path):
    (tmp_path / "bytes.py").write_text(
        "import sys\n"
        "sys.stdout.buffer.write(b'\\xff\\xfe not UTF-8\\n'); sys.stdout.flush()\n"
        "sys.stderr.buffer.write(b'caf\\xe9 in latin-1\\n'); sys.stderr.flush()\n"
        "print('{\"event\": \"done\"}', flush=True)\n")
    job = Job([], module="bytes", env={"PYTHONPATH": str(tmp_path)})
    assert job.wait(60) == 0
    assert job.poll() == [{"event": "done"}]
    assert any("in latin-1" in line for line in job.stderr_tail)
