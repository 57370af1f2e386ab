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


@pytest.mark.slow
def test_impurity_compares_the_audit_with_the_papers_rule(tmp_path):
    plan = ImpurityPlan(levels_percent=(0, 20), gammas=(1.5,), removal_scores=("loss", "audit"), healthy_train=10,
                        healthy_validation=0, healthy_test=2, unhealthy_test=2, lesion_kind="small-mass",
                        audit_models=("normative",),
                        train={"epochs": 2, "outlier_every": 1, "reinit_at": [], "batch_size": 4},
                        model_params={"channels": [2, 4, 8, 16], "latent": 16})
    result = run_impurity(str(tmp_path / "impurity"), plan, progress=False)
    variants = [(r["impurity_percent"], r["variant"]) for r in result["rows"]]
    assert variants == [(0, "baseline"), (0, "gamma1.5"), (0, "audit-gamma1.5"),
                        (20, "baseline"), (20, "gamma1.5"), (20, "audit-gamma1.5"), (20, "audit-normative (ranking)")]
    audit_run, ranking = result["rows"][5], result["rows"][6]
    assert audit_run["removal_score"] == "audit" and audit_run["injected_in_top_k"] in (0.0, 0.5, 1.0)
    assert os.path.isfile(tmp_path / "impurity" / "runs" / "20pct-audit-gamma1.5" / "audit.csv")
    assert ranking["sample_auroc"] is None and ranking["injected_in_top_k"] in (0.0, 0.5, 1.0)
    assert result["rows"][4]["injected_in_top_k"] is None  # the loss rule ranks nothing
    subjects = open(tmp_path / "impurity" / "cohort" / "subjects.json").read()
    assert "small-mass" in subjects and "tumour" not in subjects
    assert "audit-normative (ranking)" in open(result["table"]).read() and os.path.getsize(result["plot"]) > 10_000
