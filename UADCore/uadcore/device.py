"""Which device computes, and in what precision: CUDA when present (mixed
precision), the CPU always."""

from __future__ import annotations

import torch

from uadcore.errors import UADError


DEVICES = ("auto", "cpu", "cuda")  # what --device and the panels offer


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` is CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UADError("--device cuda: no CUDA GPU is available here (use --device auto or cpu)")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def amp_dtype(device: torch.device, enabled: bool = True):
    """The autocast dtype for this device: bfloat16 (or float16) on CUDA, None (full
    float32) on the CPU, where autocast would only slow convolutions down."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def describe(device: torch.device) -> str:
    """The GPU's name and memory, or "CPU"."""
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return f"{properties.name} ({properties.total_memory / 2**30:.0f} GiB)"
    return "CPU"
