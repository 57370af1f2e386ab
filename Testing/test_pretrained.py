"""The models shipped inside the package (`uadcore.pretrained`): listed by `uad
models`, named ``pretrained:NAME`` wherever a run is taken, loaded without running
code, scoring a real IXI scan (and a synthetic one where the real data are not
here), never written into; and `export`, which makes one from a finished run."""

import json
import os

import numpy as np
import pytest

from uadcore import pretrained

REALDATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "realdata")
SHIPPED = ("normative", "anomseg3d")


def test_the_package_ships_its_models_with_their_cards(capsys):
    from uadcore.cli import main
    from uadcore.io.checkpoint import load_checkpoint

    assert set(SHIPPED) <= set(pretrained.available())
    for name, folder in pretrained.available().items():
        card = open(os.path.join(folder, pretrained.CARD), encoding="utf-8").read()
        for needed in ("IXI", "CC BY-SA 3.0", "What it is not for", "voxel AP"):
            assert needed in card, (name, needed)
        state = load_checkpoint(os.path.join(folder, pretrained.CHECKPOINT))  # weights_only: no code runs
        assert state["done"] and state["train_entries"] == [] and "optimizer" not in state
        assert all(os.sep not in e["path"] for e in state["validation"]["entries"])  # no paths of anyone's disk
        assert os.path.getsize(os.path.join(folder, pretrained.CHECKPOINT)) < 8e6
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {row["run"] for row in listed["pretrained"]} == {pretrained.PREFIX + n for n in pretrained.available()}
    assert {"normative", "anomseg3d", "ae3d"} <= {row["model"] for row in listed["models"]}


def test_an_unknown_pretrained_model_is_one_line_and_exit_2(cohort, capsys):
    from uadcore.cli import main
    from uadcore.io import read_manifest

    assert main(["score", "pretrained:nope", read_manifest(cohort)[0].path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pretrained:nope: no such pretrained model" in err and "pretrained:normative" in err


def test_a_pretrained_model_maps_a_scan_without_training_and_nothing_is_written_into_the_package(cohort, tmp_path, capsys):
    from uadcore.cli import main
    from uadcore.io import read_manifest, read_scan

    before = {name: sorted(os.listdir(folder)) for name, folder in pretrained.available().items()}
    entries = read_manifest(cohort)
    scan = next(e for e in entries if e.label == "unhealthy")
    assert main(["score", "pretrained:normative", scan.path, "--out", str(tmp_path / "map.nii.gz"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["calibrated"] is True and payload["healthy_reference_scans"] >= 10 and np.isfinite(payload["score"])
    assert read_scan(str(tmp_path / "map.nii.gz")).array.shape == read_scan(scan.path).array.shape
    # evaluate's default ROC plot goes beside a run's files: never into the package
    assert main(["evaluate", "pretrained:normative", "--data", cohort, "--map", "all", "--json"]) == 0
    assert "roc_plot" not in json.loads(capsys.readouterr().out)
    assert {name: sorted(os.listdir(folder)) for name, folder in pretrained.available().items()} == before


def test_export_keeps_what_scoring_needs_and_its_scores(tmp_path, small_cohort):
    """A finished run exported as a shipped model scores as the run does (its
    calibration in float16, and its weights where asked: within 1e-3 of a score)."""
    from uadcore.io import write_manifest
    from uadcore.io.checkpoint import load_run
    from uadcore.score.scorer import Scorer
    from uadcore.train import TrainConfig, train

    healthy = [e for e in small_cohort if e.label == "healthy"]
    config = TrainConfig.from_dict({"data": write_manifest(healthy, str(tmp_path / "train.csv")), "model": "normative",
                                    "epochs": 1, "val_fraction": 0.6, "workers": 1, "outlier_removal": False})
    train(config, str(tmp_path / "run"))
    for half_weights in (False, True):
        out = tmp_path / f"shipped-{half_weights}"
        pretrained.export(str(tmp_path / "run"), str(out), half_weights=half_weights)
        state = load_run(str(out))
        assert all(t.dtype.is_floating_point is False or (t.dtype.itemsize == 2) == half_weights for t in state["model"].values())
        assert all(t.dtype.itemsize == 2 for c in state["calibration"].values() for t in c.values())
        # top1: the share statistic counts voxels over a threshold, where one voxel can flip
        full, shipped = Scorer(str(tmp_path / "run"), device="cpu", statistic="top1"), Scorer(str(out), device="cpu", statistic="top1")
        scan = [e for e in small_cohort if e.label == "unhealthy"][0].path
        a, b = full.score(scan, "abs-z"), shipped.score(scan, "abs-z")
        assert b.calibrated and b.score == pytest.approx(a.score, rel=1e-3)
        assert shipped.percentile(b.score, "abs-z") == pytest.approx(full.percentile(a.score, "abs-z"), abs=100 / 5)


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_model_scores_a_real_ixi_scan(name):
    """A real, raw IXI head (skull, neck, its own orientation) through deepbet, N4
    and registration, mapped by the shipped model: a calibrated map on the scan's
    own grid, and a score among the healthy ones it was calibrated on."""
    from uadcore.score.scorer import Scorer

    folder = os.path.join(REALDATA, "ixi")
    if not os.path.isdir(folder):
        pytest.skip("../shared/realdata is not here")
    scan = os.path.join(folder, sorted(os.listdir(folder))[0])
    scorer = Scorer(pretrained.PREFIX + name, device="cpu")
    result = scorer.score(scan, scorer.kinds[0])
    assert result.calibrated and np.isfinite(result.score)
    assert result.scan_map().shape == result.prepared.scan_grid.shape
    assert result.scan_map().max() > 0
    assert 0 <= scorer.percentile(result.score, scorer.kinds[0]) <= 100


def test_the_shipped_segmenter_lands_on_a_real_tumour():
    """A BraTS 2018 native-T1 glioma (a real lesion, with its manual mask): the
    shipped segmenter's map, on the scan's own grid, is highest inside the tumour,
    where the Anomaly map panel moves every view."""
    from uadcore.io import read_mask, read_scan
    from uadcore.score.scorer import Scorer

    case = os.path.join(REALDATA, "lesions", "brats18-cbica-aab")
    if not os.path.isdir(case):
        pytest.skip("../shared/realdata is not here")
    scan = read_scan(os.path.join(case, "t1.nii.gz"))
    scan_map = Scorer("pretrained:anomseg3d", device="cpu").score(scan, "probability").scan_map()
    tumour = read_mask(os.path.join(case, "mask.nii.gz"), scan)
    assert tumour[np.unravel_index(int(np.argmax(scan_map)), scan_map.shape)]
