"""Outlier removal during training (Behrendt et al.): every few epochs, drop the
scans whose training loss exceeds gamma times the epoch's mean loss.

The audit trail (RUN/outliers.csv) records for every removed scan when, with what
loss, against which threshold, and its label where the data set gave one; scans
left out before training (epoch 0: they could not be prepared) carry the reason.
``score`` names what ``loss``, ``threshold`` and ``loss_over_mean`` measure: the
training loss (the paper's rule; empty in runs made before the column) or the
removal score the run chose (`uadcore.train.config.REMOVAL_SCORES`). Removal by
the out-of-fold audit happens once, before training: its rows have epoch 0 and
score "audit", and RUN/audit.csv ranks every training scan by that score.
"""

from __future__ import annotations

import csv

import numpy as np
import torch

from uadcore.errors import UADError
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


def check_removal_score(config, spec, preset, n_train: int, n_validation: int) -> None:
    """A removal score other than the loss needs what its calibration needs: the
    reconstruction-error map of a whole-volume model on the shared brain grid and
    at least `MIN_SCANS` validation scans; the audit, whole volumes on that grid and
    enough training scans for its folds. Checked before the run folder exists."""
    from uadcore.score.calibrate import MIN_SCANS

    if not config.outlier_removal or config.removal_score == "loss":
        return
    if preset.unit is not None or not preset.prepares_brain or ("rec" not in spec.maps and config.removal_score != "audit"):
        raise UADError(f"removal_score {config.removal_score}: needs a whole-volume brain model (ae3d, vae3d, normative); "
                       f"{config.model} scores {preset.unit or 'volume'}s on its own grid; use removal_score loss")
    if config.removal_score == "audit":
        from uadcore.score.out_of_fold import FOLDS, fewest_scans

        if n_train < fewest_scans(FOLDS):
            raise UADError(f"removal_score audit: an audit in {FOLDS} folds needs at least "
                           f"{fewest_scans(FOLDS)} training scans, this run has {n_train}; use removal_score loss")
        return
    if n_validation < MIN_SCANS:
        raise UADError(f"removal_score {config.removal_score}: needs at least {MIN_SCANS} validation scans to calibrate "
                       f"the map, this run holds out {n_validation}; raise --val-fraction or use removal_score loss")


@torch.no_grad()
def removal_scores(model, train_set, val_set, device, autocast_dtype, removal_score: str, batch_size: int = 8) -> torch.Tensor:
    """Each training scan's removal score, (N,) float64: the statistic named in
    ``removal_score`` ("rec-top1", ...) of its reconstruction-error map calibrated
    on the validation scans' maps at this epoch. Whole-volume items (one per scan)."""
    from uadcore.score.calibrate import HealthyScorer
    from uadcore.score.maps import batched_map_outputs

    statistic = removal_score.split("-", 1)[1]
    was_training = model.training
    model.eval()

    def maps_of(items, regions):  # (B, I, J, K) maps, 0 outside the brain, and the brains
        regions = regions[:, 0].numpy()
        maps = batched_map_outputs(model, items, device, "rec", batch_size, autocast_dtype)["rec"][:, 0].numpy()
        return np.where(regions, maps, 0.0), regions

    score = HealthyScorer(*maps_of(val_set.items, val_set.regions))
    values = []
    for start in range(0, len(train_set.items), batch_size):  # a batch at a time: N maps need not fit in memory
        maps, regions = maps_of(train_set.items[start : start + batch_size], train_set.regions[start : start + batch_size])
        values += [score(m, r, statistic) for m, r in zip(maps, regions)]
    model.train(was_training)
    return torch.tensor(values, dtype=torch.float64)


def was_removed(row: dict) -> bool:
    """An audit row of a scan outlier removal took out (not one left out before
    training because it could not be prepared): removed at an epoch, or before
    training by the audit (rows as stored, or as read from outliers.csv)."""
    return bool(int(float(row["epoch"] or 0))) or row.get("score") == "audit"


def removed(audit: list[dict]) -> int:
    """Scans outlier removal took out."""
    return sum(1 for row in audit if was_removed(row))


def audit_ranking(train_set, seed: int) -> tuple[torch.Tensor, list[dict]]:
    """The out-of-fold audit (`uadcore.score.out_of_fold.normative_scores`) of a
    prepared whole-volume set: every scan's score, (N,) float64, and the ranking
    (audit.csv rows: rank, path, label, score, percentile_in_set), the most
    suspicious first."""
    from uadcore.score.out_of_fold import normative_scores

    scores = torch.from_numpy(normative_scores(train_set.items, train_set.regions, seed=seed))
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    ranking = []
    for rank, index in enumerate(order, start=1):
        others = torch.cat([scores[:index], scores[index + 1 :]])
        entry = train_set.entries[index]
        ranking.append({"rank": rank, "path": entry.path, "label": entry.label or "", "score": round(float(scores[index]), 6),
                        "percentile_in_set": round(100.0 * float((others < scores[index]).double().mean()), 1)})
    return scores, ranking


def curated_entries(state: dict) -> list:
    """The scans of a run's checkpoint ``state`` that a new run should use: the
    training scans outlier removal kept, in the original order, and the held-out
    validation scans (never removed: without them every curate-and-retrain round
    would shrink the data). A review decides scan by scan: `uadcore.review.export`."""
    from uadcore.io import ScanEntry

    kept = [ScanEntry(**entry) for entry, kept in zip(state["train_entries"], state["kept"].tolist()) if kept]
    return kept + [ScanEntry(**entry) for entry in state.get("validation", {}).get("entries", [])]


def write_audit(rows: list[dict], path: str) -> None:
    """RUN/outliers.csv, written atomically."""
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=AUDIT_COLUMNS)
        writer.writeheader()
        writer.writerows({key: row.get(key, "") for key in AUDIT_COLUMNS} for row in rows)
