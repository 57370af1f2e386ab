"""Real scans: train on healthy IXI T1, evaluate on held-out IXI and the lesion cases
of ``../shared/realdata`` (never copied into the repository), per lesion kind.

    python -m benchmarks.realdata --out DIR [--models normative,ae3d,vae3d] [--registration deformable] [--prepare-only]

1. a fixed subject-level split of the 145 IXI scans: 25 held out (drawn with seed
   0), 120 for training (of which `uad train` holds out its own 10 % validation);
2. every scan prepared once (deepbet, N4, registration, intensities; cached), the
   per-scan seconds of each step recorded;
3. per model, `uad train` in its CPU configuration (models measured earlier in
   ``DIR`` stay in its table), then `uad evaluate` on the
   held-out IXI plus each lesion group, and on everything pooled; and on each
   group's lesion scans alone (voxel AUROC, AP and best Dice over their brains
   only, the pool of the literature's lesion-segmentation numbers);
4. JSON, a markdown table and PNGs of a few lesion cases (scan, map, mask contour).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import numpy as np

from benchmarks.machine import machine_info, write_result
from uadcore.io import ScanEntry, read_manifest, write_manifest

REALDATA = os.environ.get("UAD_REALDATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "realdata"))
HELD_OUT = 25
GROUPS = {  # lesion kind -> case name prefix (lesions-info.csv)
    "BraTS 2018 native-T1 gliomas": ("brats18-",),
    "native-T1 gliomas (TCGA)": ("tcga-",),
    "white-matter lesions": ("wmh-",),
    "scans with skull": ("skull-",),
    "post-contrast gliomas": ("t1c-",),
}
# the CPU configurations: `--size small` and the demo's schedule for the 3D models; the
# slice and patch models see ~50 slices or ~1,000 patches a scan, so they take larger
# batches and fewer epochs for minutes of training
CPU_SCHEDULE = ["--size", "small", "--epochs", "40", "--outlier-every", "5", "--reinit-at", "15", "--batch-size", "8",
                "--checkpoint-every", "10"]
CPU_SCHEDULES = {
    "normative": [],
    "vae2d": ["--size", "small", "--epochs", "20", "--outlier-every", "5", "--reinit-at", "none", "--batch-size", "64",
              "--checkpoint-every", "10"],
    "mae2d": ["--size", "small", "--epochs", "20", "--classifier-epochs", "4", "--outlier-every", "5", "--batch-size", "64",
              "--checkpoint-every", "10"],
    "patchae2d": ["--size", "small", "--epochs", "10", "--outlier-every", "5", "--batch-size", "200", "--checkpoint-every", "5"],
    "anomseg3d": ["--size", "small"],  # its own defaults: what a user gets
}
PICTURE_CASES = ("tcga-du-7294", "wmh-301D00252-20040121", "skull-scan1", "t1c-brats_2013_pat0001_1", "brats18-cbica-aab",
                 "brats18-cbica-asa", "brats18-cbica-ask", "brats18-tcia02-471", "brats18-tcia04-192")


def split(out: str) -> tuple[str, str, list[ScanEntry]]:
    """(train manifest, held-out healthy manifest, lesion entries), written into ``out``."""
    healthy = read_manifest(os.path.join(REALDATA, "healthy.csv"))
    held = set(random.Random(0).sample(range(len(healthy)), HELD_OUT))
    train = write_manifest([e for i, e in enumerate(healthy) if i not in held], os.path.join(out, "train.csv"))
    test = write_manifest([e for i, e in enumerate(healthy) if i in held], os.path.join(out, "test-healthy.csv"))
    return train, test, read_manifest(os.path.join(REALDATA, "lesions.csv"))


def group_of(entry: ScanEntry) -> str:
    case = os.path.basename(os.path.dirname(entry.path))
    return next(name for name, prefixes in GROUPS.items() if case.startswith(prefixes))


def prepare_all(entries: list[ScanEntry], registration: str = "affine") -> dict:
    """Prepare (and cache) every scan; per-step seconds (median, max) and failures."""
    from uadcore.preprocess import make_preset
    from uadcore.preprocess.dataset import prepare_scans

    problems: dict = {}
    started = time.perf_counter()
    results = prepare_scans(entries, make_preset("brain3d-behrendt", registration=registration), problems=problems)
    wall = time.perf_counter() - started
    steps: dict = {}
    correlations = []
    for result in results:
        if result is None:
            continue
        for step, seconds in result[0].quality.get("seconds", {}).items():
            steps.setdefault(step, []).append(seconds)
        correlations.append(result[0].quality.get("registration_correlation"))
    return {
        "scans": len(entries), "failed": problems, "wall_s": round(wall, 1),
        "seconds_per_scan": {s: {"median": round(float(np.median(v)), 2), "max": round(float(np.max(v)), 2), "n": len(v)}
                             for s, v in steps.items()},
        "registration_correlation": {"min": round(float(np.min(correlations)), 3), "median": round(float(np.median(correlations)), 3)},
    }


def uad(*args: str) -> dict:
    """Run the `uad` command in this process, return its JSON."""
    import contextlib
    import io

    from uadcore.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(list(args) + ["--json"])
    if code:
        raise RuntimeError(f"uad {' '.join(args)} exited {code}")
    return json.loads(buffer.getvalue())


def evaluate_groups(run: str, healthy_test: str, lesions: list[ScanEntry], out: str, kind: str) -> dict:
    """`uad evaluate` on held-out healthy + each lesion group, and on all of them."""
    healthy = read_manifest(healthy_test)
    rows = {}
    for group in [*GROUPS, "all lesions"]:
        cases = lesions if group == "all lesions" else [e for e in lesions if group_of(e) == group]
        manifest = write_manifest(healthy + cases, os.path.join(out, f"test-{group.replace(' ', '-')}.csv"))
        report = uad("evaluate", run, "--data", manifest, "--map", kind)
        rows[group] = {key: report.get(key) for key in ("sample_auroc", "sample_ap", "voxel_auroc", "voxel_ap", "best_dice",
                                                         "dice_at_healthy_fpr", "healthy_fpr_threshold", "peak_in_lesion",
                                                         "sample_score", "calibrated")}
        rows[group]["lesion_scans"] = len(cases) - sum(1 for e in report["skipped"] if e["label"] == "unhealthy")
        rows[group]["skipped"] = [e["path"] for e in report["skipped"]]
        # the literature's pool (and the issue-26 prototype's): the lesion scans' brains
        # alone, without the healthy scans' voxels, which lower AP by adding negatives
        alone = report.get("lesion_scans_only")
        if alone:
            rows[group]["lesion_scans_only"] = {key: alone.get(key) for key in ("voxel_auroc", "voxel_ap", "best_dice")}
    return rows


def pictures(run: str, lesions: list[ScanEntry], out: str, kind: str) -> list[str]:
    """Scan, map and lesion contour of a few cases, in the scan's own geometry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uadcore.io import read_mask, read_scan
    from uadcore.score.scorer import Scorer

    scorer = Scorer(run, device="cpu")
    written = []
    for entry in lesions:
        case = os.path.basename(os.path.dirname(entry.path))
        if case not in PICTURE_CASES:
            continue
        scan = read_scan(entry.path, need_3d=True)
        result = scorer.score(scan, kind)
        anomaly = result.scan_map()
        mask = read_mask(entry.mask, scan)
        k = int(np.argmax(mask.sum(axis=(0, 1))))  # the slice with the most lesion
        figure, axes = plt.subplots(1, 2, figsize=(8, 4))
        for axis, title in zip(axes, ("scan", f"{kind} map")):
            axis.imshow(np.rot90(scan.array[:, :, k]), cmap="gray")
            axis.set_title(f"{case}: {title}", fontsize=8)
            axis.axis("off")
        shown = np.ma.masked_less_equal(np.rot90(anomaly[:, :, k]), np.percentile(anomaly[anomaly > 0], 90) if (anomaly > 0).any() else 0)
        axes[1].imshow(shown, cmap="inferno", alpha=0.8)
        for axis in axes:
            axis.contour(np.rot90(mask[:, :, k]), [0.5], colors="cyan", linewidths=0.8)
        path = os.path.join(out, f"{os.path.basename(run)}-{case}.png")
        figure.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


def markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; {result['machine']['date']}.", "",
             "Preparation, seconds per scan (median / max): " + ", ".join(
                 f"{step} {v['median']} / {v['max']}" for step, v in result["prepare"]["seconds_per_scan"].items())
             + f"; failed: {len(result['prepare']['failed'])} of {result['prepare']['scans']}.", "",
             "| model | map | lesion group | cases | sample AUROC | sample AP | voxel AUROC | voxel AP | best Dice | Dice at 1 % healthy FPR | peak in lesion "
             "| lesion scans only: voxel AP | lesion scans only: best Dice | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(value):
        return "-" if value is None else f"{value:.3f}"

    for model, entry in result["models"].items():
        for group, row in entry["groups"].items():
            alone = row.get("lesion_scans_only", {})  # absent in tables made before it was measured
            made = f"{entry['map']}" + (f" ({'calibrated' if row['calibrated'] else 'raw'}, {row['sample_score']})" if row.get("sample_score") else "")
            lines.append(f"| {model} | {made} | {group} | {row['lesion_scans']} | {f(row['sample_auroc'])} | {f(row['sample_ap'])} | "
                         f"{f(row['voxel_auroc'])} | {f(row['voxel_ap'])} | {f(row['best_dice'])} | {f(row['dice_at_healthy_fpr'])} | "
                         f"{f(row.get('peak_in_lesion'))} | {f(alone.get('voxel_ap'))} | {f(alone.get('best_dice'))} | {entry['train_s']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for manifests, runs, results and pictures")
    parser.add_argument("--models", default="normative,ae3d,vae3d")
    parser.add_argument("--prepare-only", action="store_true", help="only prepare (and cache) every scan")
    parser.add_argument("--train-config", metavar="JSON", help="a uad train --config file for every model (e.g. model_params)")
    parser.add_argument("--registration", choices=["affine", "deformable"], default="affine",
                        help="the brain preparation's registration for every model (uad train --registration)")
    args = parser.parse_args()
    if not os.path.isdir(REALDATA):
        raise SystemExit(f"{REALDATA}: no real data here (set UAD_REALDATA)")
    os.makedirs(args.out, exist_ok=True)
    train, healthy_test, lesions = split(args.out)
    everything = read_manifest(train) + read_manifest(healthy_test) + lesions
    result = {"benchmark": "realdata", "machine": machine_info(), "registration": args.registration,
              "prepare": prepare_all(everything, args.registration), "models": {}}
    earlier = os.path.join(args.out, "realdata.json")
    if os.path.exists(earlier):  # models measured before in this folder stay in the table
        with open(earlier, encoding="utf-8") as handle:
            result["models"] = json.load(handle).get("models", {})
    print(json.dumps(result["prepare"], indent=1), flush=True)
    if args.prepare_only:
        return
    for model in args.models.split(","):
        run = os.path.join(args.out, f"run-{model}")
        started = time.perf_counter()
        command = ["train", "--data", train, "--model", model, "--out", run, "--device", "cpu",
                   "--registration", args.registration] + (["--config", args.train_config] if args.train_config else [])
        schedule = CPU_SCHEDULES.get(model, CPU_SCHEDULE)
        summary = uad(*command, *schedule)
        train_s = round(time.perf_counter() - started, 1)
        from uadcore.models import MODELS

        kind = MODELS[model].maps[0]
        started = time.perf_counter()
        groups = evaluate_groups(run, healthy_test, lesions, args.out, kind)
        result["models"][model] = {"map": kind, "train_s": train_s, "evaluate_s": round(time.perf_counter() - started, 1),
                                   "removed": summary["removed"], "excluded": summary.get("excluded", 0),
                                   "command": "uad " + " ".join(command + schedule),
                                   "groups": groups, "pictures": pictures(run, lesions, args.out, kind)}
        print(json.dumps({model: result["models"][model]}, indent=1), flush=True)
        write_result(args.out, "realdata", result, markdown(result))


if __name__ == "__main__":
    main()
