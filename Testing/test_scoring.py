"""`uad score`, `uad evaluate` and `uad outliers` on a tiny trained run."""

import json
import os

import numpy as np
import pytest

from uadcore.cli import main
from uadcore.io import read_manifest, read_scan, write_manifest
from uadcore.train import TrainConfig, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, test manifest): trained on 5 healthy scans (one held out for
    validation), tested on 1 healthy and 3 unhealthy unseen scans."""
    from uadcore.synth import synthesize_cohort

    base = tmp_path_factory.mktemp("scoring")
    entries = read_manifest(synthesize_cohort(str(base / "cohort"), healthy=6, unhealthy=3, seed=2, workers=2, progress=False))
    healthy = [e for e in entries if e.label == "healthy"]
    train_manifest = write_manifest(healthy[:5], str(base / "train.csv"))
    test_manifest = write_manifest(healthy[5:] + [e for e in entries if e.label == "unhealthy"], str(base / "test.csv"))
    config = TrainConfig.from_dict({"data": train_manifest, "model_params": {"channels": [2, 4, 8, 16], "latent": 16},
                                    "epochs": 2, "batch_size": 2, "val_fraction": 0.2, "workers": 1})
    train(config, str(base / "run"))
    return str(base / "run"), test_manifest


def test_score_writes_the_map_in_the_scans_geometry(trained, tmp_path, capsys):
    run, test_manifest = trained
    scan_path = read_manifest(test_manifest)[1].path
    out = tmp_path / "map.nii.gz"
    assert main(["score", run, scan_path, "--map", "rec", "--out", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["score"] > 0 and 0.0 <= payload["percentile_vs_healthy"] <= 100.0
    thresholds = payload["thresholds_at_fpr"]
    assert set(thresholds) == {"0.01", "0.05", "0.1"} and thresholds["0.01"] >= thresholds["0.05"] >= thresholds["0.1"] > 0
    written, scan = read_scan(str(out)), read_scan(scan_path)
    assert written.grid.matches(scan.grid)
    assert written.array.max() > 0 and (written.array[scan.array == 0] == 0).mean() > 0.95


def test_score_of_many_scans_matches_one_at_a_time(trained, tmp_path, capsys):
    # a manifest and a scan file on one command line: prepared by two worker
    # processes while the model scores; each map and score as `uad score` of one scan
    import csv
    import shutil
    import subprocess
    import sys

    run, test_manifest = trained
    entries = read_manifest(test_manifest)
    broken = tmp_path / "inputs" / "broken.nii.gz"
    broken.parent.mkdir()
    broken.write_bytes(b"not a scan")
    out = tmp_path / "maps"
    done = subprocess.run([sys.executable, "-m", "uadcore", "score", run, test_manifest, str(broken), entries[0].path,
                           "--out", str(out), "--workers", "2", "--json"], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr  # a bad scan among them: reported, the others scored
    assert str(broken) in done.stderr and done.stderr.count("error:") == 1
    payload = json.loads(done.stdout)
    assert [s["scan"] for s in payload["scans"]] == [e.path for e in entries] + [entries[0].path]
    assert [p["path"] for p in payload["problems"]] == [str(broken)]
    with open(out / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows] == [e.path for e in entries] + [str(broken), entries[0].path]
    assert rows[-1]["map_file"] != rows[0]["map_file"] and rows[-2]["problem"] and not rows[-2]["score"]
    for entry, row in zip(entries, rows):
        assert main(["score", run, entry.path, "--out", str(tmp_path / "one.nii.gz"), "--force", "--json"]) == 0
        one = json.loads(capsys.readouterr().out)
        assert float(row["score"]) == pytest.approx(one["score"], rel=1e-5)
        many_map, one_map = read_scan(str(out / row["map_file"])), read_scan(str(tmp_path / "one.nii.gz"))
        assert many_map.grid.matches(one_map.grid)
        np.testing.assert_allclose(many_map.array, one_map.array, rtol=1e-5, atol=1e-6)
    # nothing replaced without --force, and nothing written beside the scans
    again = subprocess.run([sys.executable, "-m", "uadcore", "score", run, test_manifest, "--out", str(out)],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr
    inside = subprocess.run([sys.executable, "-m", "uadcore", "score", run, test_manifest, "--out",
                             os.path.join(os.path.dirname(entries[0].path), "maps")], capture_output=True, text=True)
    assert inside.returncode == 2 and "never writes there" in inside.stderr
    shutil.rmtree(out)


def test_score_refuses_an_unknown_map_kind(trained, capsys):
    run, test_manifest = trained
    assert main(["score", run, read_manifest(test_manifest)[0].path, "--map", "nonsense"]) == 2
    assert "map kind 'nonsense'" in capsys.readouterr().err


def test_evaluate_reports_sample_and_voxel_metrics(trained, tmp_path, capsys):
    run, test_manifest = trained
    assert main(["evaluate", run, "--data", test_manifest, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 4 and report["healthy"] == 1 and report["unhealthy"] == 3
    for key in ("sample_auroc", "sample_ap", "voxel_auroc", "voxel_ap", "best_dice"):
        assert 0.0 <= report[key] <= 1.0, key
    assert "dice" in report and len(report["scans"]) == 4
    # the lesion scans alone (the literature's pool): what an evaluation of those scans alone measures
    alone = report["lesion_scans_only"]
    lesion_scans = write_manifest([e for e in read_manifest(test_manifest) if e.mask], str(tmp_path / "lesions.csv"))
    assert main(["evaluate", run, "--data", lesion_scans, "--json"]) == 0
    only = json.loads(capsys.readouterr().out)
    assert alone["scans"] == only["unhealthy"] == 3 and "lesion_scans_only" not in only
    assert [alone[k] for k in ("voxel_auroc", "voxel_ap", "best_dice")] == pytest.approx([only[k] for k in ("voxel_auroc", "voxel_ap", "best_dice")])
    assert alone["voxel_ap"] >= report["voxel_ap"]  # the same positives, fewer negatives
    assert main(["evaluate", run, "--data", test_manifest]) == 0
    assert "over the 3 lesion scans alone: voxel AUROC" in capsys.readouterr().err


def test_evaluate_refuses_the_scans_it_trained_on(trained, capsys):
    run, _ = trained
    train_manifest = os.path.join(os.path.dirname(run), "train.csv")
    assert main(["evaluate", run, "--data", train_manifest]) == 2
    assert "used to train this run" in capsys.readouterr().err


def test_outliers_lists_and_exports_the_kept_scans(trained, tmp_path, capsys):
    run, _ = trained
    kept_manifest = tmp_path / "kept.csv"
    assert main(["outliers", run, "--json", "--export-kept", str(kept_manifest)]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["training_scans"] == 4 and payload["kept"] == 4 - len(payload["removed"]) and payload["validation_scans"] == 1
    # every scan not removed, the validation scan included: a curated round does not shrink the data
    assert [e.path for e in read_manifest(str(kept_manifest))] == [e["path"] for e in _kept(run)] + _validation(run)


def _validation(run):
    from uadcore.io.checkpoint import load_checkpoint

    return [e["path"] for e in load_checkpoint(os.path.join(run, "checkpoint.pt"))["validation"]["entries"]]


def _kept(run):
    from uadcore.io.checkpoint import load_checkpoint

    state = load_checkpoint(os.path.join(run, "checkpoint.pt"))
    return [e for e, k in zip(state["train_entries"], state["kept"].tolist()) if k]


def test_an_unfinished_run_cannot_score(tmp_path, capsys):
    assert main(["score", str(tmp_path), "scan.nii.gz"]) == 2
    assert "no checkpoint here" in capsys.readouterr().err


def test_healthy_thresholds_leave_the_requested_share_of_healthy_voxels_above(trained):
    import torch

    from uadcore.score.scorer import Scorer
    from uadcore.io.checkpoint import load_checkpoint
    from uadcore.preprocess.dataset import prepare_set
    from uadcore.io import ScanEntry
    from uadcore.score.maps import batched_maps

    run, _ = trained
    state = load_checkpoint(os.path.join(run, "checkpoint.pt"))
    scorer = Scorer(run)
    validation = prepare_set([ScanEntry(**e) for e in state["validation"]["entries"]], scorer.preset, workers=1, progress=False)
    maps = batched_maps(scorer._network(validation.items.shape[2:]), validation.items, torch.device("cpu"), "rec")
    inside = maps[validation.regions].numpy()
    for fpr, threshold in state["validation"]["maps"]["rec"]["raw"]["thresholds"].items():
        assert (inside > threshold).mean() == pytest.approx(float(fpr), abs=0.002)


def test_postprocessing_is_recorded_and_changes_the_voxel_metrics(trained, capsys):
    run, test_manifest = trained
    assert main(["evaluate", run, "--data", test_manifest, "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["evaluate", run, "--data", test_manifest, "--postprocess", "--json"]) == 0
    filtered = json.loads(capsys.readouterr().out)
    assert plain["postprocess"] is None and filtered["postprocess"]["median_filter"] == 5
    assert filtered["voxel_auroc"] != plain["voxel_auroc"]
    assert filtered["sample_auroc"] == plain["sample_auroc"]  # sample scores are not post-processed


def test_small_components_are_removed():
    import numpy as np

    from uadcore.evaluate.run import _without_small_components

    prediction = np.zeros((10, 10, 10), bool)
    prediction[0:2, 0:2, 0:2] = True  # 8 voxels: kept
    prediction[5, 5, 5:8] = True  # 3 voxels: removed
    kept = _without_small_components(prediction, 7)
    assert kept.sum() == 8 and kept[0, 0, 0] and not kept[5, 5, 6]


def test_scans_scored_a_few_at_a_time_score_as_all_at_once(trained, monkeypatch):
    from uadcore.io import read_manifest
    from uadcore.score import scorer as scorer_module
    from uadcore.preprocess.dataset import prepare_scans

    run, test_manifest = trained
    entries = read_manifest(test_manifest)
    prepared = [p for p, _ in prepare_scans(entries, scorer_module.Scorer(run).preset, workers=1, progress=False)]
    paths = [e.path for e in entries]
    together = scorer_module.Scorer(run).score_prepared(prepared, paths)
    monkeypatch.setattr(scorer_module, "SCANS_AT_ONCE", 2)
    apart = scorer_module.Scorer(run).score_prepared(prepared, paths)
    assert len(apart) == len(together) == len(entries) > 2
    for one, other in zip(apart, together):
        assert one.path == other.path and one.score == pytest.approx(other.score, rel=1e-6)
        np.testing.assert_allclose(one.model_map, other.model_map, atol=1e-6)


def test_scoring_batches_hold_a_budget_of_voxels():
    from uadcore.score.scorer import auto_batch_size

    assert auto_batch_size((64, 64), "cpu") == 64  # all the slices of a scan in one pass
    assert auto_batch_size((64, 77, 66), "cpu") == 1  # a whole volume: one at a time on a CPU
    assert auto_batch_size((64, 77, 66), "cuda") == 12
    assert auto_batch_size((512, 512, 512), "cuda") == 1


def _bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def test_no_command_writes_over_or_beside_its_inputs(trained, tmp_path, capsys):
    run, test_manifest = trained
    scan = read_manifest(test_manifest)[1].path
    before = _bytes(scan)
    # the map over its own scan, beside it, through a link to it: refused, the scan intact
    link = tmp_path / "link.nii.gz"
    os.symlink(scan, link)
    for out, message in ((scan, "is an input"), (os.path.join(os.path.dirname(scan), "map.nii.gz"), "folder of input scans"),
                         (str(link), "is an input")):
        assert main(["score", run, scan, "--out", out]) == 2
        assert message in capsys.readouterr().err
    assert _bytes(scan) == before
    # an existing file: never without --force, and with it only a map UAD wrote (not another scan, not a run's file)
    existing = tmp_path / "existing.nii.gz"
    existing.write_bytes(b"keep me")
    assert main(["score", run, scan, "--out", str(existing)]) == 2
    assert "exists" in capsys.readouterr().err and existing.read_bytes() == b"keep me"
    other_scan = read_manifest(test_manifest)[0].path
    for out, message in ((existing, "is not an anomaly map UAD wrote"), (other_scan, "is not an anomaly map UAD wrote")):
        copy = tmp_path / "copy.nii.gz"
        copy.write_bytes(_bytes(out))
        assert main(["score", run, scan, "--out", str(copy), "--force"]) == 2
        assert message in capsys.readouterr().err and _bytes(copy) == _bytes(out)
    mine = tmp_path / "mine.nii.gz"
    assert main(["score", run, scan, "--out", str(mine), "--json"]) == 0
    assert main(["score", run, scan, "--out", str(mine), "--force", "--json"]) == 0  # its own map: replaced
    capsys.readouterr()
    checkpoint = _bytes(os.path.join(run, "checkpoint.pt"))
    for name in ("checkpoint.pt", "kept.csv"):
        assert main(["outliers", run, "--export-kept", os.path.join(run, name), "--force"]) == 2
        assert "is a file of the run folder" in capsys.readouterr().err
    assert _bytes(os.path.join(run, "checkpoint.pt")) == checkpoint
    exported = tmp_path / "kept.csv"
    assert main(["outliers", run, "--export-kept", str(exported)]) == 0
    assert main(["outliers", run, "--export-kept", str(exported), "--force"]) == 0  # a manifest it wrote: replaced
    assert main(["outliers", run, "--export-kept", str(existing), "--force"]) == 2
    assert "is not a manifest UAD wrote" in capsys.readouterr().err and existing.read_bytes() == b"keep me"
    # the curated manifest over the training manifest, the ROC plot over an input scan
    manifest = os.path.join(os.path.dirname(run), "train.csv")
    manifest_before = _bytes(manifest)
    assert main(["outliers", run, "--export-kept", manifest]) == 2
    assert "is an input" in capsys.readouterr().err and _bytes(manifest) == manifest_before
    assert main(["evaluate", run, "--data", test_manifest, "--plot", scan]) == 2
    assert "is an input" in capsys.readouterr().err and _bytes(scan) == before


def test_evaluate_without_labels_or_masks_is_exit_2(trained, tmp_path, capsys):
    from uadcore.io import write_nifti
    from volumes import marker_volume

    run, _ = trained
    for name, orientation in (("a.nii.gz", "RAS"), ("b.nii.gz", "LPS")):
        array, grid, _ = marker_volume(orientation, shape=(31, 35, 17), spacing=(3.0, 3.0, 4.0))
        write_nifti(array, grid, str(tmp_path / "scans" / name))
    assert main(["evaluate", run, "--data", str(tmp_path / "scans")]) == 2
    assert "none of its 2 scan(s) has a label or a lesion mask; evaluation needs them" in capsys.readouterr().err


def test_one_scan_s_map_must_be_nifti_and_a_folder_of_maps_no_file(trained, tmp_path, capsys):
    run, test_manifest = trained
    scan = read_manifest(test_manifest)[0].path
    assert main(["score", run, scan, "--out", str(tmp_path / "map.png")]) == 2
    assert "name it .nii.gz or .nii" in capsys.readouterr().err and not (tmp_path / "map.png").exists()
    assert main(["score", run, test_manifest, "--out", str(tmp_path / "maps.nii.gz")]) == 2
    assert "names a folder" in capsys.readouterr().err and not (tmp_path / "maps.nii.gz").exists()


def test_a_map_that_cannot_be_written_is_exit_2_naming_it(trained, tmp_path):
    # a full disk, as a file size limit gives it: before, exit 1 with an internal error
    import resource
    import signal
    import subprocess
    import sys

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    run, test_manifest = trained
    scan = read_manifest(test_manifest)[1].path
    out = tmp_path / "map.nii.gz"
    done = subprocess.run([sys.executable, "-m", "uadcore", "score", run, scan, "--out", str(out)], capture_output=True,
                          text=True, preexec_fn=small_files, timeout=300)
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert done.returncode == 2 and len(errors) == 1 and f"{out}: could not be written" in errors[0], done.stderr
    assert os.listdir(tmp_path) == []  # nothing half-written left
