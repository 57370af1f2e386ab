"""Sample scores of scans, from the maps or the per-input scores of their model
inputs: the mean of a map inside the brain (for the reconstruction error, the
sample score of Behrendt et al.), or, for kinds that score each slice or patch
(`MapKind.per_item`), the highest score among the scan's inputs: a scan is as abnormal
as its most abnormal slice or patch."""

from __future__ import annotations

import torch

from uadcore.score.maps import batched_item_scores, batched_map_outputs, is_item_kind


def mean_inside(maps: torch.Tensor, regions: torch.Tensor, item_scan: torch.Tensor, n_scans: int) -> torch.Tensor:
    """Per-scan mean of ``maps`` over the voxels inside ``regions`` of all its items.

    maps, regions: (M, C, ...); item_scan: (M,). Returns (N,) float64.
    """
    inside = regions.flatten(1)
    # per-item sums in float32 (pairwise, so ~1e-7 relative), gathered per scan in float64
    total = torch.where(inside, maps.flatten(1).float(), 0.0).sum(dim=1).double()
    count = inside.sum(dim=1).double()
    scan_total = torch.zeros(n_scans, dtype=torch.float64).index_add_(0, item_scan, total)
    scan_count = torch.zeros(n_scans, dtype=torch.float64).index_add_(0, item_scan, count)
    return scan_total / scan_count.clamp_min(1.0)


def max_per_scan(values: torch.Tensor, item_scan: torch.Tensor, n_scans: int) -> torch.Tensor:
    """Per-scan maximum of per-item ``values`` (M,); (N,) float64 (-inf for a scan without items)."""
    out = torch.full((n_scans,), float("-inf"), dtype=torch.float64)
    return out.scatter_reduce_(0, item_scan, values.double(), reduce="amax")


def mean_per_scan(values: torch.Tensor, item_scan: torch.Tensor, n_scans: int) -> torch.Tensor:
    """Mean of per-item ``values`` (M,) over each scan's items, e.g. training losses:
    (N,) float64 (NaN for a scan without items)."""
    total = torch.zeros(n_scans, dtype=torch.float64).index_add_(0, item_scan, values.double())
    count = torch.zeros(n_scans, dtype=torch.float64).index_add_(0, item_scan, torch.ones_like(values, dtype=torch.float64))
    return total / count


def item_outputs(model, items, device, kind: str, batch_size: int = 8, amp_dtype=None, reference: bool = False) -> dict:
    """One pass of the model over every item: {kind: its maps (M, C, ...) or, for
    an item kind, its scores (M,)}, plus whatever else that pass gives for free
    (see `uadcore.score.maps.map_outputs`)."""
    if is_item_kind(kind):
        return {kind: batched_item_scores(model, items, device, kind, batch_size, amp_dtype)}
    return batched_map_outputs(model, items, device, kind, batch_size, amp_dtype, reference)


def scan_scores(outputs: dict, regions, item_scan, n_scans: int) -> dict:
    """The sample score of every scan for each of ``outputs`` (as `item_outputs`
    gives them): maps -> mean inside the brain; item kinds -> the highest item
    score; other per-item values (a VAE's kl, elbo) -> their mean over the items.
    Each (N,) float64."""
    scores = {}
    for name, values in outputs.items():
        if is_item_kind(name):
            scores[name] = max_per_scan(values, item_scan, n_scans)
        elif values.dim() > 1:
            scores[name] = mean_inside(values, regions, item_scan, n_scans)
        else:
            scores[name] = mean_per_scan(values, item_scan, n_scans)
    return scores
