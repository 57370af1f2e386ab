"""Maps calibrated on healthy scans, and the sample scores read from a map.

A model reconstructs some tissue worse than other tissue in *every* scan (the brain's
edge, the ventricles, the cortex): a raw error map lights up there whether or not
anything is wrong. A **calibrated map** divides that out: at each voxel of the model
grid, the healthy validation scans' map values give a mean and a spread, and the
calibrated map is ``max(0, (map - mean) / spread)``, a normative residual in units of
healthy variation. The spread is the per-voxel variance smoothed by a Gaussian of
`SMOOTH_VOXELS` (eleven or so scans give a noisy variance) and floored at
`SCALE_FLOOR` of its median inside the brain.

Calibration needs a model grid shared by the scans (every brain preset from version 2
on: a fixed grid in MNI space) and at least `MIN_SCANS` healthy validation scans;
otherwise maps stay raw. A validation scan is never calibrated by its own map: the
reference scores and thresholds stored with the run use, for each validation scan,
the statistics of the others (leave one out).

Sample scores from a voxel map (`STATISTICS`), each over the brain voxels the model
saw:

- ``mean``: the mean of the map (for the raw reconstruction error, the sample score of
  Behrendt et al.);
- ``top1``: the mean of the highest 1 % of the map: a lesion of 1 % of the brain
  decides it, however quiet the rest;
- ``share``: the share of voxels above the healthy 1 %-false-positive voxel threshold.

Which one a run uses by default is decided without any lesion: each healthy
validation scan gets one **pseudo-lesion** (a sphere of 5-12 mm radius inside its
brain, intensities scaled by 0.4-0.7 or 1.4-1.8) and the statistic that best tells
those copies from the clean scans (AUROC, then the separation in healthy spreads)
is stored as the run's ``sample_score`` (`choose_statistic`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np


STATISTICS = ("mean", "top1", "share")
ITEM_STATISTIC = "max"  # kinds that score each slice or patch: the scan's most abnormal one
TOP_FRACTION = 0.01
SHARE_FPR = 0.01
FPR_LEVELS = (0.01, 0.05, 0.1)  # false-positive rates of the stored healthy voxel thresholds
MIN_SCANS = 5
SMOOTH_VOXELS = 1.0
SCALE_FLOOR = 0.1
UNCALIBRATED_KINDS = ("z",)  # signed: a negative value is as abnormal as a positive one
PSEUDO_RADIUS_MM = (5.0, 12.0)
PSEUDO_FACTORS = ((0.4, 0.7), (1.4, 1.8))


@dataclass
class Calibration:
    """Per-voxel healthy statistics of one map kind on the model grid.

    mean, scale: float32 (I, J, K), the model grid's shape.
    """

    mean: np.ndarray
    scale: np.ndarray

    def apply(self, model_map: np.ndarray, region: np.ndarray) -> np.ndarray:
        """The calibrated map: float32, grid shape, 0 outside ``region``."""
        calibrated = np.maximum((np.asarray(model_map, np.float32) - self.mean) / self.scale, 0.0)
        return np.where(region, calibrated, 0.0).astype(np.float32)

    def to_state(self) -> dict:
        import torch

        return {"mean": torch.from_numpy(self.mean), "scale": torch.from_numpy(self.scale)}

    @classmethod
    def from_state(cls, state: dict) -> "Calibration":
        return cls(np.asarray(state["mean"], np.float32), np.asarray(state["scale"], np.float32))


def fit(maps: np.ndarray, regions: np.ndarray) -> Calibration:
    """The calibration of ``maps`` (N, I, J, K) of healthy scans (0 outside their
    ``regions``, (N, I, J, K) bool)."""
    maps = np.asarray(maps, np.float64)
    return _calibration(maps.mean(axis=0), maps.var(axis=0, ddof=1), regions.any(axis=0))


def leave_one_out(maps: np.ndarray, regions: np.ndarray) -> list[Calibration]:
    """For each scan of ``maps`` (N, I, J, K), the calibration fitted on the others."""
    return list(each_left_out(maps, regions))


def each_left_out(maps: np.ndarray, regions: np.ndarray) -> Iterator[Calibration]:
    """`leave_one_out`, one calibration at a time (N of them never in memory together)."""
    n = len(maps)
    total, squares = np.zeros(maps.shape[1:]), np.zeros(maps.shape[1:])
    for own in maps:  # in float64, one map at a time
        own = np.asarray(own, np.float64)
        total += own
        squares += own**2
    union = np.asarray(regions).any(axis=0)
    for own in maps:
        own = np.asarray(own, np.float64)
        mean = (total - own) / (n - 1)
        variance = np.maximum((squares - own**2 - (n - 1) * mean**2) / (n - 2), 0.0)
        yield _calibration(mean, variance, union)


def _calibration(mean: np.ndarray, variance: np.ndarray, brain: np.ndarray) -> Calibration:
    from scipy import ndimage  # here, not at import: the CLI's options read this module's constants

    scale = np.sqrt(ndimage.gaussian_filter(variance, SMOOTH_VOXELS))
    typical = float(np.median(scale[brain])) if brain.any() else 1.0
    floor = max(SCALE_FLOOR * typical, 1e-6)
    return Calibration(mean.astype(np.float32), np.maximum(scale, floor).astype(np.float32))


def statistics(model_map: np.ndarray, inside: np.ndarray, share_threshold: float | None) -> dict:
    """The statistics of `STATISTICS` of ``model_map`` over the voxels ``inside``
    (bool, same shape); without a threshold (a run without validation scans) there
    is no ``share``."""
    values = np.asarray(model_map, np.float64)[inside]
    if values.size == 0:
        values = np.zeros(1)
    result = {"mean": float(values.mean()), "top1": top_mean(values, TOP_FRACTION)}
    if share_threshold is not None:
        result["share"] = float(np.mean(values > share_threshold))
    return result


def top_mean(values: np.ndarray, fraction: float) -> float:
    """The mean of the highest ``fraction`` of ``values`` (1D, not empty; at least one value)."""
    top = max(1, int(np.ceil(fraction * values.size)))
    return float(np.partition(values, values.size - top)[-top:].mean())


def reference(maps: list[np.ndarray], insides: list[np.ndarray]) -> dict:
    """Healthy reference of a set of maps (already calibrated or raw), one per
    validation scan: {"thresholds": {fpr: value}, "scores": {statistic: [per scan]}}."""
    from uadcore.metrics import threshold_at_fpr

    values = np.concatenate([m[i] for m, i in zip(maps, insides)])
    thresholds = {str(fpr): threshold_at_fpr(values, fpr) for fpr in FPR_LEVELS}
    per_scan = [statistics(m, i, thresholds[str(SHARE_FPR)]) for m, i in zip(maps, insides)]
    return {"thresholds": thresholds, "scores": {name: [s[name] for s in per_scan] for name in per_scan[0]}}


def choose_statistic(clean: list[dict], pseudo: list[dict]) -> tuple[str, dict]:
    """The statistic that best tells pseudo-lesioned copies from the clean scans:
    highest AUROC, ties broken by the separation of the means in units of the clean
    scans' spread. Returns (name, {name: AUROC})."""
    from uadcore.metrics import sample_metrics

    ranking, aurocs = [], {}
    for name in STATISTICS:
        if not all(name in c for c in clean + pseudo):
            continue
        healthy, lesioned = np.array([c[name] for c in clean]), np.array([p[name] for p in pseudo])
        auroc = sample_metrics(np.concatenate([healthy, lesioned]), [0] * len(healthy) + [1] * len(lesioned))["sample_auroc"]
        separation = (lesioned.mean() - healthy.mean()) / max(float(healthy.std()), 1e-12)
        aurocs[name] = round(float(auroc), 4)
        ranking.append((round(float(auroc), 4), separation, name))
    return (max(ranking)[2] if ranking else "mean"), aurocs


def pseudo_lesioned(prepared, rng: np.random.Generator):
    """A copy of a prepared scan (`Prepared`) with one pseudo-lesion in its brain
    (see the module docstring); the original is untouched."""
    region = np.asarray(prepared.region, bool)
    spacing = prepared.grid.spacing
    radius = float(rng.uniform(*PSEUDO_RADIUS_MM))
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(region, sampling=spacing)
    candidates = np.argwhere(depth > radius)
    if len(candidates) == 0:
        candidates = np.argwhere(depth >= depth.max())
    centre = candidates[rng.integers(len(candidates))]
    offsets = (np.indices(region.shape).reshape(3, -1).T - centre) * spacing
    sphere = (np.linalg.norm(offsets, axis=1) <= radius).reshape(region.shape) & region
    low, high = PSEUDO_FACTORS[int(rng.integers(2))]
    image = np.array(prepared.image, np.float32)
    image[sphere] = np.clip(image[sphere] * rng.uniform(low, high), 0.0, 1.0)
    return replace(prepared, image=image)


class HealthyScorer:
    """Sample scores of scans' maps calibrated on a set of healthy maps, for scans
    that are not among them (training scans during outlier removal).

    healthy_maps: (V, I, J, K) maps of healthy scans on the model grid, 0 outside
    their ``healthy_regions`` ((V, I, J, K) bool), V >= `MIN_SCANS`. The share
    threshold is the healthy 1 %-FPR voxel value of the healthy maps calibrated
    leave-one-out, as for a run's stored reference.
    """

    def __init__(self, healthy_maps: np.ndarray, healthy_regions: np.ndarray):
        own_out = leave_one_out(healthy_maps, healthy_regions)
        calibrated = [c.apply(m, r) for c, m, r in zip(own_out, healthy_maps, healthy_regions)]
        self.share_threshold = reference(calibrated, list(healthy_regions))["thresholds"][str(SHARE_FPR)]
        self.calibration = fit(healthy_maps, healthy_regions)

    def __call__(self, model_map: np.ndarray, region: np.ndarray, statistic: str) -> float:
        """``statistic`` (of `STATISTICS`) of one scan's calibrated map (I, J, K)."""
        return statistics(self.calibration.apply(model_map, region), region, self.share_threshold)[statistic]


def calibrates(kind: str) -> bool:
    """True for the map kinds a run calibrates when it has the validation scans to
    (voxel maps, not the per-item ones nor the signed ``z``)."""
    from uadcore.score.maps import is_item_kind

    return not is_item_kind(kind) and kind not in UNCALIBRATED_KINDS


def shares_grid(prepared: list) -> bool:
    """True when every prepared scan has the same model grid (calibration needs it)."""
    return all(p.grid.matches(prepared[0].grid) for p in prepared)


def calibrate_run(scorer, entries: list, workers: int | None = None, seed: int = 0) -> tuple[dict, dict]:
    """Training's last step: the healthy reference of every map kind of the model
    behind ``scorer`` (an uncalibrated `Scorer.of_model`) from the validation scans
    ``entries``, as the checkpoint stores it: (validation dict, {kind: calibration state})."""
    from uadcore.preprocess.dataset import prepare_scans

    prepared = [result[0] for result in prepare_scans(entries, scorer.preset, workers, progress=False)]
    validation, calibrations = healthy_reference(scorer, prepared, scorer.kinds, seed=seed)
    return validation, {kind: calibration.to_state() for kind, calibration in calibrations.items()}


def healthy_reference(scorer, prepared: list, kinds, seed: int = 0) -> tuple[dict, dict]:
    """What a run stores about its healthy validation scans, per map kind: the raw
    and (where possible) calibrated references, the default sample statistic and
    the pseudo-lesion AUROCs; and the calibrations themselves.

    scorer: an uncalibrated `Scorer` of the trained model; prepared: the validation
    scans (`Prepared`). Returns (validation dict (JSON), {kind: Calibration}).
    """
    from uadcore.score.maps import is_item_kind

    paths = [f"validation {i}" for i in range(len(prepared))]
    insides = [p.seen_region() for p in prepared]
    rng = np.random.default_rng(seed)
    lesioned = [pseudo_lesioned(p, rng) for p in prepared]
    can_calibrate = len(prepared) >= MIN_SCANS and shares_grid(prepared)
    validation, calibrations = {"maps": {}}, {}
    for kind in kinds:
        results = scorer.score_prepared(prepared, paths, kind)
        if is_item_kind(kind):
            validation["maps"][kind] = {"raw": {"scores": {ITEM_STATISTIC: [r.score for r in results]},
                                                "thresholds": _item_thresholds(results)},
                                        "sample_score": ITEM_STATISTIC}
            continue
        maps = [r.model_map for r in results]
        entry = {"raw": reference(maps, insides)}
        pseudo_maps = [r.model_map for r in scorer.score_prepared(lesioned, paths, kind)]
        chosen_from = entry["raw"]
        share_threshold = entry["raw"]["thresholds"][str(SHARE_FPR)]
        if can_calibrate and calibrates(kind):
            stacked, regions = np.stack(maps), np.stack([p.region for p in prepared])
            calibrations[kind] = fit(stacked, regions)
            own_out = leave_one_out(stacked, regions)
            maps = [c.apply(m, p.region) for c, m, p in zip(own_out, maps, prepared)]
            pseudo_maps = [c.apply(m, p.region) for c, m, p in zip(own_out, pseudo_maps, lesioned)]
            entry["calibrated"] = chosen_from = reference(maps, insides)
            share_threshold = chosen_from["thresholds"][str(SHARE_FPR)]
        clean = [{name: values[i] for name, values in chosen_from["scores"].items()} for i in range(len(maps))]
        pseudo = [statistics(m, i, share_threshold) for m, i in zip(pseudo_maps, insides)]
        entry["sample_score"], entry["pseudo_lesion_auroc"] = choose_statistic(clean, pseudo)
        validation["maps"][kind] = entry
    return validation, calibrations


def _item_thresholds(results) -> dict:
    from uadcore.metrics import threshold_at_fpr

    values = np.concatenate([np.asarray(r.item_scores, float) for r in results if r.item_scores is not None] or [np.zeros(0)])
    return {str(fpr): threshold_at_fpr(values, fpr) for fpr in FPR_LEVELS}
