"""The out-of-fold audit's core, shared by `uad audit` (`uadcore.audit`) and a
run's outlier removal by the audit (``removal_score audit``): the folds, every map
calibrated on the rest of the set, and the audit with `normative` in memory.

A map is scored among its own set of scans: each against the per-voxel mean and
spread of everybody else's out-of-fold maps (leave one out), so a voxel counts as
abnormal for a scan when it is abnormal among this very set (the few contaminated
scans rarely share a voxel).
"""

from __future__ import annotations

import csv
import random

import numpy as np
import torch

from uadcore.errors import UADError
from uadcore.io.atomic import atomic_path
from uadcore.score.calibrate import MIN_SCANS

FOLDS = 5
# the sample score looks at three volumes of each calibrated map, the mean of its highest 1 %, 0.2 % and 0.05 % (of
# a brain on the 2.5 mm grid about 1,200, 240 and 60 voxels: a tumour, a 15 mm mass, a 5-10 mm one): a lesion is of
# unknown size, and one share alone averages a small one with many times its volume of healthy noise or lets a few
# voxels stand for a large faint one. Each is taken relative to the set's median (`relative_to_set`); the score is
# the highest of the three
TOP_FRACTIONS = (0.01, 0.002, 0.0005)
# the audit prepares brains with the deformable registration (`--registration`): a healthy scan's anatomy a few mm
# off the others' makes |z| at every boundary, and the warp takes much of that away (`benchmarks/RESULTS.md`)
REGISTRATION = "deformable"
# a voxel's map value is noisy (a normative |z| above all); a lesion is a blob of voxels. Smoothing by a
# Gaussian of one voxel before calibrating keeps blobs and quiets single voxels: on real scans (100 IXI,
# 5 folds) 9 of 10 injected tumour scans in the top 10 instead of 8, white-matter lesions 7 of 10 as before
SMOOTH_VOXELS = 1.0
# the ranking as a table (audit.csv): of `uad audit`, or of a run that removed by the audit (fewer columns filled)
AUDIT_COLUMNS = ("rank", "path", "label", "score", "percentile_in_set", "peak_ras_mm", "region_ml", "fold", "run", "map",
                 "problem")


def fewest_scans(folds: int) -> int:
    """The fewest scans an audit in ``folds`` folds takes: two a fold, and enough
    for the set's calibration (each map on at least `MIN_SCANS` + 1 others)."""
    return max(2 * folds, MIN_SCANS + 2)


def folds_of(n: int, k: int, seed: int) -> list[int]:
    """The fold (0..k-1) of each of ``n`` scans: a seeded shuffle dealt round, so the
    folds differ in size by at most one."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    fold_of = [0] * n
    for position, index in enumerate(order):
        fold_of[index] = position % k
    return fold_of


def calibrated_on_the_set(maps: np.ndarray, regions: np.ndarray) -> tuple[list[np.ndarray], dict, np.ndarray]:
    """Each of ``maps`` (N, I, J, K) on one model grid, 0 outside its brain
    (``regions``, (N, I, J, K) bool), smoothed (`SMOOTH_VOXELS`), calibrated on all
    the others (leave one out) and judged only where at least half of the set has
    brain: at the brain's top and bottom edge, where few scans reach, the others'
    maps are mostly 0 and any brain there would look abnormal. Returns (the N
    calibrated maps, the set's voxel thresholds {fpr: value} (`calibrate.reference`),
    every scan's sample score, (N,) float64 (`sample_scores`))."""
    from scipy import ndimage

    from uadcore.score.calibrate import each_left_out, reference

    maps = np.stack([ndimage.gaussian_filter(np.asarray(m, np.float32), SMOOTH_VOXELS) * r for m, r in zip(maps, regions)])
    insides = judged(regions)
    calibrated = [c.apply(m, inside) for c, m, inside in zip(each_left_out(maps, regions), maps, insides)]
    return calibrated, reference(calibrated, list(insides))["thresholds"], sample_scores(calibrated, insides)


def judged(regions: np.ndarray) -> np.ndarray:
    """Where each scan's map is judged: its brain (``regions``, (N, I, J, K) bool)
    where at least half of the set has brain."""
    return regions & (regions.mean(axis=0) >= 0.5)


def sample_scores(calibrated: list[np.ndarray], insides: np.ndarray, fractions: tuple = TOP_FRACTIONS) -> np.ndarray:
    """Every scan's sample score, (N,) float64: for each of ``fractions``, the mean of
    the highest share of its calibrated map where it is judged (`judged`), relative
    to the set's median of that mean (`relative_to_set`); the highest of these. So a
    scan ranks high when one volume of its map, whichever, stands out from the same
    volume of the other scans' maps; a typical scan scores about 1."""
    from uadcore.score.calibrate import top_mean

    def top_means(values: np.ndarray) -> list[float]:
        return [top_mean(values, fraction) for fraction in fractions]

    # (N, len(fractions)): one scan's judged voxels copied at a time
    means = np.array([top_means(np.asarray(m[inside], np.float64) if inside.any() else np.zeros(1))
                      for m, inside in zip(calibrated, insides)])
    return np.max([relative_to_set(column) for column in means.T], axis=0)


def relative_to_set(scores: np.ndarray) -> np.ndarray:
    """``scores`` (N,) of a set of scans, >= 0, as multiples of the set's median: the
    median, unlike the mean, stays where it is with the few contaminated scans of a
    set in it. A set whose median is 0 keeps its scores as they are."""
    centre = float(np.median(scores))
    return scores / centre if centre > 0 else scores


@torch.no_grad()
def normative_scores(items: torch.Tensor, regions: torch.Tensor, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """The audit, in memory, of prepared whole-volume scans on one model grid:
    ``items`` (N, 1, I, J, K) and their brains ``regions`` (N, 1, I, J, K), N >=
    `fewest_scans`. Each scan's map (the audit map of `normative`, its
    `ModelSpec.audit_map`) comes from a `normative` fitted on the other folds (as `uadcore.audit.run_audit` with ``--model normative``, without
    run folders), the maps are calibrated on the set (`calibrated_on_the_set`);
    returns every scan's sample score (`calibrated_on_the_set`), (N,) float64: the
    score of outlier removal by ``removal_score audit``. The scans are the run's,
    prepared with its registration."""
    from uadcore.models.normative import SPEC, Normative
    from uadcore.score.maps import map_outputs

    n = len(items)
    if n < fewest_scans(folds):
        raise UADError(f"{n} scans; an audit in {folds} folds needs at least {fewest_scans(folds)}")
    fold_of = torch.tensor(folds_of(n, folds, seed))
    inside = regions[:, 0].bool().cpu()
    maps = np.zeros(tuple(inside.shape), np.float32)
    for fold in range(folds):
        held = fold_of == fold
        model = Normative(in_shape=items.shape[2:], in_channels=items.shape[1])
        model.fit(items[~held].cpu(), regions[~held].cpu())
        held_maps = map_outputs(model, items[held].cpu(), SPEC.audit_map)[SPEC.audit_map][:, 0]
        maps[held.numpy()] = torch.where(inside[held], held_maps, 0.0).numpy()
    return calibrated_on_the_set(maps, inside.numpy())[2]


def found_in_top_k(ranking: list[dict]) -> tuple[int, int, int] | None:
    """How a ranking (rows, the most suspicious first; rows without a score are left
    out) of scans labelled unhealthy among healthy ones does: (the unhealthy in its
    top k, k: their number, the healthy in that top k); None unless both are there."""
    scored = [r for r in ranking if r.get("score") is not None]
    k = sum(r["label"] == "unhealthy" for r in scored)
    if not 0 < k < len(scored):
        return None
    found = sum(r["label"] == "unhealthy" for r in scored[:k])
    return found, k, k - found


def write_audit_csv(rows: list[dict], path: str) -> str:
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=AUDIT_COLUMNS)
        writer.writeheader()
        for row in rows:
            shown = {**row, "peak_ras_mm": " ".join(map(str, row["peak_ras_mm"])) if row.get("peak_ras_mm") else ""}
            if isinstance(shown.get("score"), float):
                shown["score"] = round(shown["score"], 6)
            writer.writerow({key: shown.get(key, "") for key in AUDIT_COLUMNS})
    return path


def read_audit_csv(path: str) -> list[dict]:
    """The rows of an audit.csv (of `uad audit` or of a run that removed by the
    audit), in its order (the ranking): rank an int (None for a scan that could not
    be scored), score a float (None), peak_ras_mm a list of 3 floats (None), the
    other columns strings."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["rank"] = int(row["rank"]) if row.get("rank") else None
        row["score"] = float(row["score"]) if row.get("score") else None
        row["peak_ras_mm"] = [float(v) for v in row["peak_ras_mm"].split()] if row.get("peak_ras_mm") else None
    return rows
