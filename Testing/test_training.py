"""The training engine: outlier removal, audit trail, checkpoints, events, stop and
resume (also after SIGKILL), safe loading, and DDP with gloo on the CPU."""

import csv
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from uadcore.errors import UADError
from uadcore.train import TrainConfig, train
from uadcore.io.checkpoint import load_checkpoint
from uadcore.score.sample import mean_per_scan
from uadcore.train.outliers import find_outliers

TINY = {"channels": [2, 4, 8, 16], "latent": 16}


def tiny_config(tmp_path, cohort, **overrides):
    values = {"data": cohort, "model_params": TINY, "epochs": 6, "batch_size": 2, "outlier_every": 2,
              "reinit_at": [3], "removal_start": "paper", "gamma": 1.02, "checkpoint_every": 1, "val_fraction": 0.0, "workers": 1}
    values.update(overrides)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in values.items() if k != "data"}))
    return TrainConfig.from_dict(values), str(path)


def uad_train(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "uadcore", "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_outliers_are_the_losses_above_gamma_times_the_mean():
    losses = torch.tensor([1.0, 1.0, 1.0, 3.0, 0.5], dtype=torch.float64)
    kept = torch.tensor([True, True, True, True, False])
    remove, threshold, mean = find_outliers(losses, kept, gamma=1.4)
    assert mean == pytest.approx(1.5) and threshold == pytest.approx(2.1)
    assert remove.tolist() == [False, False, False, True, False]


def test_scan_loss_is_the_mean_over_its_items():
    losses = mean_per_scan(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 1]), 3)
    assert losses[:2].tolist() == [2.0, 5.0] and torch.isnan(losses[2])


def test_a_short_run_removes_audits_and_checkpoints(tmp_path, cohort):
    config, _ = tiny_config(tmp_path, cohort)
    summary = train(config, str(tmp_path / "run"))
    run = tmp_path / "run"
    assert sorted(os.listdir(run)) == ["checkpoint.pt", "config.json", "history.csv", "kept.csv", "outliers.csv"]
    audit = read_rows(run / "outliers.csv")
    assert summary["removed"] == len(audit) > 0
    for row in audit:
        assert int(row["epoch"]) % 2 == 0
        assert float(row["loss"]) > float(row["threshold"])
        assert float(row["loss_over_mean"]) > 1.02
        assert row["label"] in ("healthy", "unhealthy")
    assert len(read_rows(run / "kept.csv")) == 6 - len(audit)
    history = read_rows(run / "history.csv")
    assert [int(r["epoch"]) for r in history] == list(range(1, 7))
    state = load_checkpoint(str(run / "checkpoint.pt"))
    assert state["done"] and state["epoch"] == 6 and int(state["kept"].sum()) == 6 - len(audit)
    assert state["preset"]["name"] == "brain3d-behrendt" and state["config"]["gamma"] == 1.02


def test_without_outlier_removal_nothing_is_removed(tmp_path, cohort):
    config, _ = tiny_config(tmp_path, cohort, outlier_removal=False, epochs=2)
    assert train(config, str(tmp_path / "run"))["removed"] == 0


def test_resume_after_sigkill_reaches_the_same_outliers(tmp_path, cohort):
    _, config_file = tiny_config(tmp_path, cohort)
    common = ["--data", cohort, "--config", config_file, "--events", "--seed", "5"]
    whole = uad_train(*common, "--out", str(tmp_path / "whole"))
    assert whole.wait() == 0, whole.stderr.read()

    killed = uad_train(*common, "--out", str(tmp_path / "killed"))
    for line in killed.stdout:
        event = json.loads(line)
        if event["event"] == "checkpoint" and event["epoch"] >= 3:
            killed.send_signal(signal.SIGKILL)
            break
    killed.wait()
    assert load_checkpoint(str(tmp_path / "killed" / "checkpoint.pt"))["epoch"] < 6
    resumed = uad_train("--resume", str(tmp_path / "killed"), "--events")
    assert resumed.wait() == 0, resumed.stderr.read()

    assert read_rows(tmp_path / "killed" / "outliers.csv") == read_rows(tmp_path / "whole" / "outliers.csv")
    assert read_rows(tmp_path / "killed" / "kept.csv") == read_rows(tmp_path / "whole" / "kept.csv")


def test_sigterm_stops_cleanly_with_a_resumable_checkpoint(tmp_path, cohort):
    _, config_file = tiny_config(tmp_path, cohort)
    process = uad_train("--data", cohort, "--config", config_file, "--events", "--out", str(tmp_path / "run"))
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "epoch" and events[-1]["epoch"] == 2:
            process.send_signal(signal.SIGTERM)
    assert process.wait() == 0
    assert events[0]["event"] == "start" and events[-1]["event"] == "stopped"
    stopped_at = events[-1]["epoch"]
    assert load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))["epoch"] == stopped_at >= 2
    resumed = uad_train("--resume", str(tmp_path / "run"), "--events")
    lines = [json.loads(line) for line in resumed.stdout]
    assert resumed.wait() == 0
    assert lines[0]["first_epoch"] == stopped_at + 1 and lines[-1]["event"] == "done"


def test_a_stop_file_stops_training(tmp_path, cohort):
    from uadcore.train import STOP_FILE, Events

    config, _ = tiny_config(tmp_path, cohort)
    run = tmp_path / "run"

    class StopAfterFirstEpoch(Events):
        def emit(self, event, **fields):
            if event == "epoch":
                (run / STOP_FILE).write_text("")

    summary = train(config, str(run), events=StopAfterFirstEpoch())
    assert summary["stopped"] and summary["epoch"] == 1
    assert not (run / STOP_FILE).exists()


def test_a_resume_refuses_training_scans_that_changed(tmp_path, cohort):
    from uadcore.io import read_manifest
    from uadcore.train import STOP_FILE, Events

    config, _ = tiny_config(tmp_path, cohort, epochs=2)
    run = tmp_path / "run"

    class StopAfterFirstEpoch(Events):
        def emit(self, event, **fields):
            if event == "epoch":
                (run / STOP_FILE).write_text("")

    assert train(config, str(run), events=StopAfterFirstEpoch())["stopped"]
    scan = read_manifest(cohort)[0].path
    before = os.stat(scan)
    os.utime(scan, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # rewritten since
    with pytest.raises(UADError, match="the training scans changed since the run"):
        train(None, str(run), resume=True)
    os.utime(scan, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert train(None, str(run), resume=True)["epochs"] == 2


def test_a_crafted_checkpoint_cannot_run_code(tmp_path):
    marker = tmp_path / "owned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "uad-checkpoint", "version": 1, "model": Payload()}, str(path))
    with pytest.raises(UADError, match="refused to load"):
        load_checkpoint(str(path))
    assert not marker.exists()
    torch.load(str(path), weights_only=False)  # the file really runs code when unpickled freely
    assert marker.exists()


def test_a_run_folder_is_never_overwritten_or_put_in_the_input(tmp_path, cohort):
    config, _ = tiny_config(tmp_path, cohort, epochs=1)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "mine.txt").write_text("keep")
    with pytest.raises(UADError, match="not empty"):
        train(config, str(tmp_path / "used"))
    with pytest.raises(UADError, match="inside the input folder"):
        train(config, os.path.join(os.path.dirname(cohort), "healthy", "run"))



def test_a_symbolic_link_does_not_smuggle_a_run_into_the_input(tmp_path, cohort):
    from uadcore.io.outputs import check_output

    config, _ = tiny_config(tmp_path, cohort, epochs=1)
    data = os.path.dirname(cohort)
    (tmp_path / "datalink").symlink_to(data)  # the data reached through a link
    (tmp_path / "healthylink").symlink_to(os.path.join(data, "healthy"))  # a link into the data
    linked = TrainConfig.from_dict({**config.to_dict(), "data": str(tmp_path / "datalink")})
    with pytest.raises(UADError, match="inside the input folder"):
        train(linked, os.path.join(data, "run"))
    with pytest.raises(UADError, match="inside the input folder"):
        train(config, str(tmp_path / "healthylink" / "run"))
    with pytest.raises(UADError, match="a folder of input scans"):
        check_output(str(tmp_path / "healthylink" / "map.nii.gz"), input_folders=[data])
    assert sorted(os.listdir(os.path.join(data, "healthy"))) == sorted(os.listdir(tmp_path / "healthylink"))
    assert not os.path.exists(os.path.join(data, "run"))


@pytest.mark.slow
def test_ddp_with_two_gloo_processes_removes_the_same_scans(tmp_path, cohort):
    _, config_file = tiny_config(tmp_path, cohort)
    common = ["--data", cohort, "--config", config_file, "--device", "cpu"]
    single = subprocess.run([sys.executable, "-m", "uadcore", "train", *common, "--out", str(tmp_path / "one")], capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "uadcore", "train", *common, "--out", str(tmp_path / "two"), "--events"],
        capture_output=True, text=True, env=env,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    events = [json.loads(line) for line in ddp.stdout.splitlines() if line.startswith("{")]
    assert events[0]["ranks"] == 2 and sum(e["event"] == "done" for e in events) == 1  # only rank 0 speaks
    assert ddp.stderr.count("no validation scans held out") == 1  # and warns
    # The two ranks' batches together are the single process's batches (padding
    # excluded from the loss) and there is no batch normalisation, so the losses agree
    # up to the rounding of summing gradients in another order. Only a scan within
    # that rounding of the threshold could be decided differently.
    one_history, two_history = read_rows(tmp_path / "one" / "history.csv"), read_rows(tmp_path / "two" / "history.csv")
    for a, b in zip(one_history, two_history):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4)
    one = [(r["path"], r["epoch"]) for r in read_rows(tmp_path / "one" / "outliers.csv")]
    two = [(r["path"], r["epoch"]) for r in read_rows(tmp_path / "two" / "outliers.csv")]
    assert one == two and len(one) > 0


def test_the_event_stream_is_json_lines_of_every_kind(tmp_path, cohort):
    import io

    from uadcore.train import Events

    config, _ = tiny_config(tmp_path, cohort)
    stream = io.StringIO()
    train(config, str(tmp_path / "run"), events=Events(json_lines=True, stream=stream))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert {"epoch", "removed", "reinit", "checkpoint"} <= set(kinds)
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, 7)) and all(e["epochs"] == 6 for e in epochs)
    removed = [e for e in events if e["event"] == "removed"]
    assert all(s["loss"] > e["threshold"] for e in removed for s in e["samples"])
    assert sum(len(e["samples"]) for e in removed) == events[-1]["removed"]


def test_plateau_and_early_stopping_follow_the_validation_loss():
    from uadcore.train.schedules import follow_plateau as _follow_plateau

    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1e-3)
    plateau = {"best": float("inf"), "stale": 0, "best_run": float("inf"), "stale_run": 0}
    rates = [_follow_plateau(optimizer, plateau, loss, patience=2) for loss in (5.0, 4.0, 4.5, 4.2, 4.1, 3.0)]
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4])
    assert plateau["stale_run"] == 0 and plateau["best_run"] == 3.0


def test_early_stopping_ends_a_vae_run(tmp_path, cohort):
    config, _ = tiny_config(tmp_path, cohort, model="vae3d", epochs=30, val_fraction=0.34, outlier_removal=False,
                            reinit_at=[], plateau_patience=1, early_stop_patience=1, lr=1e-12)
    summary = train(config, str(tmp_path / "run"))
    # with a vanishing learning rate the validation loss never improves after the first epoch
    assert summary["epochs"] == 2
    history = read_rows(tmp_path / "run" / "history.csv")
    assert list(history[0]) == ["epoch", "loss", "kept", "removed", "seconds", "val_loss", "lr"]
    with pytest.raises(UADError, match="complete"):
        train(None, str(tmp_path / "run"), resume=True)


def test_ddp_ranks_split_the_preparation_through_the_cache(tmp_path, monkeypatch, cohort):
    # rank 1 of 2 prepares every second scan from the second into the disk cache,
    # then meets the others (a one-process gloo group stands in for them here)
    import torch.distributed as dist
    from test_cache import entries_in

    from uadcore.io import ScanEntry, read_manifest
    from uadcore.preprocess import make_preset
    from uadcore.preprocess.dataset import _content_key, forget_prepared
    from uadcore.train.distributed import Ranks
    from uadcore.train.engine import _prepare_share

    monkeypatch.setenv("UAD_CACHE_DIR", str(tmp_path / "cache"))
    entries, preset = read_manifest(cohort), make_preset("brain3d-behrendt")
    forget_prepared()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        _prepare_share(entries, preset, 1, Ranks(rank=1, world=2, grouped=True), torch.device("cpu"))
    finally:
        dist.destroy_process_group()
        forget_prepared()
    assert set(entries_in(tmp_path / "cache")) == {_content_key(ScanEntry(e.path), preset) for e in entries[1::2]}
