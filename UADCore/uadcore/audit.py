"""The out-of-fold audit of a training set: every scan scored by a model that never saw it.

The scans are split into k folds (drawn with the seed). For each fold a run of the
chosen model (a real run folder, ``OUT/folds/fold-K``, without outlier removal or a
validation hold-out, its scans prepared with the deformable registration unless
the plan says otherwise) trains on the other k-1 folds and maps the held-out fold (with
the model's audit map: for `normative` ``near-z``, which forgives a voxel of
misalignment, `Normative.near_z`). So
no map comes from a model that could learn its scan's lesion. The maps are then
smoothed by a Gaussian of one voxel (a lesion is a blob, noise a voxel) and
calibrated together: each against the per-voxel mean and spread of everybody
else's out-of-fold maps (leave one out, `uadcore.score.calibrate.each_left_out`),
so that a voxel counts as abnormal for a scan when it is abnormal among this very
set of scans (the few contaminated ones rarely share a voxel), and only where at
least half of the set has brain. Every scan gets
its sample score (the mean of the highest 1 %, 0.2 % and 0.05 % of its calibrated
map, each as a multiple of the set's median of it, the highest of the three:
`uadcore.score.out_of_fold.sample_scores`), its
percentile among the others' scores, and its map's top region: where the map peaks
(RAS mm on the scan's own grid) and how large the connected region above the
set's 5 % voxel threshold around that peak is (ml). The scans are ranked by score,
the most suspicious first; scans labelled unhealthy in a manifest are counted in
the top of the ranking (recall at k), so an audit of a set with known
contamination is its own measurement.

`uadcore.score.out_of_fold` holds what a run's outlier removal by the audit
(``removal_score audit``) shares with it: the folds, the calibration on the set,
and the same audit with `normative` in memory.

Output folder: audit.csv (the ranking), scans.csv (the scans audited), audit.json
(their source, the plan, the set's voxel thresholds), folds/ (the k runs and their training
manifests), maps/ (with ``maps``: each scan's calibrated map as NIfTI).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass

import numpy as np

from uadcore.errors import UADError, UADWarning
from uadcore.io import ScanEntry, load_dataset, write_manifest
from uadcore.io.atomic import atomic_path
from uadcore.io.run_files import AUDIT_NAME, AUDIT_PLAN, AUDITED_SCANS
from uadcore.score.calibrate import MIN_SCANS
from uadcore.score.out_of_fold import (FOLDS, REGISTRATION, calibrated_on_the_set, fewest_scans, folds_of, found_in_top_k,
                                       write_audit_csv)

REGION_FPR = "0.05"  # the set's voxel threshold that outlines a scan's top region


@dataclass(frozen=True)
class AuditPlan:
    """What an audit trains and how it splits: ``model`` and its ``size`` (None: the
    paper's), ``folds`` (k), ``seed``, the runs' ``train`` settings over the
    model's defaults (epochs, ...), and the ``map`` kind it ranks by (None: the
    model's audit map, `ModelSpec.audit_map`, else its default map)."""

    model: str = "normative"
    folds: int = FOLDS
    seed: int = 0
    size: str | None = None
    train: tuple = ()  # (setting, value) pairs
    map: str | None = None
    registration: str = REGISTRATION  # of the brain preparation (`uadcore.score.out_of_fold.REGISTRATION`)

    def preset_params(self) -> dict:
        """The preset options of the model the audit prepares and trains with (its
        size, the registration), one decision for the preparation and every fold."""
        from uadcore.train.config import preset_params

        return preset_params(self.model, self.size, dict(self.train).get("preset_params"), registration=self.registration)

    def map_kind(self) -> str:
        """The map kind the audit ranks by; a kind the model does not offer is bad input."""
        from uadcore.models import MODELS

        spec = MODELS[self.model]
        kind = self.map or spec.audit_map or spec.maps[0]
        if kind not in spec.maps:
            raise UADError(f"map '{kind}': model {self.model} offers {', '.join(spec.maps)}")
        return kind


def run_audit(data: str, out: str, plan: AuditPlan = AuditPlan(), device: str = "auto", workers: int | None = None,
              maps: bool = False, progress: bool = True) -> dict:
    """Audit the scans of ``data`` (a folder or manifest) into the new folder ``out``;
    returns the summary (`summary`), its ``rows`` the ranking as in audit.csv."""
    from uadcore.io.outputs import data_folders, enclosing_folder

    kind = plan.map_kind()
    entries = load_dataset(data)
    if len(entries) < fewest_scans(plan.folds):
        raise UADError(f"{data}: {len(entries)} scans; an audit in {plan.folds} folds needs at least {fewest_scans(plan.folds)}")
    out = os.path.abspath(out)
    inside = enclosing_folder(out, ([data] if os.path.isdir(data) else []) + data_folders(entries))
    if inside is not None:
        raise UADError(f"{out}: lies inside the input folder {inside}; UAD never writes there, choose another --out")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UADError(f"{out}: exists and is not empty; choose a new folder for the audit")
    write_manifest(entries, os.path.join(out, AUDITED_SCANS))  # what the audit ranked: a review exports from it
    about = {"data": os.path.realpath(data), **dataclasses.asdict(plan), "map": kind}
    _write_json(about, os.path.join(out, AUDIT_PLAN))
    mapped = map_out_of_fold(entries, out, plan, device, workers, progress)
    rows, thresholds = _calibrated_together(mapped, os.path.join(out, "maps") if maps else None)
    rows = rank(rows)
    write_audit_csv(rows, os.path.join(out, AUDIT_NAME))
    # the set's voxel thresholds (by false-positive share among the set's voxels): a viewer shows a map above them
    _write_json({**about, "voxel_thresholds": thresholds, "region_fpr": REGION_FPR}, os.path.join(out, AUDIT_PLAN))
    return summary(rows, out, plan)


def map_out_of_fold(entries: list[ScanEntry], out: str, plan: AuditPlan, device: str = "auto", workers: int | None = None,
                    progress: bool = True) -> list[tuple[dict, object]]:
    """The raw out-of-fold maps of ``entries``: each prepared once, the folds' runs
    trained into ``out``/folds, every scan mapped by the run that did not see it.
    Returns (audit row, `ScanScore` with the raw map, or None for a scan that could
    not be prepared: its row says why) of every scan."""
    from uadcore.progress import progress_bar

    problems = _prepare(entries, plan, workers, progress)  # once: the folds read them from the cache
    mapped = [({"path": e.path, "label": e.label or "", "problem": problems[e.path]}, None) for e in entries if e.path in problems]
    entries = [e for e in entries if e.path not in problems]
    fold_of, kind = folds_of(len(entries), plan.folds, plan.seed), plan.map_kind()
    with progress_bar(total=plan.folds, desc="audit", unit="fold", enabled=progress) as bar:
        for fold in range(plan.folds):
            run = _train_fold(out, fold, [e for e, f in zip(entries, fold_of) if f != fold], plan, device, workers)
            mapped += _map_fold(run, fold, [e for e, f in zip(entries, fold_of) if f == fold], kind, device, workers)
            bar.update()
    return mapped


def _write_json(value: dict, path: str) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1)


def _prepare(entries: list[ScanEntry], plan: AuditPlan, workers, progress: bool) -> dict:
    """Prepare every scan for the model once (into the cache, where the folds' runs
    read them); returns {path: why} of those that cannot be prepared, left out."""
    from uadcore.models import MODELS
    from uadcore.preprocess import make_preset
    from uadcore.preprocess.dataset import prepare_scans

    spec = MODELS[plan.model]
    preset = make_preset(spec.preset, **spec.preset_options(plan.preset_params()))
    problems = {}
    prepare_scans([ScanEntry(e.path, brain=e.brain) for e in entries], preset, workers, progress, problems)
    return problems


def _train_fold(out: str, fold: int, train_entries: list[ScanEntry], plan: AuditPlan, device: str, workers) -> str:
    """The run of fold ``fold``: trained on all of ``train_entries``, without outlier
    removal (the audit is the curation) or a validation hold-out (the whole set is
    the reference, `_calibrated_together`)."""
    from uadcore.models import MODELS
    from uadcore.train import Events, TrainConfig, train

    folder = os.path.join(out, "folds")
    manifest = write_manifest(train_entries, os.path.join(folder, f"fold-{fold + 1}-train.csv"))
    spec = MODELS[plan.model]
    values = {**spec.train, **dict(plan.train)}
    values.update(data=manifest, model=plan.model, seed=plan.seed + fold, outlier_removal=False, device=device,
                  workers=workers or 0, val_fraction=0.0)
    if plan.size == "small":
        values["model_params"] = {**spec.small, **values.get("model_params", {})}
    values["preset_params"] = plan.preset_params()
    run = os.path.join(folder, f"fold-{fold + 1}")
    with warnings.catch_warnings():  # no validation scans, as intended
        warnings.filterwarnings("ignore", r".*no validation scans held out", UADWarning)
        train(TrainConfig.from_dict(values, source="uad audit"), run, events=Events(progress=False))
    return run


def _map_fold(run: str, fold: int, held_out: list[ScanEntry], kind: str, device: str, workers) -> list[tuple[dict, object]]:
    """(audit row, `ScanScore` with the raw ``kind`` map, or None for a scan that could
    not be prepared) of each scan of one fold, mapped by the run that did not see it."""
    from uadcore.score.scorer import Scorer

    scorer = Scorer(run, device=device, raw=True)
    mapped = []
    for entry, (_, result, _) in zip(held_out, scorer.score_many(held_out, kind, workers, progress=False)):
        row = {"path": entry.path, "label": entry.label or "", "fold": fold + 1, "run": run}
        mapped.append(({**row, "problem": result}, None) if isinstance(result, str) else (row, result))
    return mapped


def _calibrated_together(mapped: list[tuple[dict, object]], maps_folder: str | None) -> tuple[list[dict], dict]:
    """The audit rows: every map calibrated leave-one-out on all the others, its
    sample score, percentile among the others, top region (and file, with
    ``maps_folder``); and the set's voxel thresholds ({fpr: value})."""
    from uadcore.io import write_nifti
    from uadcore.io.outputs import ANOMALY_MAP, map_names
    from uadcore.score.calibrate import shares_grid

    good = [(row, result) for row, result in mapped if result is not None]
    problems = [row for row, result in mapped if result is None]
    if len(good) < MIN_SCANS + 2 or not shares_grid([r.prepared for _, r in good]):
        raise UADError(f"{len(good)} scans could be mapped on one grid; an audit needs at least {MIN_SCANS + 2}")
    maps = np.stack([r.model_map for _, r in good])
    regions = np.stack([np.asarray(r.prepared.region, bool) for _, r in good])
    calibrated, thresholds, scores = calibrated_on_the_set(maps, regions)
    del maps
    threshold = thresholds[REGION_FPR]
    names = map_names([row["path"] for row, _ in good])
    rows = []
    for index, ((row, result), model_map) in enumerate(zip(good, calibrated)):
        peak, region_ml = top_region(model_map, result.prepared, threshold)
        others = np.delete(scores, index)
        row = {**row, "score": float(scores[index]), "percentile_in_set": round(100.0 * float(np.mean(others < scores[index])), 1),
               "peak_ras_mm": peak, "region_ml": region_ml}
        if maps_folder is not None:
            row["map"] = write_nifti(result.prepared.to_scan(model_map), result.prepared.scan_grid, os.path.join(maps_folder, names[index]),
                                     f"{ANOMALY_MAP} (out of fold, calibrated on the set)")
        rows.append(row)
    return rows + problems, thresholds


def top_region(model_map: np.ndarray, prepared, threshold: float | None) -> tuple[list[float], float | None]:
    """(the RAS point in mm of the centre of the scan voxel that holds the highest
    voxel of ``model_map`` (on ``prepared``'s model grid), the volume in ml of the connected
    region above ``threshold`` that holds it: 0 when the peak is below it; None
    without a threshold). Found on the model grid and carried to the scan as a point
    (`Prepared.to_scan_points`): no resampling of the map, which through a
    deformable registration takes seconds a scan."""
    from scipy import ndimage

    peak = np.unravel_index(int(np.argmax(model_map)), model_map.shape)
    on_scan = prepared.to_scan_points(prepared.grid.index_to_world(np.asarray([peak])))
    voxel = np.clip(np.round(prepared.scan_grid.world_to_index(on_scan)), 0, np.asarray(prepared.scan_grid.shape) - 1)
    point = [round(float(v), 1) for v in prepared.scan_grid.index_to_world(voxel)[0]]  # the scan voxel that holds it
    if threshold is None:
        return point, None
    if model_map[peak] <= threshold:
        return point, 0.0
    labels, _ = ndimage.label(model_map > threshold)
    voxels = int(np.count_nonzero(labels == labels[peak]))
    return point, round(voxels * prepared.scan_ml_per_voxel(), 2)


def rank(rows: list[dict]) -> list[dict]:
    """``rows`` by score, the highest (the most suspicious) first, ranks from 1; scans
    that could not be scored last, unranked."""
    scored = sorted((r for r in rows if "problem" not in r), key=lambda r: -r["score"])
    return [{**r, "rank": i + 1} for i, r in enumerate(scored)] + [r for r in rows if "problem" in r]


def summary(rows: list[dict], out: str, plan: AuditPlan) -> dict:
    """What the audit found: with scans labelled unhealthy among the audited, how
    many of them are in the top k (k: their number), how many healthy scans that top
    k holds, and the AUROC of the score."""
    from uadcore.metrics import sample_metrics

    scored = [r for r in rows if "problem" not in r]
    result = {"out": out, "audit": os.path.join(out, AUDIT_NAME), "model": plan.model, "folds": plan.folds,
              "scans": len(rows), "problems": len(rows) - len(scored), "rows": rows}
    found = found_in_top_k(scored)
    if found is not None:
        result["unhealthy_in_top_k"], result["unhealthy"], result["healthy_in_top_k"] = found
        metrics = sample_metrics([r["score"] for r in scored], [r["label"] == "unhealthy" for r in scored])
        result["auroc"] = round(metrics["sample_auroc"], 4)
    return result
