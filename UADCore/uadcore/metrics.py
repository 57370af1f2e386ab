"""Detection and segmentation metrics, apart from any model: sample AUROC/AP,
voxel AUROC/AP inside the brain, Dice at a threshold and the best Dice."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def sample_metrics(scores, labels) -> dict:
    """AUROC and AP of ``scores`` (higher = more anomalous) for ``labels`` (1 =
    unhealthy). None where only one class is present."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    if len(np.unique(labels)) < 2:
        return {"sample_auroc": None, "sample_ap": None}
    return {"sample_auroc": float(roc_auc_score(labels, scores)), "sample_ap": float(average_precision_score(labels, scores))}


def voxel_metrics(values, truth) -> dict:
    """AUROC and AP over voxels: ``values`` and ``truth`` (bool) are 1D arrays of
    the voxels inside the brain of all scans."""
    values, truth = np.asarray(values, float), np.asarray(truth, bool)
    if truth.all() or not truth.any():
        return {"voxel_auroc": None, "voxel_ap": None}
    return {"voxel_auroc": float(roc_auc_score(truth, values)), "voxel_ap": float(average_precision_score(truth, values))}


def dice(prediction, truth) -> float:
    """Dice of two bool arrays; 1.0 when both are empty."""
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    total = prediction.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(prediction, truth).sum() / total)


def best_dice_threshold(values, truth) -> tuple[float, float]:
    """The threshold t maximising the pooled Dice of ``values > t`` against
    ``truth``, searched exactly over every distinct value (no bisection).

    Returns (threshold, dice). With voxels sorted by decreasing value, predicting
    the top k positive gives Dice = 2 TP_k / (k + P).
    """
    values, truth = np.asarray(values, float).ravel(), np.asarray(truth, bool).ravel()
    positives = truth.sum()
    if positives == 0 or len(values) == 0:
        return float(values.max()) if len(values) else 0.0, 0.0
    order = np.argsort(-values, kind="stable")
    sorted_values = values[order]
    true_positives = np.cumsum(truth[order])
    k = np.arange(1, len(values) + 1)
    # only cut between distinct values: voxels of equal value go together
    cut = np.append(sorted_values[1:] < sorted_values[:-1], True)
    scores = np.where(cut, 2.0 * true_positives / (k + positives), -1.0)
    best = int(np.argmax(scores))
    below = sorted_values[best + 1] if best + 1 < len(values) else sorted_values[best] - 1.0
    return float((sorted_values[best] + below) / 2.0), float(scores[best])


def threshold_at_fpr(healthy_values, fpr: float) -> float:
    """The map value above which a fraction ``fpr`` of healthy voxels lies: a
    threshold chosen from healthy scans alone (no labelled lesions needed)."""
    values = np.asarray(healthy_values, float).ravel()
    return float(np.quantile(values, 1.0 - fpr, method="higher")) if len(values) else float("nan")
