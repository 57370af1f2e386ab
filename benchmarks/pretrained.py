"""The pretrained models shipped in `uadcore.pretrained`: trained on all 145
healthy IXI T1 scans of ``../shared/realdata`` with the default preparation and
each model's own defaults (its CPU size), exported (float16), checked against the
run they came from, and measured on the real lesion cases.

    python -m benchmarks.pretrained --out DIR [--models normative,anomseg3d] [--ship]

1. `uad train` on ``healthy.csv`` (its 10 % validation hold-out calibrates the maps);
2. `uadcore.pretrained.export` of each run into ``DIR/<name>`` (with ``--ship``
   copied into the package, ``UADCore/uadcore/pretrained/<name>``, once it passes 3);
3. float16: every lesion case scored by the run and by its export, every map kind;
   the largest change of a sample score and of a map voxel is recorded (`float16_change`;
   the export is shipped only where both are under 1e-3);
4. `uad evaluate` of the export on each lesion group: voxel AP, best Dice, Dice
   at the healthy 1 % threshold, peak in lesion (no IXI scan is unseen by these
   models, so there are no sample-level numbers here: `benchmarks/realdata.py`
   measures those with a held-out split), and pictures of a few lesion cases
   (scan, map, mask contour at the slice with the most lesion).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from benchmarks.machine import machine_info
from benchmarks.realdata import GROUPS, REALDATA, group_of, pictures, uad
from uadcore.io import read_manifest, write_manifest

FLOAT16_TOLERANCE = 1e-3  # of a score, relative
SCHEDULES = {"normative": [], "anomseg3d": ["--size", "small"]}  # each model's own defaults, CPU-sized


def float16_change(run: str, shipped: str, entries) -> dict:
    """How far the export's results are from the run's, over ``entries`` (those
    that can be prepared), for every map kind: the largest change of the sample
    score (the run's chosen statistic) relative to it, of a map voxel relative to
    the map's maximum, and of the `share` statistic (a count of voxels above a
    threshold: one voxel at the threshold flips it, so it is reported apart)."""
    from uadcore.preprocess.dataset import prepare_scans
    from uadcore.score.scorer import Scorer

    full, half = Scorer(run, device="cpu"), Scorer(shipped, device="cpu")
    # the 3 post-contrast cases that fail registration are left out: the run cannot score them either
    results = [r for r in prepare_scans(entries, full.preset, progress=False, problems={}) if r is not None]
    prepared, paths = [r[0] for r in results], [f"scan {i}" for i in range(len(results))]
    worst = {"score": 0.0, "map_voxel": 0.0, "share": 0.0}
    for kind in full.kinds:
        for a, b in zip(full.score_prepared(prepared, paths, kind), half.score_prepared(prepared, paths, kind)):
            worst["score"] = max(worst["score"], abs(a.score - b.score) / max(abs(a.score), 1e-12))
            worst["map_voxel"] = max(worst["map_voxel"], float(abs(a.model_map - b.model_map).max() / max(a.model_map.max(), 1e-12)))
            shares = [name for name in a.sample_scores if name.endswith("share")]
            worst["share"] = max([worst["share"]] + [abs(a.sample_scores[n] - b.sample_scores[n]) / max(abs(a.sample_scores[n]), 1e-12)
                                                     for n in shares])
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", default="normative,anomseg3d")
    parser.add_argument("--ship", action="store_true", help="export into the package (UADCore/uadcore/pretrained)")
    args = parser.parse_args()
    from uadcore import pretrained

    if not os.path.isdir(REALDATA):
        raise SystemExit(f"{REALDATA}: no real data here (set UAD_REALDATA)")
    os.makedirs(args.out, exist_ok=True)
    healthy = os.path.join(REALDATA, "healthy.csv")
    lesions = read_manifest(os.path.join(REALDATA, "lesions.csv"))
    result_path = os.path.join(args.out, "pretrained.json")
    result = {"benchmark": "pretrained", "machine": machine_info(), "trained_on": healthy, "models": {}}
    if os.path.exists(result_path):
        with open(result_path, encoding="utf-8") as handle:
            result["models"] = json.load(handle).get("models", {})
    for model in args.models.split(","):
        run = os.path.join(args.out, f"run-{model}")
        command = ["train", "--data", healthy, "--model", model, "--out", run, "--device", "cpu", *SCHEDULES[model]]
        started = time.perf_counter()
        summary = uad(*command)
        train_s = round(time.perf_counter() - started, 1)
        shipped = os.path.join(args.out, model)
        half_weights = True
        checkpoint = pretrained.export(run, shipped)
        change = float16_change(run, shipped, lesions)
        if max(change["score"], change["map_voxel"]) > FLOAT16_TOLERANCE:  # then only the calibration in float16
            half_weights = False
            checkpoint = pretrained.export(run, shipped, half_weights=False)
            change = float16_change(run, shipped, lesions)
        groups = {}
        for group in [*GROUPS, "all lesions"]:
            cases = lesions if group == "all lesions" else [e for e in lesions if group_of(e) == group]
            manifest = write_manifest(cases, os.path.join(args.out, f"lesions-{group.replace(' ', '-')}.csv"))
            report = uad("evaluate", shipped, "--data", manifest)
            groups[group] = {key: report.get(key) for key in ("voxel_auroc", "voxel_ap", "best_dice", "dice_at_healthy_fpr",
                                                              "peak_in_lesion", "sample_score", "calibrated")}
            groups[group]["cases"] = len(cases) - len(report["skipped"])
        from uadcore.models import MODELS

        drawn = pictures(shipped, lesions, args.out, MODELS[model].maps[0])  # scan, map, mask contour: look at them
        result["models"][model] = {"command": "uad " + " ".join(command), "train_s": train_s, "scans": summary["scans"],
                                   "validation": summary["validation"], "removed": summary["removed"],
                                   "checkpoint_bytes": os.path.getsize(checkpoint),
                                   "float16_max_relative_change": change, "float16_weights": half_weights, "pictures": drawn, "groups": groups}
        print(json.dumps({model: result["models"][model]}, indent=1), flush=True)
        with open(result_path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
        if max(change["score"], change["map_voxel"]) > FLOAT16_TOLERANCE:
            raise SystemExit(f"{model}: float16 changes a score or map by {change} (over {FLOAT16_TOLERANCE}); not shipped")
        if args.ship:  # its MODEL_CARD.md is written beside it by hand, from these numbers
            os.makedirs(os.path.join(pretrained.ROOT, model), exist_ok=True)
            shutil.copyfile(checkpoint, os.path.join(pretrained.ROOT, model, pretrained.CHECKPOINT))


if __name__ == "__main__":
    main()
