"""Why a training step runs as fast as it does on a GPU: the paper-size AE3D and
VAE3D step in several variants (memory format, precision, the first and last
layer in float32 or not, the VAE at the AE's channel widths), each against the device's measured matmul rate, and the CUDA
kernels that take the VAE3D step's time (torch.profiler).

    python -m benchmarks.gpu_profile --out DIR [--device cuda|cpu] [--quick]

DIR/profile.json holds the variants; DIR/kernels-MODEL.txt the profiler's table.
``--quick`` is a test of the script on the CPU (tiny sizes, numbers meaningless).
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from benchmarks.gpu import device_limits, step_flops, timed
from benchmarks.machine import machine_info

SHAPE = (64, 77, 66)
# name -> (model, its options, channels-last-3d, autocast, first and last layer in float32);
# every variant with cudnn.benchmark on, as training sets it
VARIANTS = {
    "ae3d bf16 channels-last, edges float32 (training's)": ("ae3d", {}, True, True, True),
    "ae3d bf16 channels-last, all bf16 (before)": ("ae3d", {}, True, True, False),
    "ae3d bf16 contiguous, edges float32": ("ae3d", {}, False, True, True),
    "vae3d bf16 channels-last, edges float32 (training's)": ("vae3d", {}, True, True, True),
    "vae3d bf16 channels-last, all bf16 (before)": ("vae3d", {}, True, True, False),
    "vae3d bf16 contiguous, edges float32": ("vae3d", {}, False, True, True),
    "vae3d float32 contiguous": ("vae3d", {}, False, False, True),
    "vae3d at the AE's widths, bf16 channels-last, all bf16": ("vae3d", {"channels": [32, 64, 128, 256]}, True, True, False),
}


def make_step(name: str, options: dict, channels_last: bool, autocast: bool, edges_in_float32: bool, device, batch: int,
              shape):
    from uadcore.device import amp_dtype
    from uadcore.models import make_model

    model = make_model(name, shape, **options).to(device)
    model.edges_in_float32 = edges_in_float32
    x = torch.rand(batch, 1, *shape, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    dtype = amp_dtype(device, autocast)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model.loss_per_sample(x).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    shape, batch, repeats = ((16, 16, 16), 2, 2) if args.quick else (SHAPE, args.batch, 10)
    limits = device_limits(device, args.quick)
    rows = []
    torch.backends.cudnn.benchmark = True  # as training has it
    for label, (name, options, *flags) in VARIANTS.items():
        if args.quick:
            options = {"channels": [4, 8, 8, 16], "latent": 16}
        step = make_step(name, options, *flags, device, batch, shape)
        flops = step_flops(step)
        seconds = timed(step, device, repeats)
        rows.append({"variant": label, "batch": batch, "scans_per_s": batch / seconds, "tflops": flops / seconds / 1e12,
                     "share_of_matmul": flops / seconds / 1e12 / limits["matmul_tflops"], "flops_per_step": flops})
        print(json.dumps(rows[-1]), flush=True)
        if "(training's)" in label:
            activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
            with torch.profiler.profile(activities=activities) as profiler:
                for _ in range(3):
                    step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
            with open(os.path.join(args.out, f"kernels-{name}.txt"), "w", encoding="utf-8") as handle:
                handle.write(profiler.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=90))
        del step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result = {"machine": machine_info(), "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "limits": limits, "variants": rows, "quick": args.quick}
    with open(os.path.join(args.out, "profile.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
