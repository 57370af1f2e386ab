"""Sample scores from voxel maps: the mean of a map inside the brain (for the
reconstruction error, the sample score of Behrendt et al.)."""

from __future__ import annotations

import torch


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
