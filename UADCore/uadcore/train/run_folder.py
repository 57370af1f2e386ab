"""The run folder as training writes it (names in `uadcore.io.run_files`): created
with its config.json, the readable copies of the checkpoint (outliers.csv,
history.csv, kept.csv), and nothing left behind by a start that failed."""

from __future__ import annotations

import contextlib
import csv
import json
import os

from uadcore.errors import UADError
from uadcore.io import ScanEntry, write_manifest
from uadcore.io.datasets import fingerprint
from uadcore.io.atomic import atomic_path
from uadcore.io.checkpoint import write_failure
from uadcore.io.outputs import data_folders, enclosing_folder
from uadcore.io.run_files import CONFIG_NAME, STOP_FILE, RunFiles
from uadcore.train.outliers import write_audit

DATA_FINGERPRINT = "data_fingerprint"  # in config.json, beside the settings


def create_run_dir(files: RunFiles, config, entries: list[ScanEntry], restart: bool = False) -> None:
    """Make the (new, or empty) run folder, never inside an input folder, and write config.json."""
    run_dir = files.folder
    if not restart and os.path.exists(run_dir) and (not os.path.isdir(run_dir) or os.listdir(run_dir)):
        raise UADError(f"{run_dir}: exists and is not empty; resume it with --resume, or choose a new --out")
    # links resolved on both sides: a link to the data (or into it) is the data
    input_folders = ([config.data] if os.path.isdir(config.data) else []) + data_folders(entries)
    folder = enclosing_folder(run_dir, input_folders)
    if folder is not None:
        raise UADError(f"{run_dir}: lies inside the input folder {folder}; UAD never writes there, choose another --out")
    os.makedirs(run_dir, exist_ok=True)
    with atomic_path(files.config) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        json.dump({**config.to_dict(), DATA_FINGERPRINT: fingerprint(entries)}, handle, indent=1)


def stored_fingerprint(files: RunFiles) -> str | None:
    """The data fingerprint config.json holds (None: a run of an older UAD)."""
    with open(files.config, encoding="utf-8") as handle:
        return json.load(handle).get(DATA_FINGERPRINT)


def check_same_data(files: RunFiles, config, entries: list[ScanEntry], expected: str | None) -> None:
    """A resumed run trains on the data it began with, or refuses: the scans of
    ``entries`` must have the fingerprint ``expected`` (from config.json before the
    first checkpoint, from the checkpoint after; None, a run of an older UAD: not checked)."""
    if expected is None:
        return
    try:
        now = fingerprint(entries)
    except OSError as error:
        now = f"unreadable: {error}"
    if now != expected:
        raise UADError(f"{config.data}: the training scans changed since the run {files.folder} began ({len(entries)} "
                       "scans now; added, removed, relabelled, rewritten or gone); start a new run with --out")


def forget_failed_start(files: RunFiles, remove_folder: bool) -> None:
    """A fresh start that failed before its first checkpoint leaves nothing: its
    config.json (and the folder, when this start made it) go. A failure after a
    checkpoint leaves the run, resumable."""
    if os.path.isfile(files.checkpoint):
        return
    for name in (CONFIG_NAME, STOP_FILE):
        with contextlib.suppress(OSError):
            os.remove(os.path.join(files.folder, name))
    if remove_folder:
        with contextlib.suppress(OSError):
            os.rmdir(files.folder)  # only when empty: never anything else that is there


def write_readable_copies(files: RunFiles, audit: list[dict], history: list[dict], kept_entries: list[ScanEntry]) -> None:
    """outliers.csv, history.csv and kept.csv; the checkpoint is what a resume needs."""
    try:
        write_audit(audit, files.outliers)
        write_history(history, files.history)
        write_manifest(kept_entries, files.kept)
    except OSError as error:
        raise write_failure(files.folder, error) from error


def write_history(history: list[dict], path: str) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        columns = list(dict.fromkeys(key for record in history for key in record))  # some only at some epochs (removal)
        writer = csv.DictWriter(handle, fieldnames=columns or ["epoch", "loss", "kept", "removed", "seconds"])
        writer.writeheader()
        writer.writerows(history)
