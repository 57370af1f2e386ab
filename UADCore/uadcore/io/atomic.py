"""Writing files so that a reader, or a run killed mid-write, never sees half a file."""

from __future__ import annotations

import contextlib
import os
import re
import shutil

from uadcore.errors import UADError

# what `atomic_path` and the cache's `store_entry` leave behind when a process dies mid-write
_TEMPORARY = re.compile(r"^\.(?:tmp|incoming)-(\d+)-")


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside ``path`` (same folder, same suffix) to write
    to; on success it replaces ``path`` in one rename, on failure it is removed."""
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".tmp-{os.getpid()}-{name}")  # keeps the suffix (.nii.gz, .csv)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_error(path: str, error: Exception) -> UADError:
    """The one-line error for a file that could not be written, and why (no space
    left on the device holding it, a file size limit, ...)."""
    import errno

    folder = os.path.dirname(os.path.abspath(path))
    try:
        full = shutil.disk_usage(folder).free < (64 << 20)
    except OSError:
        full = False
    if getattr(error, "errno", None) == errno.ENOSPC or full:
        reason = f"no space left on the device holding {folder}"
    elif isinstance(error, OSError):
        reason = error.strerror or str(error)
    else:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return UADError(f"{path}: could not be written ({reason})")


def remove_stale_temporaries(folder: str) -> int:
    """Remove the temporary files and folders in ``folder`` that a killed process
    left (``.tmp-PID-*``, ``.incoming-PID-*`` whose PID is no longer running);
    returns how many. Never touches another live process's files."""
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        match = _TEMPORARY.match(name)
        if match is None or _alive(int(match.group(1))):
            continue
        path = os.path.join(folder, name)
        try:
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
            removed += 1
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: leave its files alone
    return True
