"""Scoring many raw scans: one `uad score` call against one call a scan.

    python -m benchmarks.score_many [--scans 20] [--out DIR] [--realdata ../shared/realdata]
    python -m benchmarks.score_many --run RUN --data MANIFEST --device cuda --baseline-scans 0 --out DIR

A `normative` run is trained on 10 raw IXI scans (5 held out to calibrate); then
``--scans`` other raw IXI scans (with skull: deepbet, N4 and the registration each
time) are scored twice, each time with an empty preparation cache: by one `uad
score RUN SCAN... --out FOLDER` (worker processes prepare while the model scores)
and, the baseline, by one `uad score RUN SCAN --out MAP` process a scan, as a shell
loop would. Both are timed as processes, from start to the last map written;
every scan must have a score. Results in benchmarks/score_many/. With ``--run`` and
``--data`` (a GPU machine: synthetic skull-stripped scans, no deepbet there) the
given run scores the manifest's scans, and ``--baseline-scans`` of them (0: none)
are scored one process a scan.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.machine import machine_info

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN_SCANS = 10


def uad_process(args: list[str], cache: str) -> float:
    """Seconds of one `uad` process with the (new, empty) preparation cache in ``cache``."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "uadcore", *args], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "UAD_CACHE_DIR": cache})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=20)
    parser.add_argument("--realdata", default=os.path.join(HERE, "..", "..", "shared", "realdata"))
    parser.add_argument("--out", default=os.path.join(HERE, "score_many"))
    parser.add_argument("--run", help="score with this run (default: train normative on raw IXI scans)")
    parser.add_argument("--data", metavar="MANIFEST", help="score these scans (default: raw IXI scans)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--baseline-scans", type=int, help="scans scored one process a scan (default: all)")
    args = parser.parse_args()
    from uadcore.io import read_manifest, write_manifest

    work = tempfile.mkdtemp(prefix="uad-score-many-")
    run = args.run
    if args.data:
        scans = [e.path for e in read_manifest(args.data)][: args.scans]
        what = f"{args.data}: read, prepare, score on {args.device}, map back, write"
    else:
        healthy = read_manifest(os.path.join(args.realdata, "healthy.csv"))
        scans = [e.path for e in healthy[TRAIN_SCANS : TRAIN_SCANS + args.scans]]
        what = "raw IXI T1 with skull: read, deepbet, N4, registration, score, map back, write"
    if run is None:
        train = write_manifest(healthy[:TRAIN_SCANS], os.path.join(work, "train.csv"))
        run = os.path.join(work, "run")
        train_s = uad_process(["train", "--data", train, "--model", "normative", "--val-fraction", "0.5", "--out", run],
                              os.path.join(work, "cache-train"))
        print(f"trained normative in {train_s:.0f} s", flush=True)

    device = ["--device", args.device]
    one_call = uad_process(["score", run, *scans, "--out", os.path.join(work, "many"), *device], os.path.join(work, "cache-many"))
    print(f"one call: {one_call:.1f} s", flush=True)
    baseline, n_baseline = 0.0, len(scans) if args.baseline_scans is None else args.baseline_scans
    for index, scan in enumerate(scans[:n_baseline]):
        baseline += uad_process(["score", run, scan, "--out", os.path.join(work, f"one-{index}.nii.gz"), *device],
                                os.path.join(work, "cache-one"))
    print(f"one call a scan: {baseline:.1f} s for {n_baseline} scans", flush=True)
    baseline = baseline * len(scans) / n_baseline if n_baseline else None  # per scan, as for all of them

    with open(os.path.join(work, "many", "scores.csv"), newline="") as handle:
        many_scores = [float(row["score"]) for row in csv.DictReader(handle)]
    agree = len(many_scores) == len(scans)

    result = {"benchmark": "score_many", "machine": machine_info(), "scans": len(scans), "run": run, "what": what,
              "device": args.device, "one_call_s": one_call, "one_call_scans_per_s": len(scans) / one_call,
              "all_scored": agree, "baseline_scans": n_baseline, "target_speedup": 1.8}
    if baseline:
        result.update({"one_call_a_scan_s": baseline, "speedup": baseline / one_call,
                       "one_call_a_scan_scans_per_s": len(scans) / baseline})
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    machine = result["machine"]
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(f"{machine['date']}, {machine['cpu']} ({machine['cores']} cores), torch {machine.get('torch')}, "
                     f"GPU {machine.get('gpu')}; {what}\n\n"
                     "| scoring | scans | seconds | scans/s |\n|---|---:|---:|---:|\n"
                     f"| one `uad score` call, workers preparing while the model scores | {len(scans)} | {one_call:.1f} | "
                     f"{len(scans) / one_call:.2f} |\n")
        if baseline:
            handle.write(f"| one `uad score` call a scan (baseline; {n_baseline} measured) | {len(scans)} | {baseline:.1f} | "
                         f"{len(scans) / baseline:.2f} |\n\nSpeed-up {baseline / one_call:.2f}x (target 1.8x); each with "
                         "an empty preparation cache.\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
