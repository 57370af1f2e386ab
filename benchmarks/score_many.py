"""Scoring many raw scans: one `uad score` call against one call a scan.

    python -m benchmarks.score_many [--scans 20] [--out DIR] [--realdata ../shared/realdata]

A `normative` run is trained on 10 raw IXI scans (5 held out to calibrate); then
``--scans`` other raw IXI scans (with skull: deepbet, N4 and the registration each
time) are scored twice, each time with an empty preparation cache: by one `uad
score RUN SCAN... --out FOLDER` (worker processes prepare while the model scores)
and, the baseline, by one `uad score RUN SCAN --out MAP` process a scan, as a shell
loop would. Both are timed as processes, from start to the last map written;
every scan must have a score. Results in benchmarks/score_many/.
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
    """Seconds of one `uad` process with the preparation cache in ``cache``."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "uadcore", *args], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "UAD_CACHE_DIR": cache})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=20)
    parser.add_argument("--realdata", default=os.path.join(HERE, "..", "..", "shared", "realdata"))
    parser.add_argument("--out", default=os.path.join(HERE, "score_many"))
    args = parser.parse_args()
    from uadcore.io import read_manifest, write_manifest

    healthy = read_manifest(os.path.join(args.realdata, "healthy.csv"))
    work = tempfile.mkdtemp(prefix="uad-score-many-")
    train = write_manifest(healthy[:TRAIN_SCANS], os.path.join(work, "train.csv"))
    scans = [e.path for e in healthy[TRAIN_SCANS : TRAIN_SCANS + args.scans]]
    run = os.path.join(work, "run")
    train_s = uad_process(["train", "--data", train, "--model", "normative", "--val-fraction", "0.5", "--out", run],
                          os.path.join(work, "cache-train"))
    print(f"trained normative in {train_s:.0f} s", flush=True)

    one_call = uad_process(["score", run, *scans, "--out", os.path.join(work, "many")], os.path.join(work, "cache-many"))
    print(f"one call: {one_call:.1f} s", flush=True)
    baseline = 0.0
    for index, scan in enumerate(scans):
        baseline += uad_process(["score", run, scan, "--out", os.path.join(work, f"one-{index}.nii.gz")],
                                os.path.join(work, "cache-one"))
    print(f"one call a scan: {baseline:.1f} s", flush=True)

    with open(os.path.join(work, "many", "scores.csv"), newline="") as handle:
        many_scores = [float(row["score"]) for row in csv.DictReader(handle)]
    agree = len(many_scores) == len(scans)

    result = {"benchmark": "score_many", "machine": machine_info(), "scans": len(scans), "model": "normative",
              "what": "raw IXI T1 with skull: read, deepbet, N4, registration, score, map back, write",
              "one_call_s": one_call, "one_call_a_scan_s": baseline, "speedup": baseline / one_call,
              "one_call_scans_per_s": len(scans) / one_call, "one_call_a_scan_scans_per_s": len(scans) / baseline,
              "all_scored": agree, "target_speedup": 1.8}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    machine = result["machine"]
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(f"{machine['date']}, {machine['cpu']} ({machine['cores']} cores), torch {machine.get('torch')}\n\n"
                     "| scoring | scans | seconds | scans/s |\n|---|---:|---:|---:|\n"
                     f"| one `uad score` call, workers preparing while the model scores | {len(scans)} | {one_call:.1f} | "
                     f"{len(scans) / one_call:.2f} |\n"
                     f"| one `uad score` call a scan (baseline) | {len(scans)} | {baseline:.1f} | {len(scans) / baseline:.2f} |\n\n"
                     f"Speed-up {baseline / one_call:.2f}x (target 1.8x); each with an empty preparation cache.\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
