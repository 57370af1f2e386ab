"""The impurity experiment, at a tiny size: every run made, table and plot written."""

import csv
import os

import pytest

from uadcore.experiments.impurity import ImpurityPlan, run_impurity


def test_injected_counts_make_the_requested_share():
    plan = ImpurityPlan(healthy_train=600)
    assert [plan.injected(level) for level in (0, 3, 6, 12)] == [0, 19, 38, 82]


@pytest.mark.slow
def test_tiny_impurity_experiment(tmp_path):
    plan = ImpurityPlan(levels_percent=(0, 20), gammas=(1.02, 1.5), removal_scores=("loss",), healthy_train=4, healthy_validation=0,
                        healthy_test=2, unhealthy_test=2, train={"epochs": 2, "outlier_every": 1, "reinit_at": [], "batch_size": 2},
                        model_params={"channels": [2, 4, 8, 16], "latent": 16})
    result = run_impurity(str(tmp_path / "impurity"), plan, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "impurity" / "results.csv")))
    assert [(r["impurity_percent"], r["variant"]) for r in rows] == [
        ("0", "baseline"), ("0", "gamma1.02"), ("0", "gamma1.5"), ("20", "baseline"), ("20", "gamma1.02"), ("20", "gamma1.5")]
    baseline = [r for r in result["rows"] if r["variant"] == "baseline"]
    assert all(r["removed_healthy_fraction"] == 0 for r in baseline)
    assert result["rows"][3]["injected"] == 1 and result["rows"][0]["removed_unhealthy_fraction"] is None
    assert all(0.0 <= r["sample_auroc"] <= 1.0 for r in result["rows"])
    assert os.path.isfile(result["plot"]) and os.path.isfile(result["table"])
