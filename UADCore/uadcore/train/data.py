"""The training set in memory: every scan read and prepared once, its model inputs
stacked into one tensor (resident on the GPU when it fits)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from uadcore.io import ScanEntry, read_mask, read_scan
from uadcore.parallel import process_map
from uadcore.preprocess import Prepared, Preset, resample


@dataclass
class PreparedSet:
    """Model inputs of a list of scans.

    items: (M, C, ...) float32, all model inputs of all scans (one per scan for a
        whole-volume preset, several for slices or patches).
    regions: (M, C, ...) bool, the brain (or foreground) of each item.
    item_scan: (M,) int64, index into ``entries`` of each item's scan.
    """

    entries: list[ScanEntry]
    items: torch.Tensor
    regions: torch.Tensor
    item_scan: torch.Tensor

    def __len__(self) -> int:
        return len(self.entries)

    def items_of(self, scans: torch.Tensor) -> torch.Tensor:
        """Indices of the items of the scans flagged in ``scans`` ((N,) bool)."""
        return torch.nonzero(scans[self.item_scan], as_tuple=True)[0]


def prepare_scan(job) -> tuple[Prepared, np.ndarray | None]:
    """(entry, preset) -> the scan on the model grid, and its lesion mask there
    (nearest neighbour) when the entry has one."""
    entry, preset = job
    scan = read_scan(entry.path, need_3d=preset.needs_3d)
    prepared = preset.prepare(scan)
    mask = None
    if entry.mask:
        mask = resample(read_mask(entry.mask, scan).astype(np.float32), scan.grid, prepared.grid, order=0) > 0.5
    return prepared, mask


def prepare_scans(entries: list[ScanEntry], preset: Preset, workers: int | None = None, progress: bool = True) -> list:
    """`prepare_scan` of every entry, in parallel; stops at the first bad file."""
    return process_map(prepare_scan, [(entry, preset) for entry in entries], workers, desc="prepare", unit="scan", progress=progress)


def stack_inputs(prepared: list[Prepared]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Model inputs of prepared scans in one batch: items (M, C, ...) float32,
    regions (M, C, ...) bool, item_scan (M,) int64 (index into ``prepared``)."""
    inputs = [p.inputs() for p in prepared]
    regions = np.concatenate([p.inputs(p.region) > 0.5 for p in prepared])
    owners = np.concatenate([np.full(len(batch), index) for index, batch in enumerate(inputs)])
    return torch.from_numpy(np.concatenate(inputs)), torch.from_numpy(regions), torch.from_numpy(owners).long()


def prepare_set(entries: list[ScanEntry], preset: Preset, workers: int | None = None, progress: bool = True) -> PreparedSet:
    """Read and prepare every scan (in parallel) into one `PreparedSet`."""
    prepared = [p for p, _ in prepare_scans([ScanEntry(e.path) for e in entries], preset, workers, progress)]
    return PreparedSet(list(entries), *stack_inputs(prepared))
