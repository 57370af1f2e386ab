"""Where a command may write its outputs: never over one of its inputs, never into
the folder of an input scan or mask (at any depth; a DICOM series is a folder of
its own), and never over an existing file unless the user says so (``--force``).
Symbolic links are resolved first, so a link cannot smuggle an output onto an input."""

from __future__ import annotations

import os
from collections.abc import Iterable

from uadcore.errors import UADError


def data_folders(entries) -> list[str]:
    """The folders of the scans, lesion masks and brain masks of ``entries``
    (`ScanEntry`s; a DICOM series' own folder)."""
    folders = []
    for entry in entries:
        for path in (entry.path, entry.mask, entry.brain):
            if path:
                folders.append(path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)))
    return list(dict.fromkeys(folders))


def check_output(path: str, input_files: Iterable[str] = (), input_folders: Iterable[str] = (), force: bool = False) -> str:
    """``path`` (returned absolute) if a command may write it; otherwise `UADError`
    naming it: it is one of ``input_files``, lies inside one of ``input_folders``,
    or exists and ``force`` is false."""
    target = os.path.realpath(path)
    for source in input_files:
        if source and os.path.exists(source) and os.path.realpath(source) == target:
            raise UADError(f"{path}: is an input of this command; write the output elsewhere")
    folder = enclosing_folder(path, input_folders)
    if folder is not None:
        raise UADError(f"{path}: lies inside {folder}, a folder of input scans; UAD never writes there, choose another place")
    if os.path.isdir(target):
        raise UADError(f"{path}: is a folder; name a file")
    if os.path.exists(target) and not force:
        raise UADError(f"{path}: exists; choose another name, or pass --force to replace it")
    return os.path.abspath(path)


def enclosing_folder(path: str, folders: Iterable[str]) -> str | None:
    """The first of ``folders`` that ``path`` is (or lies inside, at any depth), both
    with their symbolic links resolved (``path`` need not exist yet); None if none."""
    target = os.path.realpath(path)
    for folder in folders:
        resolved = os.path.realpath(folder)
        if os.path.commonpath([target, resolved]) == resolved:
            return resolved
    return None
