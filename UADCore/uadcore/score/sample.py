"""Sample scores of scans, from the maps or the per-input scores of their model
inputs: the mean of a map inside the brain (for the reconstruction error, the
sample score of Behrendt et al.), or, for kinds that score each slice or patch
(`ITEM_KINDS`), the highest score among the scan's inputs: a scan is as abnormal
as its most abnormal slice or patch."""

from __future__ import annotations

import torch

from uadcore.score.maps import ITEM_KINDS, batched_item_scores, batched_maps


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


def max_per_scan(values: torch.Tensor, item_scan: torch.Tensor, n_scans: int) -> torch.Tensor:
    """Per-scan maximum of per-item ``values`` (M,); (N,) float64 (-inf for a scan without items)."""
    out = torch.full((n_scans,), float("-inf"), dtype=torch.float64)
    return out.scatter_reduce_(0, item_scan, values.double(), reduce="amax")


def score_items(model, items, regions, item_scan, n_scans: int, kind: str, device, batch_size: int = 8,
                amp_dtype=None, reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``kind`` outputs of every item and the sample score of every scan.

    items, regions: (M, C, ...); item_scan: (M,). Returns (outputs, scores): outputs
    are maps (M, C, ...) or, for an item kind, scores (M,); scores are (N,) float64.
    """
    if kind in ITEM_KINDS:
        values = batched_item_scores(model, items, device, kind, batch_size, amp_dtype)
        return values, max_per_scan(values, item_scan, n_scans)
    maps = batched_maps(model, items, device, kind, batch_size, amp_dtype, reference)
    return maps, mean_inside(maps, regions, item_scan, n_scans)
