"""Outlier removal during training (Behrendt et al.): every few epochs, drop the
scans whose training loss exceeds gamma times the epoch's mean loss.

The audit trail (RUN/outliers.csv) records for every removed scan when, with what
loss, against which threshold, and its label where the data set gave one; scans
left out before training (epoch 0: they could not be prepared) carry the reason.
``score`` names what ``loss``, ``threshold`` and ``loss_over_mean`` measure: the
training loss (the paper's rule; empty in runs made before the column) or the
removal score the run chose (`uadcore.train.config.REMOVAL_SCORES`).
"""

from __future__ import annotations

import csv

import torch

from uadcore.io.atomic import atomic_path

AUDIT_COLUMNS = ("path", "epoch", "loss", "threshold", "loss_over_mean", "label", "reason", "score")


def find_outliers(losses: torch.Tensor, kept: torch.Tensor, gamma: float) -> tuple[torch.Tensor, float, float]:
    """Scans to remove: kept scans whose loss > gamma x mean loss of the kept scans.

    losses: (N,) per-scan losses of this epoch; kept: (N,) bool.
    Returns (remove (N,) bool, threshold, mean loss).
    """
    mean = float(losses[kept].mean())
    threshold = gamma * mean
    return kept & (losses > threshold), threshold, mean


def curated_entries(state: dict, keep_removed=()) -> list:
    """The scans of a run's checkpoint ``state`` that a new run should use: the
    training scans outlier removal kept, the removed ones a reviewer decided to keep
    (paths in ``keep_removed``), in the original order, and the held-out
    validation scans (never removed: without them every curate-and-retrain round
    would shrink the data)."""
    from uadcore.io import ScanEntry

    keep_removed = set(keep_removed)
    kept = [ScanEntry(**entry) for entry, kept in zip(state["train_entries"], state["kept"].tolist())
            if kept or entry["path"] in keep_removed]
    return kept + [ScanEntry(**entry) for entry in state.get("validation", {}).get("entries", [])]


def write_audit(rows: list[dict], path: str) -> None:
    """RUN/outliers.csv, written atomically."""
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=AUDIT_COLUMNS)
        writer.writeheader()
        writer.writerows({key: row.get(key, "") for key in AUDIT_COLUMNS} for row in rows)
