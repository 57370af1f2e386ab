"""Synthetic cohort speed: `uad synth` with one process per core against the plain
baseline of one process, in the same run.

    python -m benchmarks.synth_cohort [--subjects 100] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from benchmarks.machine import machine_info
from uadcore.synth import synthesize_cohort


def timed_cohort(subjects: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        synthesize_cohort(os.path.join(folder, "c"), healthy=subjects - subjects // 5, unhealthy=subjects // 5, seed=0, workers=workers, progress=False)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0))
    baseline = timed_cohort(args.subjects, workers=1)
    ours = timed_cohort(args.subjects, workers=cores)
    result = {
        "benchmark": "synth_cohort",
        "subjects": args.subjects,
        "baseline_one_process_s": round(baseline, 2),
        "one_process_per_core_s": round(ours, 2),
        "speedup": round(baseline / ours, 2),
        "subjects_per_s": round(args.subjects / ours, 2),
        "machine": machine_info(),
    }
    print(f"{'path':<24}{'seconds':>9}{'subjects/s':>12}")
    print(f"{'1 process (baseline)':<24}{baseline:>9.1f}{args.subjects / baseline:>12.2f}")
    print(f"{f'{cores} processes':<24}{ours:>9.1f}{args.subjects / ours:>12.2f}")
    print(f"speed-up {result['speedup']}x on {result['machine']['cpu']} ({cores} cores)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
