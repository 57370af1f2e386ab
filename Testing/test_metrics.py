"""Metrics against scikit-learn and brute force on known inputs."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from uadcore.metrics import best_dice_threshold, dice, sample_metrics, threshold_at_fpr, voxel_metrics


def test_sample_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=200) + labels
    result = sample_metrics(scores, labels)
    assert result["sample_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert result["sample_ap"] == pytest.approx(average_precision_score(labels, scores))


def test_perfect_and_single_class():
    assert sample_metrics([0.1, 0.2, 0.9], [0, 0, 1])["sample_auroc"] == 1.0
    assert sample_metrics([0.1, 0.2], [0, 0])["sample_auroc"] is None
    assert voxel_metrics([0.1, 0.5], [False, False])["voxel_auroc"] is None


def test_dice():
    assert dice([1, 1, 0, 0], [1, 0, 1, 0]) == 0.5
    assert dice([0, 0], [0, 0]) == 1.0


def test_best_dice_threshold_is_the_brute_force_optimum():
    rng = np.random.default_rng(1)
    truth = rng.random(500) < 0.1
    values = rng.normal(size=500) + 2.0 * truth
    values[::7] = np.round(values[::7], 1)  # ties
    threshold, best = best_dice_threshold(values, truth)
    brute = max(dice(values > t, truth) for t in np.unique(values))
    assert best == pytest.approx(brute)
    assert dice(values > threshold, truth) == pytest.approx(best)


def test_best_dice_is_found_where_a_bisection_fails():
    # two separated groups of lesion voxels: Dice against the threshold has two
    # peaks, which a bisection on [0, max] cannot be trusted to find
    values = np.array([0.1] * 50 + [0.5] * 10 + [0.6] * 40 + [0.9] * 10)
    truth = np.array([False] * 50 + [True] * 10 + [False] * 40 + [True] * 10)
    threshold, best = best_dice_threshold(values, truth)
    assert best == pytest.approx(max(dice(values > t, truth) for t in np.unique(values)))


@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.1])
def test_threshold_at_fpr_on_healthy_values(fpr):
    healthy = np.random.default_rng(4).gamma(2.0, size=100_000)
    assert (healthy > threshold_at_fpr(healthy, fpr)).mean() == pytest.approx(fpr, abs=1e-3)
