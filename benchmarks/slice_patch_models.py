"""Accuracy of the slice and patch models on the synthetic cohort: the masked
autoencoder with its anomaly classifier (mae2d) and the patch autoencoder
(patchae2d), small configurations, every map kind: sample AUROC/AP, slice- or
patch-level AUROC/AP and voxel AUROC/AP/Dice on unseen scans, one table.

    python -m benchmarks.slice_patch_models --out DIR [--mae-epochs 20] [--classifier-epochs 4] [--patch-epochs 20]

The cohort, split and test set are those of `benchmarks.vae_maps` (seed 0), so the
tables compare. Writes DIR/slice_patch_models.md and .json (copy them into benchmarks/).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from benchmarks.cohorts import train_and_test
from benchmarks.machine import machine_info
from uadcore.evaluate.run import evaluate
from uadcore.io import read_manifest
from uadcore.models import MODELS
from uadcore.score.scorer import Scorer
from uadcore.train import Events, TrainConfig, train

KEYS = ("sample_auroc", "sample_ap", "unit_auroc", "unit_ap", "voxel_auroc", "voxel_ap", "dice", "best_dice")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--mae-epochs", type=int, default=20)
    parser.add_argument("--classifier-epochs", type=int, default=4)
    parser.add_argument("--patch-epochs", type=int, default=20)
    parser.add_argument("--healthy-train", type=int, default=48)
    args = parser.parse_args()

    out = os.path.abspath(args.out)
    train_manifest, test_manifest = train_and_test(out, args.healthy_train)

    plans = {
        "mae2d": {"epochs": args.mae_epochs, "classifier_epochs": args.classifier_epochs, "batch_size": 64},
        "patchae2d": {"epochs": args.patch_epochs, "batch_size": 200},
    }
    rows = []
    for model, plan in plans.items():
        started = time.perf_counter()
        config = TrainConfig.from_dict({"data": train_manifest, "model": model, "model_params": MODELS[model].small,
                                        "preset_params": MODELS[model].small_preset, **MODELS[model].train, **plan,
                                        "outlier_removal": False, "reinit_at": []})
        run = os.path.join(out, f"run-{model}")
        summary = train(config, run, events=Events())
        trained = time.perf_counter() - started
        scorer = Scorer(run)
        for kind in scorer.kinds:
            report = evaluate(scorer, read_manifest(test_manifest), kind=kind)
            unit = scorer.preset.unit
            rows.append({"model": model, "map": kind, "unit": unit, **{k: report.metric(k.replace("unit", unit)) for k in KEYS},
                         "epochs": summary["epochs"], "train_seconds": round(trained, 1)})
    lines = ["| model | map | sample AUROC | sample AP | slice/patch AUROC | slice/patch AP | voxel AUROC | voxel AP | Dice | best Dice |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['map']} | " + " | ".join("-" if r[k] is None else f"{r[k]:.3f}" for k in KEYS) + " |")
    with open(os.path.join(out, "slice_patch_models.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "slice_patch_models.json"), "w", encoding="utf-8") as handle:
        json.dump({"rows": rows, "machine": machine_info(), "plans": plans, "healthy_train": args.healthy_train}, handle, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
