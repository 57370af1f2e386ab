"""Evaluating a trained run on a labelled manifest of scans it did not train on.

Voxel-level metrics are computed on the model grid (masks brought there by nearest
neighbour), inside the brain, over every scan whose voxel truth is known: scans
with a lesion mask, and scans labelled healthy (no lesion voxels). Where both are
there, voxel AUROC, AP and best Dice are also reported over the scans with lesion
voxels alone (``lesion_scans_only``), the pool most papers report: the healthy
scans' voxels are negatives that a map must also keep low, and they lower AP.

For slice and patch models, the same scans also give slice- or patch-level AUROC
and AP: a slice or patch is positive when lesion voxels cover more than
``unit_overlap`` of it (default 0: any lesion voxel), its score is the model's
score of that input (classifier probability, patch RMSE) or else the mean of its
map inside the brain.

The map is the scorer's: calibrated on the run's healthy validation scans unless
raw (see `uadcore.score.calibrate`); the sample score is the scorer's statistic
of it, and every other sample score is reported under ``sample_scores``.
``peak_in_lesion`` is the share of scans with a lesion mask whose map is highest
(inside the brain) at a lesion voxel.

Dice is reported three ways: at the threshold best on a fifth of the scans
(reported on the rest), the best over all (an upper bound), and at the threshold
training stored from healthy validation scans alone (1 % of their brain voxels
above it): the one a user without lesion masks would use.

Optional post-processing, as in Behrendt et al.'s later code (off by default and
recorded in the report when on): a 5x5x5 median filter on the map, the brain mask
eroded by one voxel, and, for Dice, predicted components of 7 voxels or fewer
removed (thresholds are still searched on the filtered map without that removal).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from uadcore.errors import UADError, warn
from uadcore.evaluate.results import EvaluationReport, UnitMetrics, VoxelMetrics
from uadcore.io import ScanEntry
from uadcore.metrics import best_dice_threshold, dice, sample_metrics, voxel_metrics
from uadcore.score.scorer import SCANS_AT_ONCE, Scorer

POSTPROCESS = {"median_filter": 5, "brain_erosion": 1, "max_removed_component": 7}
HEALTHY_FPR = 0.01  # the stored healthy threshold that `dice_at_healthy_fpr` uses


def evaluate(scorer: Scorer, entries: list[ScanEntry], kind: str = "rec", dice_fraction: float = 0.2, seed: int = 0,
             workers: int | None = None, progress: bool = True, postprocess: bool = False,
             unit_overlap: float = 0.0) -> EvaluationReport:
    """Metrics of ``scorer``'s run on ``entries`` (see the module docstring). A scan
    that cannot be prepared (e.g. a failed registration) is left out and listed in
    the report's ``skipped``."""
    # scored as the workers prepare them (`Scorer.score_many`), as many together as
    # `score_prepared` takes at once (the batches of --reference maps stay as they were)
    skipped, kept, prepared, results = [], [], [], []
    for entry, result, mask in scorer.score_many(entries, kind, workers, progress, masks=True, scans_per_pass=SCANS_AT_ONCE):
        if isinstance(result, str):
            skipped.append({"path": entry.path, "label": entry.label or "", "reason": result})
            continue
        kept.append(entry)
        prepared.append((result.prepared, mask))
        results.append(result)
    entries = kept
    if not entries:
        raise UADError(f"none of the scans could be prepared; the first: {skipped[0]['reason']}")

    labelled = [(r.score, e.label == "unhealthy") for r, e in zip(results, entries) if e.label]
    sample = sample_metrics([s for s, _ in labelled], [y for _, y in labelled])
    # the model's other sample scores (rec, and kl, elbo for a VAE), each on its own
    labels = [e.label == "unhealthy" for e in entries if e.label]
    sample_scores = {
        name: {key.replace("sample_", ""): value for key, value in
               sample_metrics([r.sample_scores[name] for r, e in zip(results, entries) if e.label], labels).items()}
        for name in results[0].sample_scores
    }
    report = EvaluationReport(
        len(entries), kind, scorer.calibrated(kind), scorer.statistic(kind), sum(e.label == "healthy" for e in entries),
        sum(e.label == "unhealthy" for e in entries), POSTPROCESS if postprocess else None, sample["sample_auroc"],
        sample["sample_ap"], sample_scores, peak_in_lesion=None, skipped=skipped,
        scans=[{"path": e.path, "label": e.label or "", "score": r.score, **{f"score_{k}": v for k, v in r.sample_scores.items()}}
               for r, e in zip(results, entries)])

    # voxels inside the brain of the scans whose voxel truth is known
    voxels, units, peaks = [], [], []
    for result, (one, mask), entry in zip(results, prepared, entries):
        if mask is None and entry.label != "healthy":
            continue
        if mask is not None and entry.label == "unhealthy" and not mask.any():
            warn(f"{entry.mask}: the lesion mask of the unhealthy scan {entry.path} is empty on the model grid; "
                 "its voxels count as healthy")
        truth = np.zeros(one.grid.shape, bool) if mask is None else mask
        anomaly, region = result.model_map, one.region
        if postprocess:
            anomaly = ndimage.median_filter(anomaly, size=POSTPROCESS["median_filter"])
            region = ndimage.binary_erosion(region, iterations=POSTPROCESS["brain_erosion"])
        voxels.append((anomaly, truth, region))
        if mask is not None and mask.any():  # is the map's highest brain voxel in the lesion?
            peaks.append(bool(truth.flat[int(np.argmax(np.where(region, anomaly, -np.inf)))]))
        units.append(_unit_truth_and_scores(one, result, truth, unit_overlap))
    if voxels and any(t[r].any() for _, t, r in voxels):
        report.voxel = VoxelMetrics(**voxel_metrics(np.concatenate([v[r] for v, _, r in voxels]),
                                                    np.concatenate([t[r] for _, t, r in voxels])),
                                    **_dice(voxels, dice_fraction, seed, postprocess))
        # Dice at the map value above which 1 % of the healthy validation scans' brain
        # voxels lie: a threshold a user can set without any lesion
        healthy_threshold = scorer.thresholds.get(kind, {}).get(str(HEALTHY_FPR))
        if healthy_threshold is not None:
            predicted = np.concatenate([(v > healthy_threshold)[r] for v, _, r in voxels])
            report.voxel.healthy_fpr, report.voxel.healthy_fpr_threshold = HEALTHY_FPR, healthy_threshold
            report.voxel.dice_at_healthy_fpr = dice(predicted, np.concatenate([t[r] for _, t, r in voxels]))
        with_lesion = [v for v in voxels if v[1][v[2]].any()]
        if len(with_lesion) < len(voxels):
            report.voxel.lesion_scans_only = {"scans": len(with_lesion),
                                              **voxel_metrics(*_inside(with_lesion, range(len(with_lesion)))),
                                              "best_dice": _best_dice(with_lesion, postprocess)[0]}
    report.peak_in_lesion = float(np.mean(peaks)) if peaks else None
    unit = scorer.preset.unit
    if unit and units:
        truth, scores = np.concatenate([t for t, _ in units]), np.concatenate([s for _, s in units])
        metrics = sample_metrics(list(scores), list(truth))
        report.units = UnitMetrics(unit, int(len(truth)), int(truth.sum()), unit_overlap, metrics["sample_auroc"], metrics["sample_ap"])
    return report


def _unit_truth_and_scores(prepared, result, lesion: np.ndarray, overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """Per model input (slice or patch) of one scan: positive (lesion covers more
    than ``overlap`` of it) and its score. Returns two (N,) arrays."""
    if prepared.preset.unit is None:
        return np.zeros(0, bool), np.zeros(0)
    covered = prepared.inputs(lesion).reshape(len(prepared.units), -1).mean(axis=1)
    if result.item_scores is not None:
        scores = np.asarray(result.item_scores, float)
    else:
        values = prepared.inputs(result.model_map).reshape(len(prepared.units), -1)
        inside = prepared.inputs(prepared.region).reshape(len(prepared.units), -1) > 0.5
        scores = (values * inside).sum(axis=1) / np.maximum(inside.sum(axis=1), 1)
    return covered > overlap, scores


def _dice(volumes, fraction: float, seed: int, postprocess: bool) -> dict:
    """Dice at the threshold that is best on a random ``fraction`` of the scans,
    reported on the others; and the best Dice over all of them (an upper bound).

    volumes: (map, truth, region) per scan, on the model grid.
    """
    best, best_threshold = _best_dice(volumes, postprocess)
    result = {"best_dice": best, "best_dice_threshold": best_threshold, "dice": None, "dice_threshold": None}
    order = np.random.default_rng(seed).permutation(len(volumes))
    n_choose = max(1, int(round(fraction * len(volumes))))
    choose, report_on = order[:n_choose], order[n_choose:]
    chosen_values, chosen_truth = _inside(volumes, choose)
    if len(report_on) and chosen_truth.any():
        threshold, _ = best_dice_threshold(chosen_values, chosen_truth)
        result.update({"dice": _pooled_dice(volumes, report_on, threshold, postprocess), "dice_threshold": threshold})
    else:
        result["dice_missing"] = (f"no lesion voxel in the {len(choose)} scan(s) drawn to choose the threshold"
                                  if len(report_on) else "too few scans to split into threshold and report parts")
    return result


def _best_dice(volumes, postprocess: bool) -> tuple[float, float]:
    """(the best pooled Dice over all of ``volumes``, its threshold)."""
    everything = np.arange(len(volumes))
    threshold, _ = best_dice_threshold(*_inside(volumes, everything))
    return _pooled_dice(volumes, everything, threshold, postprocess), threshold


def _inside(volumes, indices) -> tuple[np.ndarray, np.ndarray]:
    """(map values, truth) of the brain voxels of ``volumes[indices]``, pooled (1D)."""
    return (np.concatenate([volumes[i][0][volumes[i][2]] for i in indices]),
            np.concatenate([volumes[i][1][volumes[i][2]] for i in indices]))


def _pooled_dice(volumes, indices, threshold: float, postprocess: bool) -> float:
    """Dice of ``map > threshold`` pooled over the brains of ``volumes[indices]``
    (small components removed first with ``postprocess``)."""
    predicted, truth = [], []
    for i in indices:
        anomaly, lesion, region = volumes[i]
        prediction = (anomaly > threshold) & region
        if postprocess:
            prediction = _without_small_components(prediction, POSTPROCESS["max_removed_component"])
        predicted.append(prediction[region])
        truth.append(lesion[region])
    return dice(np.concatenate(predicted), np.concatenate(truth))


def _without_small_components(prediction: np.ndarray, max_size: int) -> np.ndarray:
    """``prediction`` without its connected components of ``max_size`` voxels or fewer."""
    labels, count = ndimage.label(prediction)
    if count == 0:
        return prediction
    sizes = np.bincount(labels.ravel())
    keep = sizes > max_size
    keep[0] = False
    return keep[labels]
