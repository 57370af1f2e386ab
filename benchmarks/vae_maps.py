"""Accuracy of every VAE map kind on the synthetic cohort, 2D and 3D VAE:
sample AUROC/AP and voxel AUROC/AP/Dice on unseen scans per map kind, and the
sample AUROC/AP of the sample-wise scores rec, kl and elbo.

    python -m benchmarks.vae_maps --out DIR [--epochs 20]

Writes DIR/vae_maps.md and DIR/vae_maps.json (copy them into benchmarks/).
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

KEYS = ("sample_auroc", "sample_ap", "voxel_auroc", "voxel_ap", "dice", "best_dice")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--healthy-train", type=int, default=48)
    args = parser.parse_args()

    out = os.path.abspath(args.out)
    train_manifest, test_manifest = train_and_test(out, args.healthy_train)

    rows, sample_rows = [], []
    for model in ("vae2d", "vae3d"):
        started = time.perf_counter()
        config = TrainConfig.from_dict({"data": train_manifest, "model": model, "model_params": MODELS[model].small,
                                        **MODELS[model].train, "epochs": args.epochs, "batch_size": 32 if model == "vae2d" else 4,
                                        "outlier_removal": False, "reinit_at": []})
        run = os.path.join(out, f"run-{model}")
        summary = train(config, run, events=Events())
        scorer = Scorer(run)
        for kind in scorer.kinds:
            report = evaluate(scorer, read_manifest(test_manifest), kind=kind)
            rows.append({"model": model, "map": kind, **{k: report.metric(k) for k in KEYS}, "epochs": summary["epochs"],
                         "seconds": round(time.perf_counter() - started, 1)})
            if kind == "rec":  # the sample-wise scores rec, kl, elbo (the same for every map kind)
                sample_rows.append({"model": model, **{f"{name}_{m}": report.sample_scores[name][m]
                                                       for name in ("rec", "kl", "elbo") for m in ("auroc", "ap")}})
    lines = ["| model | map | sample AUROC | sample AP | voxel AUROC | voxel AP | Dice | best Dice |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['map']} | " + " | ".join("-" if r[k] is None else f"{r[k]:.3f}" for k in KEYS) + " |")
    lines += ["", "| model | sample score | AUROC | AP |", "|---|---|---:|---:|"]
    for r in sample_rows:
        for name in ("rec", "kl", "elbo"):
            lines.append(f"| {r['model']} | {name} | {r[name + '_auroc']:.3f} | {r[name + '_ap']:.3f} |")
    with open(os.path.join(out, "vae_maps.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "vae_maps.json"), "w", encoding="utf-8") as handle:
        json.dump({"rows": rows, "sample_scores": sample_rows, "machine": machine_info(), "epochs": args.epochs, "healthy_train": args.healthy_train}, handle, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
