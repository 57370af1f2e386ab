"""GPU figures: training and scoring throughput against the device's own limits, and
the paper-size AE3D at (shortened) paper scale.

    python -m benchmarks.gpu --out DIR [--device cuda|cpu] [--quick] [--cohort MANIFEST]
    python -m benchmarks.gpu --smoke --out DIR [--device cuda|cpu]   (see benchmarks.smoke)

1. the device's limits, measured: the bf16 (CPU: float32) matrix-product rate of a
   large ``torch.matmul`` and the memory bandwidth of a large copy;
2. the paper-size AE3D and VAE3D training step (AMP bf16, channels-last-3d, data
   resident on the device, ``torch.compile`` off and on) at batch 32 and 64: scans/s,
   achieved TFLOP/s (FLOPs of forward and backward counted per layer by
   ``torch.utils.flop_counter``) as a share of the measured matmul rate, peak memory;
3. scoring with the trained AE3D run and a VAE3D run (rec and kl-grad maps): scans/s
   from prepared scans in memory, and from the files (read, cache hit of the
   preparation, model, map back on the scan's grid);
4. ``uad train`` of the paper-size AE3D on a synthetic cohort (a few hundred scans)
   with the paper's schedule shortened (100 epochs, removal every 5, re-initialised
   after 50), ``uad evaluate`` on unseen scans, next to the CPU configuration
   (``--size small``, the demo's 40 epochs) on the same scans;
5. JSON and a markdown table, and the paper's full protocol (500 epochs, ~1,000
   scans) extrapolated from the measured rate.

``--quick`` shrinks everything to seconds on a CPU (tiny models, a few steps, 2
epochs) to test the script; its numbers mean nothing. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from benchmarks.machine import machine_info
from benchmarks.realdata import uad

PAPER_EPOCHS, PAPER_SCANS = 500, 1000
TARGETS = {"train_share_of_matmul": 0.20, "paper_protocol_minutes": 10.0, "scoring_from_files_per_s": 50.0}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device, repeats: int) -> float:
    """Seconds per call of ``function`` (after one warm-up call)."""
    function()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    synchronize(device)
    return (time.perf_counter() - started) / repeats


def device_limits(device: torch.device, quick: bool) -> dict:
    """The measured matrix-product rate (TFLOP/s) and copy bandwidth (GB/s)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = 512 if quick else (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, device, 3 if quick else 20)
    words = (1 << 20) if quick else ((1 << 30) if device.type == "cuda" else (1 << 26))
    source = torch.empty(words, device=device, dtype=torch.float32)
    target = torch.empty_like(source)
    copy_seconds = timed(lambda: target.copy_(source), device, 3 if quick else 20)
    return {"matmul_dtype": str(dtype).replace("torch.", ""), "matmul_n": n, "matmul_tflops": 2 * n**3 / seconds / 1e12,
            "copy_gb_per_s": 2 * words * 4 / copy_seconds / 1e9}


def step_flops(step) -> int:
    """FLOPs of one training step (forward and backward), counted per layer."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def training_steps(device: torch.device, quick: bool, matmul_tflops: float) -> list[dict]:
    """Training-step throughput of the paper-size AE3D and VAE3D."""
    from uadcore.device import amp_dtype
    from uadcore.models import MODELS, make_model

    shape = (16, 16, 16) if quick else (64, 77, 66)
    # as training sets it: without it cuDNN's heuristic picked a bf16 weight-gradient
    # kernel for the VAE3D's first layer that took 85 % of the step (6x slower, H200)
    torch.backends.cudnn.benchmark = True
    rows = []
    for name in ("ae3d", "vae3d"):
        for compiled in ((False,) if quick else (False, True)):
            for batch in ((2,) if quick else (32, 64)):
                model = make_model(name, shape, **(MODELS[name].small if quick else {})).to(device)
                if device.type == "cuda":
                    model = model.to(memory_format=torch.channels_last_3d)
                optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
                x = torch.rand(batch, 1, *shape, device=device)  # resident on the device, as in training
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last_3d)
                loss_of = torch.compile(model.loss_per_sample) if compiled else model.loss_per_sample
                dtype = amp_dtype(device, True)

                def step():
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        loss = loss_of(x).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()

                flops = step_flops(model_step(model, x, dtype, device))  # the same whether compiled or not
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                seconds = timed(step, device, 2 if quick else 20)
                rows.append({"model": name, "compile": compiled, "batch": batch, "seconds_per_step": seconds,
                             "scans_per_s": batch / seconds, "flops_per_step": flops, "tflops": flops / seconds / 1e12,
                             "share_of_matmul": flops / seconds / 1e12 / matmul_tflops,
                             "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None})
                print(json.dumps(rows[-1]), flush=True)
                del model, optimizer, x
    return rows


def model_step(model, x, dtype, device):
    """One forward and backward pass of ``model`` on ``x`` (for counting FLOPs)."""
    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model.loss_per_sample(x).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
    return step


def cohort_manifests(out: str, cohort: str | None, quick: bool) -> tuple[str, str]:
    """(train manifest, test manifest): a given cohort split in two, or a new synthetic one."""
    from uadcore.io import read_manifest, write_manifest
    from uadcore.synth import synthesize_cohort

    if cohort is None:
        healthy, unhealthy = (6, 2) if quick else (260, 60)
        cohort = synthesize_cohort(os.path.join(out, "cohort"), healthy=healthy, unhealthy=unhealthy, seed=0, progress=not quick)
    entries = read_manifest(cohort)
    healthy = [e for e in entries if e.label == "healthy"]
    unhealthy = [e for e in entries if e.label == "unhealthy"]
    n_test = max(1, len(healthy) // 4)
    return (write_manifest(healthy[n_test:], os.path.join(out, "train.csv")),
            write_manifest(healthy[:n_test] + unhealthy, os.path.join(out, "test.csv")))


def paper_protocol(out: str, train: str, test: str, device: str, quick: bool) -> dict:
    """`uad train` + `uad evaluate`: the paper-size AE3D on the device, the CPU
    configuration on the same scans."""
    configurations = {
        "paper-size AE3D": ["--epochs", "2" if quick else "100", "--outlier-every", "1" if quick else "5",
                            "--reinit-at", "1" if quick else "50", "--batch-size", "2" if quick else "32", "--device", device]
                           + (["--size", "small"] if quick else []),
        "CPU configuration (small AE3D)": ["--size", "small", "--epochs", "2" if quick else "40", "--outlier-every", "1" if quick else "5",
                                           "--reinit-at", "1" if quick else "15", "--batch-size", "2" if quick else "8", "--device", "cpu"],
    }
    rows = {}
    for name, flags in configurations.items():
        run = os.path.join(out, "run-" + ("paper" if name.startswith("paper") else "cpu"))
        started = time.perf_counter()
        summary = uad("train", "--data", train, "--model", "ae3d", "--out", run, *flags)
        train_s = time.perf_counter() - started
        report = uad("evaluate", run, "--data", test, "--device", device if name.startswith("paper") else "cpu")
        rows[name] = {"command": "uad train --model ae3d " + " ".join(flags), "train_s": train_s, "epochs": summary["epochs"],
                      "scans": summary["scans"], "removed": summary["removed"], "sample_auroc": report["sample_auroc"],
                      "voxel_ap": report.get("voxel_ap"), "sample_score": report.get("sample_score"),
                      "calibrated": report.get("calibrated"), "run": run}
        print(json.dumps({name: rows[name]}), flush=True)
    return rows


def scoring(out: str, run: str, test: str, device: str, quick: bool) -> list[dict]:
    """Scans/s of scoring: from prepared scans in memory and from files."""
    from uadcore.io import read_manifest
    from uadcore.score.scorer import Scorer
    from uadcore.preprocess.dataset import prepare_scans

    entries = read_manifest(test)[: 4 if quick else 64]
    rows = []
    vae_run = os.path.join(out, "run-vae3d-score")
    train_manifest = os.path.join(out, "train.csv")
    uad("train", "--data", train_manifest, "--model", "vae3d", "--out", vae_run, "--epochs", "1", "--device", device,
        *(["--size", "small"] if quick else []))
    for label, run_dir, kind in (("ae3d", run, "rec"), ("vae3d", vae_run, "kl-grad")):
        scorer = Scorer(run_dir, device=device)
        prepared = [p for p, _ in prepare_scans(entries, scorer.preset, progress=False)]
        paths = [e.path for e in entries]
        started = time.perf_counter()
        scorer.score_prepared(prepared, paths, kind)
        in_memory = time.perf_counter() - started
        started = time.perf_counter()
        for path in paths:
            scorer.score(path, kind).scan_map()
        from_files = time.perf_counter() - started
        rows.append({"model": label, "map": kind, "scans": len(paths), "prepared_scans_per_s": len(paths) / in_memory,
                     "from_files_scans_per_s": len(paths) / from_files})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def extrapolate(steps: list[dict]) -> dict:
    """The paper's full protocol from the best measured AE3D training rate."""
    best = max((r for r in steps if r["model"] == "ae3d"), key=lambda r: r["scans_per_s"])
    seconds = PAPER_EPOCHS * PAPER_SCANS / best["scans_per_s"]
    return {"epochs": PAPER_EPOCHS, "scans": PAPER_SCANS, "from": {k: best[k] for k in ("model", "compile", "batch", "scans_per_s")},
            "training_minutes": seconds / 60.0,
            "note": "training passes only; outlier removal reuses the training losses, so it adds no passes"}


def markdown(result: dict) -> str:
    limits = result["limits"]
    machine = result["machine"]
    lines = [f"Machine: {result['device']}; {machine.get('cpu')}, {machine.get('cores')} cores; {machine.get('date')}"
             + (" (--quick: a test of the script, not figures)" if result["quick"] else "") + ".", "",
             f"Measured limits: {limits['matmul_dtype']} matmul {limits['matmul_tflops']:.1f} TFLOP/s (n = {limits['matmul_n']}), "
             f"copy {limits['copy_gb_per_s']:.0f} GB/s.", "",
             "| model | compile | batch | scans/s | TFLOP/s | share of matmul | peak memory GB |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in result["training"]:
        memory = "-" if r["peak_memory_gb"] is None else f"{r['peak_memory_gb']:.1f}"
        lines.append(f"| {r['model']} | {r['compile']} | {r['batch']} | {r['scans_per_s']:.1f} | {r['tflops']:.2f} | "
                     f"{r['share_of_matmul']:.1%} | {memory} |")
    lines += ["", "| scoring | map | scans | prepared scans/s | from files scans/s |", "|---|---|---:|---:|---:|"]
    for r in result["scoring"]:
        lines.append(f"| {r['model']} | {r['map']} | {r['scans']} | {r['prepared_scans_per_s']:.1f} | {r['from_files_scans_per_s']:.1f} |")
    lines += ["", "| configuration | scans | epochs | train s | removed | sample AUROC | voxel AP | sample score |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in result["protocol"].items():
        ap = "-" if r["voxel_ap"] is None else f"{r['voxel_ap']:.3f}"
        lines.append(f"| {name} | {r['scans']} | {r['epochs']} | {r['train_s']:.0f} | {r['removed']} | {r['sample_auroc']:.3f} | {ap} | "
                     f"{r['sample_score']}{' (calibrated)' if r['calibrated'] else ''} |")
    full = result["extrapolated"]
    lines += ["", f"The paper's protocol ({full['epochs']} epochs, {full['scans']} scans) at the best AE3D rate "
                  f"({full['from']['scans_per_s']:.0f} scans/s): {full['training_minutes']:.1f} minutes of training.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for runs and results")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds (a test of the script)")
    parser.add_argument("--cohort", metavar="MANIFEST", help="use this labelled cohort instead of synthesising one")
    parser.add_argument("--smoke", action="store_true", help="the smoke check instead: every main path once, a few minutes")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; use --device cpu (with --quick to test the script)")
    if args.smoke:
        from benchmarks.smoke import smoke

        raise SystemExit(1 if smoke(args.out, args.device) else 0)
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    result = {"benchmark": "gpu", "quick": args.quick, "machine": machine_info(),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    result["limits"] = device_limits(device, args.quick)
    print(json.dumps(result["limits"]), flush=True)
    result["training"] = training_steps(device, args.quick, result["limits"]["matmul_tflops"])
    result["extrapolated"] = extrapolate(result["training"])
    train, test = cohort_manifests(args.out, args.cohort, args.quick)
    result["protocol"] = paper_protocol(args.out, train, test, args.device, args.quick)
    result["scoring"] = scoring(args.out, result["protocol"]["paper-size AE3D"]["run"], test, args.device, args.quick)
    result["targets"] = TARGETS
    with open(os.path.join(args.out, "gpu.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    with open(os.path.join(args.out, "gpu.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
