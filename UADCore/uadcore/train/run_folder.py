"""The run folder as training writes it (names in `uadcore.io.run_files`): created
with its config.json and owned by one process at a time (`RunOwner`), the
readable copies of the checkpoint (outliers.csv, history.csv, kept.csv), and
nothing left behind by a start that failed."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import socket

from uadcore.errors import UADError
from uadcore.io import ScanEntry, write_manifest
from uadcore.io.datasets import fingerprint
from uadcore.io.atomic import atomic_path
from uadcore.io.checkpoint import write_failure
from uadcore.io.outputs import data_folders, enclosing_folder
from uadcore.io.run_files import LOCK_NAME, RunFiles
from uadcore.train.outliers import write_audit

DATA_FINGERPRINT = "data_fingerprint"  # in config.json, beside the settings


def create_run_dir(files: RunFiles, config, entries: list[ScanEntry], owner: "RunOwner", restart: bool = False) -> None:
    """Make the (new, or empty) run folder, never inside an input folder, own it
    (``owner``'s lock, taken before the folder is looked at, so that no other start
    can slip in between) and write config.json."""
    run_dir = files.folder
    # links resolved on both sides: a link to the data (or into it) is the data
    input_folders = ([config.data] if os.path.isdir(config.data) else []) + data_folders(entries)
    folder = enclosing_folder(run_dir, input_folders)
    if folder is not None:
        raise UADError(f"{run_dir}: lies inside the input folder {folder}; UAD never writes there, choose another --out")
    owner.make_folder()
    owner.acquire()
    if not restart and [name for name in os.listdir(run_dir) if name != LOCK_NAME]:
        raise UADError(f"{run_dir}: exists and is not empty; resume it with --resume, or choose a new --out")
    with atomic_path(files.config) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        json.dump({**config.to_dict(), DATA_FINGERPRINT: fingerprint(entries)}, handle, indent=1)
    owner.wrote_config = not restart


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


class RunOwner:
    """This process's claim on a run folder: the lock (`fcntl.flock` on RUN/.uad-lock,
    held while the process trains the run and let go by the system however the
    process ends, SIGKILL too), and what this start made there, so that a start
    that fails removes only that: never another process's run."""

    def __init__(self, files: RunFiles):
        self.files = files
        self.made_folder = False  # this start created the run folder
        self.wrote_config = False  # ... and its config.json (a fresh start)
        self._handle = None

    def make_folder(self) -> None:
        os.makedirs(os.path.dirname(self.files.folder), exist_ok=True)
        try:
            os.mkdir(self.files.folder)  # atomic: of two starts, one makes it
            self.made_folder = True
        except FileExistsError:
            if not os.path.isdir(self.files.folder):
                raise UADError(f"{self.files.folder}: exists and is not a folder; choose a new --out") from None

    def acquire(self) -> None:
        """Hold the run's lock, or refuse: another process is training this run."""
        if self._handle is not None:
            return
        while True:
            handle = open(self.files.lock, "a+", encoding="utf-8")
            if not _try_lock(handle):
                handle.seek(0)
                holder = handle.read().strip() or "?"
                handle.close()
                raise UADError(f"{self.files.folder}: another uad process (pid {holder}) is training this run; wait for it "
                               "to end, or stop it (create RUN/STOP), then resume")
            try:  # the file we locked may have been let go and removed meanwhile: lock the one that is there
                same = os.path.samestat(os.fstat(handle.fileno()), os.stat(self.files.lock))
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        handle.seek(0), handle.truncate()
        handle.write(f"{os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._handle = handle

    def release(self, failed: bool) -> None:
        """Let the run go. After a fresh start that ``failed`` before its first
        checkpoint, what it made goes too (config.json, the folder if it made it); a
        run with a checkpoint stays, resumable."""
        if self._handle is None:
            return
        if failed and self.wrote_config and not os.path.isfile(self.files.checkpoint):
            for path in (self.files.config, self.files.stop):
                with contextlib.suppress(OSError):
                    os.remove(path)
        with contextlib.suppress(OSError):
            os.remove(self.files.lock)  # before it is unlocked: a process waiting for it sees it gone and takes a new one
        self._handle.close()
        self._handle = None
        if failed and self.made_folder and not os.path.isfile(self.files.checkpoint):
            with contextlib.suppress(OSError):
                os.rmdir(self.files.folder)  # only when empty: never anything else that is there


def _try_lock(handle) -> bool:
    """An exclusive lock on the open file ``handle`` without waiting: True if held."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


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
