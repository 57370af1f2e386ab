"""Reconstruction-error scores: the voxel map |x - x_hat| and the sample score, the
mean of that map inside the brain (Behrendt et al.)."""

from __future__ import annotations

import torch


@torch.no_grad()
def rec_maps(model, items: torch.Tensor, device, batch_size: int = 8, amp_dtype=None) -> torch.Tensor:
    """Absolute reconstruction error of every item.

    items: (M, C, ...) float32 (any device). Returns (M, C, ...) float32 on the CPU.
    The model is in eval mode; each item's map does not depend on its batch.
    """
    model.eval()
    maps = []
    for start in range(0, len(items), batch_size):
        x = items[start : start + batch_size].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            reconstruction = model.reconstruct(x)
        maps.append((reconstruction.float() - x).abs().cpu())
    return torch.cat(maps) if maps else torch.zeros_like(items)


def mean_inside(maps: torch.Tensor, regions: torch.Tensor, item_scan: torch.Tensor, n_scans: int) -> torch.Tensor:
    """Per-scan mean of ``maps`` over the voxels inside ``regions`` of all its items.

    maps, regions: (M, C, ...); item_scan: (M,). Returns (N,) float64.
    """
    inside = regions.flatten(1).double()
    total = (maps.flatten(1).double() * inside).sum(dim=1)
    count = inside.sum(dim=1)
    scan_total = torch.zeros(n_scans, dtype=torch.float64).index_add_(0, item_scan, total)
    scan_count = torch.zeros(n_scans, dtype=torch.float64).index_add_(0, item_scan, count)
    return scan_total / scan_count.clamp_min(1.0)
