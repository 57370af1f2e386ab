"""Scans prepared for a model and stacked into tensors (the training set, the scans
a scorer batches): every scan read and prepared once (remembered in this process
and on disk for the next run), its model inputs stacked into one tensor."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from uadcore.errors import UADError
from uadcore.io import ScanEntry, read_mask, read_scan
from uadcore.parallel import process_stream
from uadcore.preprocess import Prepared, Preset
from uadcore.preprocess import cache as disk_cache
from uadcore.preprocess.brain import BRAINS, revision
from uadcore.preprocess.memory import RecentResults


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
    """(entry, preset[, cache root, content key]) -> the scan on the model grid,
    and its lesion mask there (nearest neighbour) when the entry has one; stored in
    the disk cache when a root and key are given. The entry's brain mask, if any,
    replaces skull stripping."""
    entry, preset, *cached = job
    scan = read_scan(entry.path, need_3d=preset.needs_3d)
    prepared = preset.prepare(scan, read_mask(entry.brain, scan) if entry.brain else None)
    mask = None
    if entry.mask:
        # through the registration, as the scan itself went
        mask = prepared.from_scan(read_mask(entry.mask, scan).astype(np.float32), order=0) > 0.5
    if cached and cached[0] and cached[1]:
        disk_cache.store(cached[0], cached[1], prepared, mask)
    return prepared, mask


# Scans already prepared in this process, so that runs sharing scans (an experiment's
# many runs, evaluation after training) read and resample each scan once.
PREPARED = RecentResults(max_items=4096)


def forget_prepared() -> None:
    """Forget the scans prepared in this process (and their brains): only the disk
    cache remains, as for a new process."""
    PREPARED.clear()
    BRAINS.clear()


def _prepare_or_problem(job):
    """`prepare_scan`, or the one-line message of the bad input that stopped it."""
    try:
        return prepare_scan(job)
    except UADError as error:
        return str(error)


def _worker_lost(job) -> str:
    """The problem of a scan whose preparation killed its worker process twice."""
    return (f"{job[0].path}: preparing it ended the process that prepared it (killed by the system, most likely for "
            "running out of memory, or crashed in a library); left out")


def prepare_scans(entries: list[ScanEntry], preset: Preset, workers: int | None = None, progress: bool = True,
                  problems: dict | None = None) -> list:
    """`prepare_scan` of every entry, in parallel and remembered in this process and
    on disk (`uadcore.preprocess.cache`). A bad scan raises its `UADError`, or, when
    a ``problems`` dict is given, is recorded there (path -> message) and gives None."""
    results = []
    for entry, result in iter_prepared(entries, preset, workers, progress, ahead=len(entries)):
        if isinstance(result, str):
            if problems is None:
                raise UADError(result)
            problems[entry.path] = result
            result = None
        results.append(result)
    return results


def iter_prepared(entries: list[ScanEntry], preset: Preset, workers: int | None = None, progress: bool = True,
                  ahead: int | None = None, remember: bool = True):
    """(entry, its `prepare_scan` result or the one-line message of its bad input) of
    every entry, in order, each as soon as it is ready: scans remembered in this
    process or in the disk cache at once, the others prepared by ``workers``
    processes (default one per core), at most ``ahead`` of them (default twice the
    workers) prepared and not yet consumed. The consumer works while the workers go
    on (`uadcore.parallel.process_stream`)."""
    keys = [_cache_key(entry, preset) for entry in entries]
    root = disk_cache.cache_root()
    jobs, cached = {}, {}  # key -> the job that prepares it; key -> its disk-cache key (a hit)
    for key, entry in zip(keys, entries):
        if key in PREPARED or key in jobs or key in cached:
            continue
        content = _content_key(entry, preset) if root else None
        if content and not remember and disk_cache.has(root, content):
            cached[key] = content  # opened (memory-mapped, verified) when its turn comes: read once
            continue
        hit = disk_cache.load(root, content, preset) if content else None
        if hit is None:
            jobs[key] = (entry, preset, root, content)
        else:
            PREPARED.put(key, hit)
    prepared = process_stream(_prepare_or_problem, list(jobs.values()), workers, desc="prepare", unit="scan",
                              progress=progress, ahead=ahead, lost=_worker_lost)
    failed, consumed = {}, set()
    for key, entry in zip(keys, entries):
        if key in jobs and key not in consumed:  # its turn in the workers' queue
            consumed.add(key)
            result = next(prepared)
            if isinstance(result, str):
                failed[key] = result
            elif remember:
                PREPARED.put(key, result)
            yield entry, result
        elif key in failed:
            yield entry, failed[key]
        else:  # remembered, in the disk cache, or a repeated entry (stored by its worker)
            content = cached.get(key) or (jobs[key][3] if key in jobs else None)
            yield entry, (PREPARED.get(key) or (disk_cache.load(root, content, preset) if content else None)
                          or _prepare_or_problem((entry, preset, root, content)))  # a damaged entry: stored again


def _content_key(entry: ScanEntry, preset: Preset) -> str | None:
    """The disk-cache key, or None when a file cannot be read (preparing it will
    then report the problem)."""
    try:
        return disk_cache.content_key([entry.path, entry.mask, entry.brain], preset.to_dict(),
                                       revision(preset.params.get("registration", "affine")))
    except OSError:
        return None


def _cache_key(entry: ScanEntry, preset: Preset) -> tuple:
    """A scan (and mask) as it is on disk now, with the recipe that prepares it."""
    def stamp(path):
        if not path or not os.path.exists(path):
            return path  # reading it will report the problem
        status = os.stat(path)
        return (os.path.abspath(path), status.st_size, status.st_mtime_ns)

    return stamp(entry.path), stamp(entry.mask), stamp(entry.brain), json.dumps(preset.to_dict(), sort_keys=True)


def stack_inputs(prepared: list[Prepared]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Model inputs of prepared scans in one batch: items (M, C, ...) float32,
    regions (M, C, ...) bool, item_scan (M,) int64 (index into ``prepared``)."""
    inputs = [p.inputs() for p in prepared]
    regions = np.concatenate([p.inputs(p.region) > 0.5 for p in prepared])
    owners = np.concatenate([np.full(len(batch), index) for index, batch in enumerate(inputs)])
    return torch.from_numpy(np.concatenate(inputs)), torch.from_numpy(regions), torch.from_numpy(owners).long()


def prepare_set(entries: list[ScanEntry], preset: Preset, workers: int | None = None, progress: bool = True,
                problems: dict | None = None) -> PreparedSet:
    """Read and prepare every scan (in parallel) into one `PreparedSet`; with a
    ``problems`` dict, bad scans are left out and recorded there (see `prepare_scans`)."""
    results = prepare_scans([ScanEntry(e.path, brain=e.brain) for e in entries], preset, workers, progress, problems)
    kept = [(entry, result[0]) for entry, result in zip(entries, results) if result is not None]
    if problems is not None:  # a scan that gives the model nothing to see (no slice or patch inside its brain)
        for entry, prepared in kept:
            if len(prepared.inputs(prepared.region)) == 0:
                problems[entry.path] = f"{entry.path}: no {preset.unit or 'input'} of it lies inside the brain; nothing to train on"
        kept = [(entry, prepared) for entry, prepared in kept if entry.path not in problems]
    if not kept:
        raise UADError(f"none of the {len(entries)} scans could be prepared; the first: {next(iter((problems or {}).values()), '?')}")
    return PreparedSet([e for e, _ in kept], *stack_inputs([p for _, p in kept]))
