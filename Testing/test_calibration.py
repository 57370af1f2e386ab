"""Maps calibrated on healthy scans and the sample scores read from them: the
statistics, leave-one-out, pseudo-lesions, the choice of the sample score, and a
trained run's scorer and CLI with and without calibration."""

import csv
import json
import os

import numpy as np
import pytest

from uadcore.io import Grid
from uadcore.score import calibrate as calibration


def _healthy_maps(n=8, shape=(20, 20, 20), seed=0):
    """Maps of healthy scans whose error is always high in one corner block (tissue
    that is hard to reconstruct in every scan), and noise elsewhere."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(0.1, 0.02, (n, *shape)).clip(0)
    maps[:, :6, :6, :6] += 0.5
    regions = np.ones((n, *shape), bool)
    return maps.astype(np.float32), regions


def test_a_calibrated_map_divides_out_what_is_hard_in_every_healthy_scan():
    maps, regions = _healthy_maps()
    fitted = calibration.fit(maps, regions)
    new = _healthy_maps(1, seed=1)[0][0]
    new[14:17, 14:17, 14:17] += 0.3  # a lesion, smaller than the hard block's excess
    raw_peak = np.unravel_index(np.argmax(new), new.shape)
    calibrated = fitted.apply(new, regions[0])
    peak = np.unravel_index(np.argmax(calibrated), new.shape)
    assert max(raw_peak) < 6  # the raw map is highest in the always-hard block
    assert all(14 <= p < 17 for p in peak)  # the calibrated one at the lesion
    assert calibrated.min() >= 0 and calibrated[~regions[0]].size == 0


def test_leave_one_out_equals_a_fit_on_the_other_scans():
    maps, regions = _healthy_maps(6)
    for i, own_out in enumerate(calibration.leave_one_out(maps, regions)):
        others = calibration.fit(np.delete(maps, i, axis=0), np.delete(regions, i, axis=0))
        np.testing.assert_allclose(own_out.mean, others.mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(own_out.scale, others.scale, rtol=1e-4, atol=1e-6)


def test_top1_sees_a_small_lesion_the_mean_drowns():
    rng = np.random.default_rng(0)
    inside = np.ones((40, 40, 40), bool)
    # healthy scans differ in their overall error level by up to 10 %
    clean = [rng.uniform(0.9, 1.1) * rng.normal(1.0, 0.3, inside.shape).clip(0) for _ in range(8)]
    lesioned = [rng.uniform(0.9, 1.1) * rng.normal(1.0, 0.3, inside.shape).clip(0) for _ in range(8)]
    for map_ in lesioned:
        map_[10:16, 10:16, 10:16] += 3.0  # 0.3 % of the brain
    threshold = float(np.quantile(np.concatenate([c.ravel() for c in clean]), 0.99))
    clean_stats = [calibration.statistics(m, inside, threshold) for m in clean]
    lesion_stats = [calibration.statistics(m, inside, threshold) for m in lesioned]
    # the lesion moves the mean by 1 % of the healthy level, the top 1 % by far more
    assert min(s["top1"] for s in lesion_stats) > max(s["top1"] for s in clean_stats)
    chosen, aurocs = calibration.choose_statistic(clean_stats, lesion_stats)
    assert chosen in ("top1", "share") and aurocs[chosen] == 1.0 and aurocs[chosen] > aurocs["mean"]


def test_a_pseudo_lesion_changes_a_sphere_inside_the_brain_of_a_copy():
    from uadcore.preprocess import make_preset
    from uadcore.preprocess.preset import Prepared

    grid = Grid.from_parts((30, 30, 30), (0, 0, 0), (2.0, 2.0, 2.0))
    image = np.full(grid.shape, 0.75, np.float32)
    region = np.zeros(grid.shape, bool)
    region[3:27, 3:27, 3:27] = True
    image[~region] = 0
    prepared = Prepared(image, region, grid, grid, make_preset("brain3d-behrendt"))
    copy = calibration.pseudo_lesioned(prepared, np.random.default_rng(0))
    changed = copy.image != prepared.image
    assert changed.any() and not changed[~region].any()
    assert (prepared.image[region] == 0.75).all()  # the original untouched
    volume_mm3 = changed.sum() * 8.0
    low, high = calibration.PSEUDO_RADIUS_MM
    assert 4 / 3 * np.pi * (low - 2) ** 3 <= volume_mm3 <= 4 / 3 * np.pi * (high + 2) ** 3


def test_healthy_scorer_calibrates_on_the_healthy_maps_and_ranks_a_lesion_first():
    maps, regions = _healthy_maps()
    scorer = calibration.HealthyScorer(maps, regions)
    scans = _healthy_maps(3, seed=2)[0]
    scans[1, 14:17, 14:17, 14:17] += 0.3
    top1 = [scorer(m, regions[0], "top1") for m in scans]
    assert top1[1] > 2 * max(top1[0], top1[2])
    expected = calibration.statistics(calibration.fit(maps, regions).apply(scans[1], regions[0]), regions[0], None)["top1"]
    assert top1[1] == pytest.approx(expected)
    assert scorer(scans[1], regions[0], "share") > scorer(scans[0], regions[0], "share")


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory, small_cohort):
    """A small AE3D run with 5 healthy validation scans (enough to calibrate) and a
    test manifest of unseen scans."""
    from uadcore.io import write_manifest
    from uadcore.train import TrainConfig, train

    base = tmp_path_factory.mktemp("calibrated")
    entries = small_cohort
    healthy = [e for e in entries if e.label == "healthy"]
    train_manifest = write_manifest(healthy[:8], str(base / "train.csv"))
    test_manifest = write_manifest(healthy[8:] + [e for e in entries if e.label == "unhealthy"], str(base / "test.csv"))
    config = TrainConfig.from_dict({"data": train_manifest, "model_params": {"channels": [2, 4, 8, 16], "latent": 16},
                                    "epochs": 2, "val_fraction": 0.6, "workers": 1})
    train(config, str(base / "run"))
    return str(base / "run"), test_manifest


def test_a_run_stores_its_calibration_and_chooses_a_sample_score(calibrated_run):
    from uadcore.io.checkpoint import load_checkpoint

    run, _ = calibrated_run
    state = load_checkpoint(os.path.join(run, "checkpoint.pt"))
    reference = state["validation"]["maps"]["rec"]
    assert len(state["validation"]["entries"]) >= calibration.MIN_SCANS
    assert tuple(state["calibration"]["rec"]["mean"].shape) == (64, 77, 66)
    assert reference["sample_score"] in calibration.STATISTICS
    assert set(reference["pseudo_lesion_auroc"]) == set(calibration.STATISTICS)
    for mode in ("raw", "calibrated"):
        assert set(reference[mode]["scores"]) == set(calibration.STATISTICS)
        assert len(reference[mode]["scores"]["top1"]) == len(state["validation"]["entries"])
        assert reference[mode]["thresholds"]["0.01"] >= reference[mode]["thresholds"]["0.1"]


def test_the_scorer_calibrates_by_default_and_gives_the_raw_map_when_asked(calibrated_run):
    from uadcore.io import read_manifest
    from uadcore.score.scorer import Scorer

    run, test_manifest = calibrated_run
    scan = read_manifest(test_manifest)[-1].path
    calibrated, raw = Scorer(run, device="cpu"), Scorer(run, device="cpu", raw=True, statistic="top1")
    assert calibrated.calibrated("rec") and not raw.calibrated("rec")
    a, b = calibrated.score(scan), raw.score(scan)
    assert a.calibrated and not b.calibrated and b.statistic == "top1"
    # the raw map is the reconstruction error; the calibrated one is it in healthy units
    state_cal = calibrated.calibrations["rec"]
    np.testing.assert_allclose(a.model_map, state_cal.apply(b.model_map, a.prepared.region), atol=1e-5)
    assert b.score == b.sample_scores["rec-top1"] and a.score == a.sample_scores[f"rec-{a.statistic}"]
    assert a.sample_scores["rec"] == pytest.approx(b.sample_scores["rec-mean"], rel=1e-5)  # the paper's score is kept
    assert 0 <= calibrated.percentile(a.score) <= 100
    with pytest.raises(Exception, match="sample score 'best'"):
        Scorer(run, statistic="best")


def test_score_and_evaluate_say_which_map_and_sample_score_they_used(calibrated_run, capsys):
    from uadcore.cli import main
    from uadcore.io import read_manifest

    run, test_manifest = calibrated_run
    scan = read_manifest(test_manifest)[-1].path
    assert main(["score", run, scan, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["calibrated"] is True and payload["sample_score"] in calibration.STATISTICS
    assert main(["score", run, scan, "--raw", "--score", "share", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["calibrated"] is False and payload["sample_score"] == "share" and 0 <= payload["score"] <= 1
    assert main(["evaluate", run, "--data", test_manifest, "--score", "top1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["calibrated"] is True and report["sample_score"] == "top1"
    assert {"rec", "rec-mean", "rec-top1", "rec-share"} <= set(report["sample_scores"])
    assert report["peak_in_lesion"] is not None and 0 <= report["peak_in_lesion"] <= 1


def test_outlier_removal_can_rank_by_the_calibrated_maps_top1(tmp_path, small_cohort):
    """removal_score rec-top1: at a removal epoch every training scan's calibrated
    top-1 % score (validation scans as the healthy reference) against gamma x their
    mean; at the last epoch it is the score the finished run's scorer gives."""
    from uadcore.io import write_manifest
    from uadcore.score.scorer import Scorer
    from uadcore.train import TrainConfig, train

    healthy = [e for e in small_cohort if e.label == "healthy"]
    train_manifest = write_manifest(healthy[:8] + [e for e in small_cohort if e.label == "unhealthy"], str(tmp_path / "train.csv"))
    config = TrainConfig.from_dict({"data": train_manifest, "model_params": {"channels": [2, 4, 8, 16], "latent": 16},
                                    "epochs": 2, "outlier_every": 2, "removal_start": "paper", "removal_score": "rec-top1",
                                    "gamma": 1.0001, "reinit_at": [], "val_fraction": 0.6, "workers": 1})
    summary = train(config, str(tmp_path / "run"))
    with open(tmp_path / "run" / "outliers.csv", newline="") as handle:
        audit = list(csv.DictReader(handle))
    assert summary["removed"] == len(audit) >= 1
    scorer = Scorer(str(tmp_path / "run"), device="cpu", statistic="top1")
    for row in audit:
        assert row["score"] == "rec-top1" and float(row["loss_over_mean"]) > 1.0001
        assert float(row["loss"]) == pytest.approx(scorer.score(row["path"]).score, rel=1e-3)


def test_a_removal_score_the_run_cannot_compute_is_refused_before_the_run_folder(tmp_path, small_cohort):
    from uadcore.errors import UADError
    from uadcore.io import write_manifest
    from uadcore.train import TrainConfig, train

    manifest = write_manifest(small_cohort, str(tmp_path / "all.csv"))
    for values, message in (({"model": "vae2d"}, "whole-volume"), ({"val_fraction": 0.1}, "at least 5 validation scans")):
        config = TrainConfig.from_dict({"data": manifest, "removal_score": "rec-share", "epochs": 1, "workers": 1, **values})
        with pytest.raises(UADError, match=message):
            train(config, str(tmp_path / "run"))
        assert not (tmp_path / "run").exists()
    with pytest.raises(UADError, match="removal_score must be one of loss, rec-mean, rec-top1, rec-share"):
        TrainConfig.from_dict({"data": manifest, "removal_score": "top1"})


def test_a_pilot_holds_out_the_scans_calibration_needs():
    """10 % of a pilot of 30 would be 3 validation scans and every map raw: the
    hold-out grows to `MIN_SCANS` when as many are left to train on."""
    from uadcore.io import ScanEntry
    from uadcore.train.config import TrainConfig
    from uadcore.train.engine import _split

    def held_out(n_healthy, fraction=0.1, unhealthy=0):
        entries = [ScanEntry(f"/data/h{i}.nii.gz", "healthy") for i in range(n_healthy)]
        entries += [ScanEntry(f"/data/u{i}.nii.gz", "unhealthy") for i in range(unhealthy)]
        return _split(entries, TrainConfig.from_dict({"data": "/data", "val_fraction": fraction}))[1]

    assert len(held_out(30)) == calibration.MIN_SCANS
    assert len(held_out(100)) == 10  # the fraction where it gives more
    assert len(held_out(9)) == 1  # too few to hold out 5 and train on as many
    assert len(held_out(30, fraction=0.0)) == 0  # asked for none
    assert all(e.label == "healthy" for e in held_out(12, unhealthy=5))


def test_a_score_says_when_its_map_is_raw_and_its_reference_rough():
    from uadcore.score.words import score_words

    assert score_words(2.5, "top1", "rec", True, 97.0, 12) == (
        "score 2.50000 (top1 of the calibrated rec map), above 97 % of the 12 healthy validation scans")
    line = score_words(0.31, "top1", "rec", False, 100.0, 4)
    assert "top1 of the raw rec map (not calibrated)" in line
    assert "above 100 % of the 4 healthy validation scans (rough: fewer than 10)" in line
    assert score_words(0.31, "top1", "rec", False, None, 0) == "score 0.31000 (top1 of the raw rec map (not calibrated))"
    # the sample scores of a report's table, each said once and apart (not two rows "rec")
    from uadcore.score.words import sample_score_words

    assert sample_score_words("rec", True) == "the paper's: mean reconstruction error of the raw map"
    assert sample_score_words("rec-mean", True) == "mean of the calibrated rec map"
    assert sample_score_words("abs-z-top1", False) == "mean of the top 1 % of the raw abs-z map"
    assert sample_score_words("kl", True) == "kl"


def test_a_run_too_small_to_calibrate_says_so_once_and_so_does_every_score(tmp_path, small_cohort, capsys):
    from uadcore.cli import main
    from uadcore.io import write_manifest

    healthy = [e for e in small_cohort if e.label == "healthy"]
    manifest = write_manifest(healthy, str(tmp_path / "train.csv"))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_params": {"channels": [2, 4, 8, 16], "latent": 16}, "epochs": 1,
                                  "val_fraction": 0.45, "workers": 1, "reinit_at": []}))
    assert main(["train", "--data", manifest, "--out", str(tmp_path / "run"), "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert err.count("its maps stay raw (not calibrated)") == 1 and "held out 4" in err
    scan = [e for e in small_cohort if e.label == "unhealthy"][0].path
    assert main(["score", str(tmp_path / "run"), scan]) == 0
    line = capsys.readouterr().out
    assert "of the raw rec map (not calibrated)" in line and "of the 4 healthy validation scans (rough: fewer than 10)" in line
