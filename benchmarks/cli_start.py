"""How fast the `uad` command answers before it does any work: `--version`,
`--help`, a mistyped command, a command's own `--help` and a usage error, each
against a plain `python -c pass` measured in the same run (the interpreter's own
start), as the median of several runs.

    python -m benchmarks.cli_start --out benchmarks/cli_start [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks.machine import machine_info

CASES = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "uad --version": [sys.executable, "-m", "uadcore", "--version"],
    "uad --help": [sys.executable, "-m", "uadcore", "--help"],
    "uad trian (a mistyped command)": [sys.executable, "-m", "uadcore", "trian"],
    "uad train --help": [sys.executable, "-m", "uadcore", "train", "--help"],
    "uad score (a usage error: no run)": [sys.executable, "-m", "uadcore", "score"],
    "uad train --epochs x (a usage error)": [sys.executable, "-m", "uadcore", "train", "--epochs", "x"],
}


def seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for command in CASES.values():  # warm the file cache: the first start reads every library from disk
        subprocess.run(command, capture_output=True, check=False)
    measured = {name: seconds(command, args.repeats) for name, command in CASES.items()}
    baseline = measured["python -c pass (baseline)"]
    rows = {name: {"seconds": round(s, 3), "x_baseline": round(s / baseline, 1)} for name, s in measured.items()}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "cli_start.json"), "w", encoding="utf-8") as handle:
        json.dump({"machine": machine_info(), "repeats": args.repeats, "median": rows}, handle, indent=2)
    for name, row in rows.items():
        print(f"{name:40s} {row['seconds']:6.3f} s  {row['x_baseline']:5.1f}x")


if __name__ == "__main__":
    main()
