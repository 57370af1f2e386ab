"""Runs that fail, stop or are killed lose nothing: a start that fails before its
first checkpoint leaves nothing, one killed while preparing is restarted by
--resume, a stop at any point (Ctrl-C, SIGTERM, also while calibrating) keeps what
was trained, a second process never touches a run another one trains, a write that
fails (a full disk) keeps the previous checkpoint, and the temporary files a killed
process left are cleaned up."""

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time

import pytest

from uadcore.cli import main
from uadcore.io import read_manifest, write_manifest
from uadcore.io.atomic import remove_stale_temporaries
from uadcore.io.checkpoint import load_checkpoint

TINY = {"channels": [2, 4, 8, 16], "latent": 16}


def uad(*args, env=None, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "uadcore", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})}, **kwargs)


def config_file(tmp_path, **values):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"model_params": TINY, "epochs": 2, "batch_size": 2, "checkpoint_every": 1, "reinit_at": [],
                                "val_fraction": 0.0, "workers": 1, **values}))
    return str(path)


def test_a_start_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path, cohort, capsys):
    settings = config_file(tmp_path, model_params={"channels": [2, 4], "latent": "many"})
    assert main(["train", "--data", cohort, "--config", settings, "--out", str(tmp_path / "run")]) == 2
    assert "model ae3d: bad options" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    # a folder the user made stays, empty
    (tmp_path / "mine").mkdir()
    assert main(["train", "--data", cohort, "--config", settings, "--out", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine").is_dir() and os.listdir(tmp_path / "mine") == []


def test_a_second_start_into_a_run_being_prepared_leaves_that_run_alone(tmp_path, cohort, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")  # another start, still preparing its scans
    assert main(["train", "--data", cohort, "--config", config_file(tmp_path), "--out", str(run)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (run / "config.json").read_text() == "{}"


def test_a_run_another_process_trains_is_never_touched(tmp_path, cohort, capsys):
    from uadcore.io.run_files import RunFiles
    from uadcore.train.run_folder import RunOwner

    # another start has just made the folder and owns it, its config.json not yet written
    run = tmp_path / "run"
    other = RunOwner(RunFiles(str(run)))
    other.make_folder()
    other.acquire()
    assert main(["train", "--data", cohort, "--config", config_file(tmp_path), "--out", str(run)]) == 2
    assert f"another uad process (pid {os.getpid()} on" in capsys.readouterr().err
    assert os.listdir(run) == [".uad-lock"]  # its folder and lock stay, nothing written
    (run / "config.json").write_text("{}")  # now it wrote its configuration
    other.wrote_config = True
    assert main(["train", "--resume", str(run)]) == 2
    assert "is training this run" in capsys.readouterr().err
    assert (run / "config.json").read_text() == "{}"
    other.release(failed=True)
    assert not run.exists()  # what it made goes with its failure; the lock let go


def test_a_run_being_trained_refuses_a_second_start_and_a_resume(tmp_path, cohort, capsys):
    run = tmp_path / "run"
    trainer = uad("train", "--data", cohort, "--config", config_file(tmp_path, epochs=400), "--out", str(run), "--events")
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists() and trainer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    config = (run / "config.json").read_text()
    try:
        assert main(["train", "--data", cohort, "--config", config_file(tmp_path), "--out", str(run)]) == 2
        assert f"another uad process (pid {trainer.pid} on" in capsys.readouterr().err
        assert main(["train", "--resume", str(run)]) == 2
        assert f"another uad process (pid {trainer.pid} on" in capsys.readouterr().err
        assert (run / "config.json").read_text() == config
    finally:
        (run / "STOP").touch()
        out, err = trainer.communicate(timeout=120)
    assert trainer.returncode == 0, err
    stopped = json.loads(out.splitlines()[-1])
    assert stopped["event"] == "stopped" and stopped["signal"] == "STOP" and stopped["epoch"] >= 1
    assert load_checkpoint(str(run / "checkpoint.pt"))["epoch"] == stopped["epoch"]
    assert sorted(os.listdir(run)) == ["checkpoint.pt", "config.json", "history.csv", "kept.csv", "outliers.csv"]


class SignalAt:
    """An event stream that sends this process ``signal_number`` when the event
    ``name`` (with ``fields``) is written: a stop at an exact point of a run."""

    def __init__(self, name, signal_number, **fields):
        self.name, self.signal_number, self.fields, self.records = name, signal_number, fields, []

    def write(self, line):
        record = json.loads(line)
        self.records.append(record)
        if self.fields is not None and record["event"] == self.name and all(record.get(k) == v for k, v in self.fields.items()):
            self.fields = None  # once
            os.kill(os.getpid(), self.signal_number)

    def flush(self):
        pass


def _train_in_process(tmp_path, data, run, stream, **settings):
    from uadcore.train import Events, TrainConfig, train

    values = json.loads(open(config_file(tmp_path, **settings)).read())
    config = TrainConfig.from_dict({**values, "data": data}, source="test")
    return train(config, str(run), events=Events(json_lines=True, stream=stream))


def test_ctrl_c_keeps_the_epochs_trained_and_the_run_resumes_from_them(tmp_path, cohort):
    run = tmp_path / "run"
    from uadcore.train.engine import Interrupted

    stream = SignalAt("epoch", signal.SIGINT, epoch=3)
    with pytest.raises(Interrupted) as interrupted:  # the caller is interrupted too, once the run is kept
        _train_in_process(tmp_path, cohort, run, stream, epochs=8, checkpoint_every=5)
    summary = interrupted.value.summary
    assert summary["stopped"] and summary["signal"] == "SIGINT" and summary["epoch"] == 3
    assert stream.records[-1]["event"] == "stopped" and stream.records[-1]["resume"] == f"uad train --resume {run}"
    kept = load_checkpoint(str(run / "checkpoint.pt"))
    assert kept["epoch"] == 3 and not kept["done"] and len(kept["history"]) == 3
    resumed = uad("train", "--resume", str(run), "--events")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["event"] == "start" and events[0]["first_epoch"] == 4 and events[-1]["event"] == "done"


def test_a_stop_as_the_calibration_begins_keeps_the_training_and_resume_only_calibrates(tmp_path, small_cohort):
    from uadcore.io import write_manifest

    run = tmp_path / "run"
    healthy = write_manifest([e for e in small_cohort if e.label == "healthy"], str(tmp_path / "healthy.csv"))
    # the last epoch's checkpoint, written as the calibration begins (the only one: every 5 epochs); the signal
    # stops at once there. (Before: SIGTERM killed the run there, no checkpoint, and a resume began at epoch 1.)
    stream = SignalAt("checkpoint", signal.SIGTERM, epoch=2)
    summary = _train_in_process(tmp_path, healthy, run, stream, val_fraction=0.6, checkpoint_every=5)
    assert summary == {"run": str(run), "stopped": True, "epoch": 2, "signal": "SIGTERM"}
    assert stream.records[-1]["event"] == "stopped"
    kept = load_checkpoint(str(run / "checkpoint.pt"))
    assert kept["epoch"] == 2 and not kept["done"]
    resumed = uad("train", "--resume", str(run), "--events")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert not [e for e in events if e["event"] == "epoch"] and events[-1]["event"] == "done"
    assert load_checkpoint(str(run / "checkpoint.pt"))["done"]


def test_a_stop_before_anything_was_trained_leaves_nothing(tmp_path, cohort):
    run = tmp_path / "run"
    stream = SignalAt("start", signal.SIGTERM)
    summary = _train_in_process(tmp_path, cohort, run, stream)
    assert summary["stopped"] and summary["epoch"] == 0
    assert stream.records[-1] == {**stream.records[-1], "event": "stopped", "epoch": 0}
    assert "resume" not in stream.records[-1] and not run.exists()


def test_ctrl_c_of_the_command_exits_130_with_the_run_kept(tmp_path, cohort):
    run = tmp_path / "run"
    process = uad("train", "--data", cohort, "--config", config_file(tmp_path, epochs=400, checkpoint_every=100), "--out",
                  str(run), "--events")
    for line in process.stdout:
        if json.loads(line)["event"] == "epoch":
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    stopped = json.loads(out.splitlines()[-1])
    assert stopped["event"] == "stopped" and stopped["signal"] == "SIGINT" and stopped["epoch"] >= 1
    assert load_checkpoint(str(run / "checkpoint.pt"))["epoch"] == stopped["epoch"]


def test_a_run_killed_while_preparing_is_started_again_by_resume(tmp_path, cohort):
    # started with a relative --data from one folder, resumed from another that has a
    # different data set under the same name: the run trains on its own scans, or refuses
    entries = read_manifest(cohort)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    write_manifest(entries, str(tmp_path / "a" / "c.csv"))
    write_manifest(entries[:4], str(tmp_path / "b" / "c.csv"))
    run = tmp_path / "run"
    fresh_cache = {"UAD_CACHE_DIR": str(tmp_path / "cache")}  # so that preparing takes seconds
    process = uad("train", "--data", "c.csv", "--config", config_file(tmp_path), "--out", str(run), env=fresh_cache,
                  cwd=str(tmp_path / "a"))
    deadline = time.monotonic() + 120
    while not (run / "config.json").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (run / "config.json").exists() and not (run / "checkpoint.pt").exists()
    written = json.loads((run / "config.json").read_text())
    assert written["data"] == os.path.realpath(tmp_path / "a" / "c.csv") and written["data_fingerprint"]

    write_manifest(entries[:5], str(tmp_path / "a" / "c.csv"))  # its data changed meanwhile: refused
    refused = uad("train", "--resume", str(run), env=fresh_cache, cwd=str(tmp_path / "b"))
    _, err = refused.communicate(timeout=300)
    assert refused.returncode == 2 and "the training scans changed since the run" in err, err
    write_manifest(entries, str(tmp_path / "a" / "c.csv"))  # as it was

    resumed = uad("train", "--resume", str(run), env=fresh_cache, cwd=str(tmp_path / "b"))
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "no checkpoint yet (the run ended before its first one); starting it again from config.json" in err
    # a log says at the start what the run is: its own 6 scans, not the 4 of b/c.csv
    assert re.search(r"training ae3d \(\d+\.\d\d M parameters\) on 6 scans \(0 more held out for validation\), batch 2, "
                     r"epochs 1-2, on CPU", err), err
    assert load_checkpoint(str(run / "checkpoint.pt"))["done"]


def _file_size_limit(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_failed_final_save_keeps_the_previous_checkpoint_and_resumes(tmp_path, small_cohort):
    """The final checkpoint holds the calibration (two maps of the model grid, 2.6 MB)
    and cannot be written under a 1.2 MB file limit; the epoch checkpoints (tiny
    model, 0.9 MB) can. (A cache entry that cannot be written: test_brain_preparation.)"""
    from uadcore.io import write_manifest

    run = tmp_path / "run"
    settings = config_file(tmp_path, val_fraction=0.6)
    healthy = write_manifest([e for e in small_cohort if e.label == "healthy"], str(tmp_path / "healthy.csv"))
    limited = uad("train", "--data", healthy, "--config", settings, "--out", str(run), preexec_fn=_file_size_limit(1_200_000))
    _, err = limited.communicate(timeout=300)
    assert limited.returncode == 2, err
    error = [line for line in err.splitlines() if ": error:" in line]
    assert len(error) == 1 and f"{run / 'checkpoint.pt'}: could not be written" in error[0]
    assert f"uad train --resume {run}" in error[0]
    kept = load_checkpoint(str(run / "checkpoint.pt"))
    assert kept["epoch"] == 2 and not kept["done"]  # the training, kept before calibrating; the final one holds the calibration
    assert not [name for name in os.listdir(run) if name.startswith(".tmp-")]
    resumed = uad("train", "--resume", str(run))
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert load_checkpoint(str(run / "checkpoint.pt"))["done"]


def test_temporary_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name in (f".tmp-{dead.pid}-checkpoint.pt", f".tmp-{os.getpid()}-history.csv", "notes.tmp-1-x"):
        (tmp_path / name).write_text("x")
    (tmp_path / f".incoming-{dead.pid}-abc").mkdir()
    (tmp_path / f".incoming-{dead.pid}-abc" / "image.npy").write_text("x")
    assert remove_stale_temporaries(str(tmp_path)) == 2
    assert sorted(os.listdir(tmp_path)) == [f".tmp-{os.getpid()}-history.csv", "notes.tmp-1-x"]


def test_a_long_run_says_what_it_will_cost_after_its_first_epoch(capsys):
    import torch

    from uadcore.train import Events, TrainConfig
    from uadcore.train.schedules import estimate as _estimate

    _estimate(Events(), 100.0, 1, 500, torch.device("cpu"), TrainConfig())
    line = capsys.readouterr().err.strip()
    assert line.startswith("epoch 1 took 100 s: the 500 epochs will take about 13.9 hours here")
    assert "--size small --epochs 40" in line
    _estimate(Events(), 1.0, 1, 40, torch.device("cpu"), TrainConfig())  # minutes: nothing to say
    assert capsys.readouterr().err == ""


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(name))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads processes from Linux /proc")
def test_preparation_workers_end_with_a_killed_uad(tmp_path, cohort):
    process = uad("prepare", cohort, "--model", "normative", "--workers", "2", env={"UAD_CACHE_DIR": str(tmp_path / "cache")})
    deadline = time.monotonic() + 120
    workers = []
    while len(workers) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        workers = _children(process.pid)
    assert len(workers) == 2, "the workers never started"
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [pid for pid in workers if _alive(pid)]
    for pid in orphans:  # leave nothing running, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "workers outlived their uad process"


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads processes from Linux /proc")
def test_a_preparation_worker_killed_by_the_system_costs_no_scan(tmp_path, cohort):
    # as the out-of-memory killer would: SIGKILL of one worker while it prepares. Its
    # scan is tried again alone (a scan that kills that worker too is left out as bad)
    run = tmp_path / "run"
    process = uad("train", "--data", cohort, "--config", config_file(tmp_path, workers=2, epochs=1), "--out", str(run),
                  env={"UAD_CACHE_DIR": str(tmp_path / "cache")})
    deadline = time.monotonic() + 120
    workers = []
    while len(workers) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        workers = _children(process.pid)
    assert workers, "the workers never started"
    os.kill(workers[0], signal.SIGKILL)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "on 6 scans" in err and "left out" not in err
