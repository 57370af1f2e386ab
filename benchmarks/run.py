"""Speed against plain baselines measured in the same run, memory and scale.

    python -m benchmarks.run --out DIR [--quick]

1. training epochs of AE3D (per-sample losses, outlier removal every 5 epochs) vs a
   tutorial-style MONAI dictionary pipeline that loads and preprocesses every scan
   from disk each epoch, float32, channels-first, with a separate evaluation pass
   every 5 epochs for the per-sample losses;
2. the anomaly map of one scan end to end (read, preprocess, model, map, back to
   the scan's grid, write) for rec, kl-grad and combi of the 2D VAE, vs the same
   computed one slice at a time with the published network, as the published code
   does (and, for kl-grad, one slice at a time with ours: batching alone);
3. scoring a folder of scans: parallel reading and batches vs one scan at a time;
4. peak memory (RSS, and GPU memory on CUDA) of training with N cached scans;
5. epoch time against N (linear?) and scoring time against scan size.

Writes DIR/results.json and DIR/results.md; every row says what it compares.
Models are the small configurations (the map benchmark also runs the 2D VAE at the
paper's size, the default); their weights do not matter for speed.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

from benchmarks.machine import machine_info
from uadcore.malloc import keep_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # MONAI's deprecation notices in the baseline
    keep_freed_memory()  # as the `uad` command does, for ours and the baselines alike (one process)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    os.environ["UAD_CACHE_DIR"] = tempfile.mkdtemp(prefix="uad-bench-cache-")  # cold cache: preparation is measured
    sizes = {"train_scans": 8, "epochs": 5, "map_scans": 2, "folder": 12, "scale": [8, 16]} if args.quick else \
        {"train_scans": 32, "epochs": 5, "map_scans": 10, "folder": 200, "scale": [100, 200, 400]}

    from uadcore.io import read_manifest
    from uadcore.synth import synthesize_cohort

    cohort = os.path.join(out, "cohort")
    largest = max(sizes["folder"], max(sizes["scale"]))
    manifest = os.path.join(cohort, "manifest.csv")
    if not os.path.exists(manifest):
        synthesize_cohort(cohort, healthy=largest, unhealthy=0, seed=1)
    paths = [e.path for e in read_manifest(manifest)]

    results = {"machine": machine_info(), "sizes": sizes, "rows": []}
    rows = results["rows"]
    rows += bench_training(paths[: sizes["train_scans"]], sizes["epochs"], out, args.device)
    rows += bench_maps(paths[: 2 + sizes["map_scans"]], out, args.device)
    rows += bench_folder(paths[: sizes["folder"]], out, args.device)
    results["memory_and_scale"] = bench_scale(paths, sizes["scale"], out, args.device)
    results["scan_size"] = bench_scan_size(out, args.device)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    table = render(results)
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(table)
    print(table)


# ---- 1. training ----------------------------------------------------------------
def bench_training(paths, epochs, out, device):
    from uadcore.io import ScanEntry, write_manifest
    from uadcore.io.run_files import RunFiles
    from uadcore.models import MODELS
    from uadcore.train import Events, TrainConfig, train

    manifest = write_manifest([ScanEntry(p) for p in paths], os.path.join(out, "train.csv"))
    config = TrainConfig.from_dict({"data": manifest, "model": "ae3d", "model_params": MODELS["ae3d"].small, "epochs": epochs,
                                    "batch_size": 8, "reinit_at": [], "val_fraction": 0.0, "outlier_every": 5, "device": device,
                                    "checkpoint_every": 1000})
    run = tempfile.mkdtemp(prefix="run-", dir=out)

    def epoch_seconds(name):
        with open(RunFiles(os.path.join(run, name)).history, encoding="utf-8") as handle:
            return [float(line.split(",")[4]) for line in handle.read().splitlines()[1:]]

    started = time.perf_counter()
    train(config, os.path.join(run, "ours"), events=Events(progress=False))
    ours = time.perf_counter() - started  # includes reading and preparing every scan once
    steady = float(np.mean(epoch_seconds("ours")[1:] or epoch_seconds("ours")))  # the data prepared, in memory
    # the same with torch.compile (its first epoch pays for compiling; the cache is warm now)
    train(dataclasses.replace(config, compile=True), os.path.join(run, "compiled"), events=Events(progress=False))
    compiled = epoch_seconds("compiled")
    compiled_steady = float(np.mean(compiled[1:] or compiled))

    started = time.perf_counter()
    monai_baseline(paths, epochs, device)
    baseline = time.perf_counter() - started
    n = len(paths) * epochs
    per_epoch = baseline / epochs  # every baseline epoch reads and preprocesses; the evaluation pass spread over 5
    return [
        {"benchmark": "training epoch", "what": f"AE3D small, {len(paths)} scans, per-sample losses + removal every 5 epochs; steady state",
         "ours": f"{len(paths) / steady:.2f} scans/s", "baseline": f"{len(paths) / per_epoch:.2f} scans/s", "speedup": per_epoch / steady,
         "ours_s": steady, "baseline_s": per_epoch},
        {"benchmark": "training run", "what": f"the same, {epochs} epochs including reading and preparing every scan once (cold cache)",
         "ours": f"{n / ours:.2f} scans/s", "baseline": f"{n / baseline:.2f} scans/s", "speedup": baseline / ours,
         "ours_s": ours, "baseline_s": baseline},
        {"benchmark": "torch.compile", "what": f"our steady-state epoch with `--compile` vs without (baseline here); compiling took "
                                               f"{compiled[0] - compiled_steady:.0f} s in the first epoch",
         "ours": f"{len(paths) / compiled_steady:.2f} scans/s", "baseline": f"{len(paths) / steady:.2f} scans/s",
         "speedup": steady / compiled_steady, "ours_s": compiled_steady, "baseline_s": steady},
    ]


def monai_baseline(paths, epochs, device_name):
    """The tutorial way: a MONAI dictionary pipeline reading every scan each epoch
    (DataLoader defaults: no worker processes), float32, and a separate pass over
    the data every 5 epochs for per-sample losses."""
    import monai
    from monai.transforms import (Compose, CropForegroundd, EnsureChannelFirstd, LoadImaged, Orientationd,
                                  ResizeWithPadOrCropd, ScaleIntensityRangePercentilesd, Spacingd)

    from uadcore.device import pick_device
    from uadcore.models import AE3D, MODELS

    device = pick_device(device_name)
    transform = Compose([
        LoadImaged(keys="image", image_only=True), EnsureChannelFirstd(keys="image"), Orientationd(keys="image", axcodes="RAS"),
        Spacingd(keys="image", pixdim=(2.5, 2.5, 2.5)), CropForegroundd(keys="image", source_key="image"),
        ResizeWithPadOrCropd(keys="image", spatial_size=(64, 77, 66)),
        ScaleIntensityRangePercentilesd(keys="image", lower=0, upper=99.5, b_min=0.0, b_max=1.0, clip=True),
    ])
    data = [{"image": p, "index": i} for i, p in enumerate(paths)]
    kept = set(range(len(paths)))
    model = AE3D((64, 77, 66), **MODELS["ae3d"].small).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(1, epochs + 1):
        loader = monai.data.DataLoader(monai.data.Dataset([d for d in data if d["index"] in kept], transform), batch_size=8, shuffle=True)
        model.train()
        for batch in loader:
            x = batch["image"].to(device).float()
            loss = (model(x) - x).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if epoch % 5 == 0:  # the evaluation pass for per-sample losses
            model.eval()
            losses = {}
            with torch.no_grad():
                for batch in monai.data.DataLoader(monai.data.Dataset([d for d in data if d["index"] in kept], transform), batch_size=8):
                    x = batch["image"].to(device).float()
                    for index, value in zip(batch["index"].tolist(), (model(x) - x).abs().flatten(1).mean(1).tolist()):
                        losses[index] = value
            mean = np.mean(list(losses.values()))
            kept = {i for i, v in losses.items() if v <= 1.4 * mean}


def one_epoch_run(model, paths, out, device, params=None) -> str:
    """A run of ``model`` (its small configuration unless ``params`` are given)
    trained one epoch (speed does not need good weights)."""
    from uadcore.io import ScanEntry, write_manifest
    from uadcore.models import MODELS
    from uadcore.train import Events, TrainConfig, train

    manifest = write_manifest([ScanEntry(p) for p in paths], os.path.join(out, f"{model}.csv"))
    run = os.path.join(tempfile.mkdtemp(prefix="run-", dir=out), model)
    train(TrainConfig.from_dict({"data": manifest, "model": model, "model_params": MODELS[model].small if params is None else params, "epochs": 1,
                                 "val_fraction": 0.0, "reinit_at": [], "device": device}), run, events=Events(progress=False))
    return run


# ---- 2. one scan's map ----------------------------------------------------------
def bench_maps(paths, out, device):
    """Our path against the published code's way: its network (the bottleneck layers
    as the convolutions it uses; ours computes them as matrix products, `WholeGrid`)
    one slice at a time. For kl-grad, also one slice at a time with our network, to
    show what batching alone gives."""
    from uadcore.io import read_scan, write_nifti
    from uadcore.models import MODELS
    from uadcore.score.maps import anomaly_maps
    from uadcore.score.scorer import Scorer

    rows = []
    target = os.path.join(out, "map.nii.gz")
    # the small VAE and the paper's (the default of `uad train --model vae2d`)
    for size, params in (("small", MODELS["vae2d"].small), ("paper", {})):
        scorer = Scorer(one_epoch_run("vae2d", paths[:2], out, device, params), device=device)  # batches as `uad score` makes them
        model = scorer._network((64, 64))
        published = as_published(model)

        def ours(path):
            result = scorer.score(path, kind)
            write_nifti(result.scan_map(), result.prepared.scan_grid, target)

        def one_slice_at_a_time(path, network=published):
            scan = read_scan(path)
            prepared = scorer.preset.prepare(scan)
            items = torch.from_numpy(prepared.inputs())
            maps = [anomaly_maps(network, items[i : i + 1].to(scorer.device), kind).cpu() for i in range(len(items))]
            volume = prepared.assemble(torch.cat(maps).numpy()) * prepared.region
            write_nifti(prepared.to_scan(volume), scan.grid, target)

        for kind in ("rec", "kl-grad", "combi"):
            baselines = {"the published code's way": one_slice_at_a_time}
            if kind == "kl-grad":
                baselines["our network one slice at a time (batching alone)"] = lambda path: one_slice_at_a_time(path, model)
            for name, baseline in baselines.items():
                ours(paths[2])  # warm up both once
                baseline(paths[2])
                mine, theirs = _compare(ours, baseline, paths[2:])
                rows.append(_per_scan_row(f"map {kind}", f"vae2d {size}, read to written map (.nii.gz), per scan; baseline: {name}", mine, theirs))
        # the model part alone
        items = torch.from_numpy(scorer.preset.prepare(read_scan(paths[2])).inputs()).to(scorer.device)
        mine = _seconds(lambda: anomaly_maps(model, items, "kl-grad"))
        for name, network in (("the published network", published), ("our network", model)):
            theirs = _seconds(lambda: [anomaly_maps(network, items[i : i + 1], "kl-grad") for i in range(len(items))])
            rows.append(_per_scan_row("kl-grad, model part",
                                      f"vae2d {size}, the {len(items)} slices of one scan: ours in one backward pass vs {name} one slice at a time",
                                      mine, theirs))
    return rows


def _seconds(function, repeats: int = 3) -> float:
    """Mean seconds of ``function()`` over ``repeats`` calls after one warm-up call."""
    function()
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def _per_scan_row(benchmark: str, what: str, mine: float, theirs: float) -> dict:
    """A results row of per-scan times (seconds) of ours and of the baseline."""
    return {"benchmark": benchmark, "what": what, "ours": f"{1000 * mine:.0f} ms/scan", "baseline": f"{1000 * theirs:.0f} ms/scan",
            "speedup": theirs / mine, "ours_s": mine, "baseline_s": theirs}


def as_published(model):
    """A copy of ``model`` (same weights) whose `WholeGrid` layers run as the
    convolutions the published code uses (the same values; see Testing/test_vae.py)."""
    from uadcore.models.blocks import WholeGrid

    published = copy.deepcopy(model)
    for layer in published.modules():
        if isinstance(layer, WholeGrid):
            layer.forward = lambda x, layer=layer: layer.act(layer.conv(x))
    return published


def _compare(ours, baseline, paths, rounds: int = 3) -> tuple[float, float]:
    """Seconds per path of ``ours`` and of ``baseline`` over ``paths``, each the
    median of ``rounds`` rounds taken in turn, so that a moment of other work on
    the machine does not decide the ratio."""
    times = {ours: [], baseline: []}
    for _ in range(rounds):
        for function in (ours, baseline):
            started = time.perf_counter()
            for path in paths:
                function(path)
            times[function].append((time.perf_counter() - started) / len(paths))
    return float(np.median(times[ours])), float(np.median(times[baseline]))


# ---- 3. a folder --------------------------------------------------------------------
def bench_folder(paths, out, device):
    from uadcore.io import ScanEntry
    from uadcore.score.scorer import Scorer
    from uadcore.preprocess.dataset import forget_prepared, prepare_scans

    scorer = Scorer(one_epoch_run("ae3d", paths[:2], out, device), device=device)
    scorer.score(paths[0])  # the network built and warmed up before either path is timed
    os.environ["UAD_CACHE"] = "off"  # both read and prepare every scan
    forget_prepared()
    started = time.perf_counter()
    entries = [ScanEntry(p) for p in paths]
    prepared = prepare_scans(entries, scorer.preset, progress=False)
    scorer.score_prepared([p for p, _ in prepared], paths)
    ours = time.perf_counter() - started
    forget_prepared()
    started = time.perf_counter()
    for path in paths:
        scorer.score(path)
    baseline = time.perf_counter() - started
    os.environ.pop("UAD_CACHE")
    return [{"benchmark": "scoring a folder", "what": f"ae3d small, {len(paths)} scans, parallel reading + batches",
             "ours": f"{len(paths) / ours:.2f} scans/s", "baseline": f"{len(paths) / baseline:.2f} scans/s",
             "speedup": baseline / ours, "ours_s": ours, "baseline_s": baseline}]


# ---- 4 and 5. memory and scale ------------------------------------------------------
SCALE_CHILD = r"""
import json, os, sys, time, torch
from uadcore.io.run_files import RunFiles
from uadcore.malloc import keep_freed_memory
from uadcore.models import MODELS
from uadcore.train import Events, TrainConfig, train
manifest, run, device = sys.argv[1:4]
keep_freed_memory()  # as `uad train` does: its peak memory includes what this keeps
config = TrainConfig.from_dict({"data": manifest, "model": "ae3d", "model_params": MODELS["ae3d"].small, "epochs": 2,
                                "batch_size": 8, "reinit_at": [], "val_fraction": 0.0, "device": device, "checkpoint_every": 1000})
train(config, run, events=Events(progress=False))
history = list(__import__("csv").DictReader(open(RunFiles(run).history)))
peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would report the parent's peak
peak = [int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(json.dumps({"epoch_seconds": float(history[-1]["seconds"]), "peak_rss_mb": peak, "peak_gpu_mb": peak_gpu}))
"""


def bench_scale(paths, counts, out, device):
    """Per N: a fresh process trains 2 epochs on N cached scans; the second epoch's
    time and the process's peak RSS (the scans are prepared beforehand, so the
    cache is warm and the preparation's workers are not counted)."""
    from uadcore.io import ScanEntry, write_manifest
    from uadcore.preprocess import make_preset
    from uadcore.preprocess.dataset import prepare_scans

    prepare_scans([ScanEntry(p) for p in paths[: max(counts)]], make_preset("brain3d-behrendt"), progress=False)
    rows = []
    for n in counts:
        manifest = write_manifest([ScanEntry(p) for p in paths[:n]], os.path.join(out, f"scale-{n}.csv"))
        run = os.path.join(tempfile.mkdtemp(prefix="run-", dir=out), f"n{n}")
        done = subprocess.run([sys.executable, "-c", SCALE_CHILD, manifest, run, device], capture_output=True, text=True, env=os.environ)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        rows.append({"scans": n, **json.loads(done.stdout.strip().splitlines()[-1])})
    return rows


def bench_scan_size(out, device):
    """Scoring (read, prepare, model, map back, write) against the scan's voxel count."""
    from uadcore.io import Grid, write_nifti
    from uadcore.score.scorer import Scorer

    run = [os.path.join(root, name) for root, names, _ in os.walk(out) for name in names if name == "ae3d"][0]
    scorer = Scorer(run, device=device)
    rows = []
    for side in (96, 160, 256):
        spacing = 200.0 / side
        grid = Grid.centred((0.0, 0.0, 0.0), (spacing,) * 3, (side,) * 3)
        world = grid.index_to_world(np.indices(grid.shape).reshape(3, -1).T).reshape(*grid.shape, 3)
        brain = (np.sum((world / np.array([65.0, 80.0, 60.0])) ** 2, axis=-1) <= 1.0).astype(np.float32) * 500.0
        path = write_nifti(brain, grid, os.path.join(out, f"size-{side}.nii.gz"))
        scorer.score(path)  # warm
        started = time.perf_counter()
        result = scorer.score(path)
        write_nifti(result.scan_map(), result.prepared.scan_grid, os.path.join(out, f"size-{side}-map.nii.gz"))
        rows.append({"voxels": side**3, "side": side, "seconds": time.perf_counter() - started})
    return rows


def render(results) -> str:
    machine = results["machine"]
    lines = [f"{machine['date']}, {machine['cpu']} ({machine['cores']} cores), Python {machine['python']}, torch {machine.get('torch')}, "
             f"GPU: {machine.get('gpu') or 'none'}", "",
             "| benchmark | what | ours | baseline (same run) | speed-up |", "|---|---|---:|---:|---:|"]
    for row in results["rows"]:
        lines.append(f"| {row['benchmark']} | {row['what']} | {row['ours']} | {row['baseline']} | {row['speedup']:.1f}x |")
    lines += ["", "| cached scans N | epoch seconds | seconds per scan | peak RSS (MB) | peak GPU memory (MB) |", "|---:|---:|---:|---:|---:|"]
    for row in results["memory_and_scale"]:
        gpu = "-" if row["peak_gpu_mb"] is None else f"{row['peak_gpu_mb']:.0f}"
        lines.append(f"| {row['scans']} | {row['epoch_seconds']:.1f} | {row['epoch_seconds'] / row['scans']:.3f} | {row['peak_rss_mb']:.0f} | {gpu} |")
    lines += ["", "| scan voxels | scoring seconds (read to written map) |", "|---:|---:|"]
    for row in results["scan_size"]:
        lines.append(f"| {row['side']}^3 = {row['voxels']:,} | {row['seconds']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
