"""The files of a run folder: the one place that knows their names.

    config.json      the full configuration, written at the start
    checkpoint.pt    weights, optimiser, epoch, kept scans, audit, history, ...
    outliers.csv     every removed (or excluded) scan: when, its score, the threshold
    history.csv      loss and counts per epoch
    kept.csv         manifest of the scans still in the training set
    audit.csv        every training scan ranked by the out-of-fold audit (removal_score audit)
    STOP             created by anyone to stop the run after the current step
    .uad-lock        held by the one process training the run, while it does
"""

from __future__ import annotations

import os

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"
OUTLIERS_NAME = "outliers.csv"
HISTORY_NAME = "history.csv"
KEPT_NAME = "kept.csv"
AUDIT_NAME = "audit.csv"  # also the ranking `uad audit` writes in its folder
AUDITED_SCANS = "scans.csv"  # the manifest of the scans a `uad audit` ranked, in its folder
AUDIT_PLAN = "audit.json"  # what a `uad audit` audited (its data) and how (model, folds, seed, size)
STOP_FILE = "STOP"
LOCK_NAME = ".uad-lock"


class RunFiles:
    """The paths of the files of the run folder ``folder``."""

    def __init__(self, folder: str):
        self.folder = folder
        self.checkpoint = os.path.join(folder, CHECKPOINT_NAME)
        self.config = os.path.join(folder, CONFIG_NAME)
        self.outliers = os.path.join(folder, OUTLIERS_NAME)
        self.history = os.path.join(folder, HISTORY_NAME)
        self.kept = os.path.join(folder, KEPT_NAME)
        self.audit = os.path.join(folder, AUDIT_NAME)
        self.stop = os.path.join(folder, STOP_FILE)
        self.lock = os.path.join(folder, LOCK_NAME)
