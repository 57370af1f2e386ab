"""How fast the anomaly segmenter learns its own task, measured without any lesion:
train `anomseg3d` (its CPU size) on healthy IXI scans of ``../shared/realdata``
as `uad train` does (its loss, Adam, batch 2), and every few steps score held-out
healthy scans with synthetic anomalies of one kind at a time (fixed seed): the
voxel AP of each kind, and the largest probability on the clean held-out scans.

    python -m benchmarks.segmenter_learning --out DIR [--steps 400] [--lr 5e-4,2e-3] [--seed 0]

A training setting (learning rate, loss, anomaly mix) can be chosen on this
measure, which needs no lesion case, before a `benchmarks.realdata` run tests
it on the real lesions. Shapes: the prepared scans (N, 1, 64, 77, 66).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from benchmarks.machine import machine_info
from benchmarks.realdata import REALDATA

TRAIN_SCANS, HELD_OUT_SCANS = 60, 8
PROBE = {"clean_share": 0.0, "max_regions": 1, "diameter_mm": (10.0, 50.0), "mass_effect_share": 0.0}
PROBE_SEED = 7


def prepared_images() -> torch.Tensor:
    """The first TRAIN_SCANS + HELD_OUT_SCANS healthy IXI scans, prepared (cached), (N, 1, I, J, K)."""
    from uadcore.io import read_manifest
    from uadcore.preprocess import make_preset
    from uadcore.preprocess.dataset import prepare_scans

    entries = read_manifest(os.path.join(REALDATA, "healthy.csv"))[: TRAIN_SCANS + HELD_OUT_SCANS]
    prepared = prepare_scans(entries, make_preset("brain3d-behrendt"))
    return torch.from_numpy(np.stack([np.asarray(p[0].image, np.float32) for p in prepared]))[:, None]


@torch.no_grad()
def probe_sets(held_out: torch.Tensor) -> dict:
    """Per anomaly kind, the held-out scans with one anomaly of it (fixed seed) and the
    truth inside their brains: {kind: (altered (N, 1, I, J, K), truth (voxels,) bool)}."""
    from uadcore.synth.anomalies import KINDS, AnomalySettings, insert_anomalies

    brain, sets = held_out > 0, {}
    for kind in KINDS:
        altered, mask = insert_anomalies(held_out, AnomalySettings(kinds=(kind,), **PROBE), torch.Generator().manual_seed(PROBE_SEED))
        sets[kind] = (altered, (mask[brain] > 0.5).numpy())
    return sets


@torch.no_grad()
def probe(model, held_out: torch.Tensor, sets: dict) -> dict:
    """Voxel AP of each anomaly kind of ``sets`` (`probe_sets`), and the clean scans' maximum."""
    from uadcore.metrics import voxel_metrics

    model.eval()
    brain, result = held_out > 0, {}
    for kind, (altered, truth) in sets.items():
        result[kind] = round(voxel_metrics(model.anomaly_probability(altered)[brain].numpy(), truth)["voxel_ap"], 3)
    result["clean_max"] = round(float(model.anomaly_probability(held_out).amax(dim=(1, 2, 3, 4)).mean()), 3)
    model.train()
    return result


def learn(images: torch.Tensor, lr: float, steps: int, every: int, seed: int) -> list[dict]:
    """Train a fresh small segmenter for ``steps`` steps of 2 scans; the probe every ``every``."""
    from uadcore.models import MODELS

    torch.manual_seed(seed)
    spec = MODELS["anomseg3d"]
    model = spec.build(in_shape=tuple(images.shape[2:]), **spec.small)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train, held_out = images[:TRAIN_SCANS], images[TRAIN_SCANS:]
    sets = probe_sets(held_out)  # the same anomalies at every probe
    order = torch.Generator().manual_seed(seed)
    curve, started = [], time.perf_counter()
    for step in range(1, steps + 1):
        x = train[torch.randint(len(train), (2,), generator=order)]
        loss = model.loss_per_sample(x).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % every == 0:
            curve.append({"step": step, "seconds": round(time.perf_counter() - started, 1), **probe(model, held_out, sets)})
            print(json.dumps({"lr": lr, **curve[-1]}), flush=True)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--lr", default="5e-4,2e-3", help="learning rates to compare, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not os.path.isdir(REALDATA):
        raise SystemExit(f"{REALDATA}: no real data here (set UAD_REALDATA)")
    os.makedirs(args.out, exist_ok=True)
    images = prepared_images()
    result = {"benchmark": "segmenter_learning", "machine": machine_info(), "seed": args.seed, "probe": PROBE,
              "curves": {lr: learn(images, float(lr), args.steps, args.every, args.seed) for lr in args.lr.split(",")}}
    with open(os.path.join(args.out, f"segmenter-learning-seed{args.seed}.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
