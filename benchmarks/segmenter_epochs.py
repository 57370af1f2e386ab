"""Real scans: how the segmenter's lesion numbers move from epoch to epoch of one
training, and what the mean of its last epochs' weights gives.

    python -m benchmarks.segmenter_epochs --out DIR [--seeds 0,1,2] [--every 2] [--averages 16,21]

1. the split of `benchmarks.realdata` (120 IXI scans to train, of which the run holds
   out its own validation scans); per seed, `uad train --model anomseg3d --size small
   --checkpoint-every 1 --events` as a process, each epoch's checkpoint copied when
   its "checkpoint" event arrives (the file is replaced atomically; its own epoch is
   read back);
2. the weights after every ``--every``-th epoch and the last, and the mean of the
   weights after the epochs from each of ``--averages`` to the last: raw maps of the
   run's validation scans and of the lesion cases, calibrated on the validation scans
   as a run is; voxel AP, best Dice and peak in lesion over the lesion scans' brains
   alone (the literature's pool; `uad evaluate`'s ``lesion_scans_only``), per group;
3. JSON and a markdown table in ``DIR``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

from benchmarks.machine import machine_info, write_result
from benchmarks.realdata import GROUPS, REALDATA, group_of, split
from uadcore.io import read_manifest

REPORTED = ("BraTS 2018 native-T1 gliomas", "native-T1 gliomas (TCGA)", "white-matter lesions", "all lesions")


def train_keeping_every_epoch(train_csv: str, run: str, seed: int, copies: str, epochs: int | None = None) -> None:
    """`uad train` of the small segmenter; each epoch's checkpoint copied into ``copies``."""
    os.makedirs(copies, exist_ok=True)
    config = os.path.join(copies, "config.json")
    with open(config, "w", encoding="utf-8") as handle:
        json.dump({"seed": seed, "checkpoint_every": 1}, handle)
    command = [sys.executable, "-m", "uadcore", "train", "--data", train_csv, "--model", "anomseg3d", "--size", "small",
               "--out", run, "--device", "cpu", "--config", config, "--events"] + (["--epochs", str(epochs)] if epochs else [])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    for line in process.stdout:
        event = json.loads(line)
        if event["event"] == "checkpoint":
            shutil.copy(event["path"], os.path.join(copies, f"epoch-{event['epoch']:04d}.pt"))
    if process.wait():
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}")


def weights_by_epoch(copies: str) -> dict:
    """{epoch: the raw checkpoint dict} of the copies (their own epoch, read back)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(copies, "epoch-*.pt"))):
        stored = torch.load(path, weights_only=True)
        found.setdefault(int(stored["epoch"]), stored)
    return found


def mean_weights(checkpoints: list[dict]) -> dict:
    """The mean of the checkpoints' float weights (integer buffers: the last one's)."""
    last = checkpoints[-1]["model"]
    return {name: (sum(c["model"][name].double() for c in checkpoints) / len(checkpoints)).to(value.dtype)
            if value.is_floating_point() else value for name, value in last.items()}


def lesion_numbers(run: str, weights: dict, stored: dict, validation: list, lesions: list, folder: str) -> dict:
    """Per group of `REPORTED`: voxel AP, best Dice, peaks in lesion of ``weights``,
    calibrated on the ``validation`` scans' raw maps."""
    from uadcore.metrics import best_dice_threshold, voxel_metrics
    from uadcore.score import calibrate
    from uadcore.score.scorer import Scorer

    os.makedirs(folder, exist_ok=True)
    shutil.copy(os.path.join(run, "config.json"), folder)
    torch.save({**stored, "model": weights, "done": True}, os.path.join(folder, "checkpoint.pt"))  # a scorable copy
    scorer = Scorer(folder, device="cpu", raw=True)

    def raw_maps(entries):
        return [(entry, result.model_map, result.prepared.region, mask) for entry, result, mask
                in scorer.score_many(entries, "probability", progress=False, masks=True) if not isinstance(result, str)]

    healthy = raw_maps(validation)
    calibration = calibrate.fit(np.stack([m for _, m, _, _ in healthy]), np.stack([r for _, _, r, _ in healthy]))
    cases = raw_maps(lesions)
    numbers = {}
    for group in REPORTED:
        chosen = [c for c in cases if group == "all lesions" or group_of(c[0]) == group]
        values, truth, peaks = [], [], 0
        for _, model_map, region, mask in chosen:
            calibrated = calibration.apply(model_map, region)
            values.append(calibrated[region])
            truth.append(mask[region])
            peaks += bool(mask.flat[int(np.argmax(np.where(region, calibrated, -np.inf)))])
        values, truth = np.concatenate(values), np.concatenate(truth)
        numbers[group] = {"voxel_ap": round(voxel_metrics(values, truth)["voxel_ap"], 4),
                          "best_dice": round(best_dice_threshold(values, truth)[1], 4), "peaks": peaks, "cases": len(chosen)}
    return numbers


def markdown(result: dict) -> str:
    lines = ["| seed | weights | val loss | " + " | ".join(f"{g}: AP / best Dice / peak" for g in REPORTED) + " |",
             "|---|---|---|" + "---|" * len(REPORTED)]
    for seed, rows in result["seeds"].items():
        for row in rows:
            cells = [f"{row['groups'][g]['voxel_ap']:.3f} / {row['groups'][g]['best_dice']:.3f} / "
                     f"{row['groups'][g]['peaks']} of {row['groups'][g]['cases']}" for g in REPORTED]
            loss = f"{row['val_loss']:.3f}" if row.get("val_loss") is not None else ""
            lines.append(f"| {seed} | {row['weights']} | {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--every", type=int, default=2, help="measure every N-th epoch's weights (and the last)")
    parser.add_argument("--averages", default="16,21", help="the first epochs of the weight means measured")
    parser.add_argument("--epochs", type=int, help="epochs of each training (default: the segmenter's own; fewer for a quick check)")
    args = parser.parse_args()
    if not os.path.isdir(REALDATA):
        raise SystemExit(f"{REALDATA}: no real data here (set UAD_REALDATA)")
    os.makedirs(args.out, exist_ok=True)
    train_csv, _, lesions = split(args.out)
    lesions = [e for e in lesions if e.label == "unhealthy" and group_of(e) in GROUPS]
    result = {"benchmark": "segmenter_epochs", "machine": machine_info(), "seeds": {}}
    for seed in [int(s) for s in args.seeds.split(",")]:
        run, copies = os.path.join(args.out, f"run-seed{seed}"), os.path.join(args.out, f"epochs-seed{seed}")
        train_keeping_every_epoch(train_csv, run, seed, copies, args.epochs)
        kept = {e.path for e in read_manifest(os.path.join(run, "kept.csv"))}
        validation = [e for e in read_manifest(train_csv) if e.path not in kept]
        epochs = weights_by_epoch(copies)
        last = max(epochs)
        measured = [(f"epoch {e}", epochs[e], epochs[e]["model"]) for e in sorted(epochs) if e % args.every == 0 or e == last]
        for first in [int(a) for a in args.averages.split(",")]:
            chosen = [epochs[e] for e in sorted(epochs) if e >= first]
            measured.append((f"mean of epochs {first}-{last}", chosen[-1], mean_weights(chosen)))
        rows = []
        for name, stored, weights in measured:
            val_loss = json.loads(stored["history"])[-1].get("val_loss") if name.startswith("epoch") else None  # JSON text in the file
            groups = lesion_numbers(run, weights, stored, validation, lesions, os.path.join(args.out, "scoring"))
            rows.append({"weights": name, "val_loss": val_loss, "groups": groups})
            print(json.dumps(rows[-1]), flush=True)
        result["seeds"][str(seed)] = rows
        write_result(args.out, "segmenter_epochs", result, markdown(result))


if __name__ == "__main__":
    main()
