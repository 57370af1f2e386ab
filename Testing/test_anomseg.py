"""The anomaly segmenter: it learns to find anomalies it has never seen from the
synthetic ones, trains through the engine (and `uad train`), and its calibrated
probability map is scored, evaluated and written like every map."""

import json

import numpy as np
import pytest
import torch

from test_anomalies import brains
from uadcore.models import make_model
from uadcore.models.anomseg import AnomSeg3D
from uadcore.synth.anomalies import AnomalySettings, insert_anomalies


def test_shapes_and_a_loss_per_sample():
    model = AnomSeg3D((20, 23, 18), channels=(4, 8, 16), res_units=1)
    x = brains(3)[:, :, :20, :23, :18]
    assert model(x).shape == x.shape and model.anomaly_probability(x).dtype == torch.float32
    losses = model.loss_per_sample(x)
    assert losses.shape == (3,) and torch.isfinite(losses).all()
    model.eval()  # outside training the anomalies are drawn from a fixed seed: the validation loss compares like with like
    torch.testing.assert_close(model.loss_per_sample(x), model.loss_per_sample(x))


def test_it_learns_to_find_anomalies_in_scans_it_has_not_seen():
    """A few dozen steps on toy brains: on new brains with new anomalies, the
    probability inside them is well above the probability elsewhere in the brain."""
    torch.manual_seed(0)
    model = make_model("anomseg3d", (40, 48, 40), channels=[8, 16, 32], res_units=1)
    model.anomalies = AnomalySettings(kinds=("intensity",), diameter_mm=(15.0, 40.0), clean_share=0.0, mass_effect_share=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(STEPS):
        loss = model.loss_per_sample(brains(2, seed=step)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x = brains(6, seed=1000)
    altered, masks = insert_anomalies(x, model.anomalies, torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        probability = model.anomaly_probability(altered)
    lesion, healthy = masks > 0.5, (masks == 0) & (x > 0)
    assert probability[lesion].mean() > 2 * probability[healthy].mean()


STEPS = 80


def test_trained_by_uad_train_and_scored_with_a_calibrated_map(tmp_path, small_cohort):
    from uadcore.cli import main
    from uadcore.io import write_manifest
    from uadcore.score.scorer import Scorer

    manifest = write_manifest([e for e in small_cohort if e.label == "healthy"], str(tmp_path / "healthy.csv"))
    run = str(tmp_path / "run")
    assert main(["train", "--data", manifest, "--model", "anomseg3d", "--size", "small", "--epochs", "2", "--val-fraction", "0.6",
                 "--out", run, "--device", "cpu", "--workers", "1", "--json"]) == 0
    scorer = Scorer(run)
    assert scorer.kinds == ("probability",) and scorer.calibrated("probability")
    lesioned = next(e for e in small_cohort if e.label == "unhealthy")
    out = tmp_path / "map.nii.gz"
    assert main(["score", run, lesioned.path, "--out", str(out), "--json"]) == 0
    from uadcore.io import read_scan

    written = read_scan(str(out))
    assert written.array.shape == read_scan(lesioned.path).array.shape and np.isfinite(written.array).all()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["outlier_removal"] is False  # the spec's default


@pytest.mark.parametrize("name", ["anomseg3d"])
def test_the_small_configuration_is_a_cpu_one(name):
    from uadcore.models import MODELS

    spec = MODELS[name]
    small = make_model(name, (64, 77, 66), **spec.small)
    assert sum(p.numel() for p in small.parameters()) < 0.5e6
