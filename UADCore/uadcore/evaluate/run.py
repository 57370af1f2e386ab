"""Evaluating a trained run on a labelled manifest of scans it did not train on.

Voxel-level metrics are computed on the model grid (masks brought there by nearest
neighbour), inside the brain, over every scan whose voxel truth is known: scans
with a lesion mask, and scans labelled healthy (no lesion voxels).
"""

from __future__ import annotations

import numpy as np

from uadcore.evaluate.metrics import best_dice_threshold, dice, sample_metrics, voxel_metrics
from uadcore.io import ScanEntry
from uadcore.score.scorer import Scorer
from uadcore.train.data import prepare_scans


def evaluate(scorer: Scorer, entries: list[ScanEntry], kind: str = "rec", dice_fraction: float = 0.2, seed: int = 0,
             workers: int | None = None, progress: bool = True) -> dict:
    """Metrics of ``scorer``'s run on ``entries`` (see the module docstring)."""
    prepared = prepare_scans(entries, scorer.preset, workers, progress)
    results = scorer.score_prepared([p for p, _ in prepared], [e.path for e in entries], kind)

    labelled = [(r.score, e.label == "unhealthy") for r, e in zip(results, entries) if e.label]
    report = {"n": len(entries), "map": kind, "healthy": sum(e.label == "healthy" for e in entries),
              "unhealthy": sum(e.label == "unhealthy" for e in entries)}
    report.update(sample_metrics([s for s, _ in labelled], [y for _, y in labelled]))

    # voxels inside the brain of the scans whose voxel truth is known
    voxels = []
    for result, (one, mask), entry in zip(results, prepared, entries):
        if mask is None and entry.label != "healthy":
            continue
        truth = np.zeros(one.grid.shape, bool) if mask is None else mask
        voxels.append((result.model_map[one.region], truth[one.region]))
    if voxels and any(t.any() for _, t in voxels):
        report.update(voxel_metrics(np.concatenate([v for v, _ in voxels]), np.concatenate([t for _, t in voxels])))
        report.update(_dice(voxels, dice_fraction, seed))
    report["scans"] = [{"path": e.path, "label": e.label or "", "score": r.score} for r, e in zip(results, entries)]
    return report


def _dice(voxels, fraction: float, seed: int) -> dict:
    """Dice at the threshold that is best on a random ``fraction`` of the scans,
    reported on the others; and the best Dice over all of them (an upper bound)."""
    order = np.random.default_rng(seed).permutation(len(voxels))
    n_choose = max(1, int(round(fraction * len(voxels))))
    choose, report_on = order[:n_choose], order[n_choose:]
    values = np.concatenate([v for v, _ in voxels])
    truth = np.concatenate([t for _, t in voxels])
    best_threshold, best = best_dice_threshold(values, truth)
    result = {"best_dice": best, "best_dice_threshold": best_threshold, "dice": None, "dice_threshold": None}
    chosen_truth = np.concatenate([voxels[i][1] for i in choose])
    if len(report_on) and chosen_truth.any():
        threshold, _ = best_dice_threshold(np.concatenate([voxels[i][0] for i in choose]), chosen_truth)
        held_values = np.concatenate([voxels[i][0] for i in report_on])
        held_truth = np.concatenate([voxels[i][1] for i in report_on])
        result.update({"dice": dice(held_values > threshold, held_truth), "dice_threshold": threshold})
    return result
