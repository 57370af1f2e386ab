"""Which device computes, and in what precision: CUDA when present (mixed
precision), the CPU always.

A device is picked once, by `pick_device`, and passed down as a `torch.device`;
everything below takes that object and never picks again (a `torch.device` given to
`pick_device` comes back unchanged, so passing one down cannot lose it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uadcore.errors import UADError

if TYPE_CHECKING:  # torch is imported where a device is made or used: `--device`'s choices come without it
    import torch


DEVICES = ("auto", "cpu", "cuda")  # what --device and the panels offer (read without torch: `uad train --help`)


def pick_device(name: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """The device named by ``name``: ``auto`` is CUDA when present, else the CPU;
    ``cuda`` is GPU ``local_rank`` (a torchrun rank's own GPU); ``cuda:N`` that GPU.
    A `torch.device` is returned as it is. Asking for CUDA where there is none is an
    error, never a quiet fall-back to the CPU."""
    import torch

    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError) as error:
            raise UADError(f"device '{name}' is not one UAD knows; devices: {', '.join(DEVICES)}") from error
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UADError(f"device {device}: no CUDA GPU is available here (use --device auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UADError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def use_device(device: torch.device) -> None:
    """Make a CUDA ``device`` the current one and let cuDNN pick its fastest kernels
    once (training and scoring feed inputs of one shape); nothing on the CPU."""
    import torch

    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True


def amp_dtype(device: torch.device, enabled: bool = True):
    """The autocast dtype for ``device``: bfloat16 on CUDA GPUs that have it (compute
    capability 8 and later), else float16 (trained with a GradScaler); None (full
    float32) on the CPU, where autocast would only slow convolutions down."""
    import torch

    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16


def describe(device: torch.device) -> str:
    """The GPU's name and memory, or "CPU"."""
    import torch

    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return f"{properties.name} ({properties.total_memory / 2**30:.0f} GiB)"
    return "CPU"
