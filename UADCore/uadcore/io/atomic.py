"""Writing files so that a reader, or a run killed mid-write, never sees half a file."""

from __future__ import annotations

import contextlib
import os


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
