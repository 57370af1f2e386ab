"""Where a command may write its outputs: never over one of its inputs, never into
the folder of an input scan or mask (at any depth; a DICOM series is a folder of
its own), and never over an existing file unless the user says so (``--force``),
and even then only over a file UAD wrote as that kind of output, never over a file
of a run folder. Symbolic links are resolved first, so a link cannot smuggle an
output onto an input."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable

from uadcore.errors import UADError
from uadcore.io.datasets import utf8_name
from uadcore.io.run_files import CHECKPOINT_NAME, CONFIG_NAME

ANOMALY_MAP = "uad anomaly map"  # the NIfTI description (descrip) of every map UAD writes


def data_folders(entries) -> list[str]:
    """The folders of the scans, lesion masks and brain masks of ``entries``
    (`ScanEntry`s; a DICOM series' own folder)."""
    folders = []
    for entry in entries:
        for path in (entry.path, entry.mask, entry.brain):
            if path:
                folders.append(path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)))
    return list(dict.fromkeys(folders))


def check_output(path: str, input_files: Iterable[str] = (), input_folders: Iterable[str] = (), force: bool = False,
                 kind: str | None = None) -> str:
    """``path`` (returned absolute) if a command may write it; otherwise `UADError`
    naming it: it is one of ``input_files``, lies inside one of ``input_folders``,
    or exists and ``force`` is false, or is a file of a run folder, or is not what
    UAD writes as ``kind`` (a key of `KINDS`: the output this is)."""
    target = os.path.realpath(utf8_name(path))
    for source in input_files:
        if source and os.path.exists(source) and os.path.realpath(source) == target:
            raise UADError(f"{path}: is an input of this command; write the output elsewhere")
    folder = enclosing_folder(path, input_folders)
    if folder is not None:
        raise UADError(f"{path}: lies inside {folder}, a folder of input scans; UAD never writes there, choose another place")
    if os.path.isdir(target):
        raise UADError(f"{path}: is a folder; name a file")
    if os.path.exists(target):
        if not force:
            raise UADError(f"{path}: exists; choose another name, or pass --force to replace it")
        run = os.path.dirname(target)
        if any(os.path.isfile(os.path.join(run, name)) for name in (CHECKPOINT_NAME, CONFIG_NAME)):
            raise UADError(f"{path}: is a file of the run folder {run}; UAD never replaces a run's files, choose another name")
        if kind is not None and not KINDS[kind][1](target):
            raise UADError(f"{path}: exists and is not {KINDS[kind][0]} UAD wrote; --force replaces only those, "
                           "choose another name")
    return os.path.abspath(path)


def _first_bytes(path: str, count: int) -> bytes:
    """The first ``count`` bytes of ``path``, inflated when it is gzip."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(count)
        if start[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as handle:
                start = handle.read(count)
        return start
    except (OSError, EOFError, gzip.BadGzipFile):
        return b""


def _nifti_description(path: str) -> str:
    """The description field (descrip) of a NIfTI-1 file, '' for another file."""
    header = _first_bytes(path, 348)
    if len(header) < 348 or header[344:348] not in (b"n+1\0", b"ni1\0"):
        return ""
    return header[148:228].split(b"\0", 1)[0].decode("ascii", "replace")


def _first_line(path: str) -> str:
    return _first_bytes(path, 4096).split(b"\n", 1)[0].decode("utf-8", "replace").strip()


# what --force may replace: (what it is, in words; whether an existing file is one UAD wrote)
KINDS = {
    "manifest": ("a manifest", lambda path: _first_line(path).startswith("path,label,mask")),
    "map": ("an anomaly map", lambda path: _nifti_description(path).startswith(ANOMALY_MAP)),
    "scores": ("a table of scores", lambda path: _first_line(path).startswith("path,map_file,")),
    "picture": ("a PNG picture", lambda path: _first_bytes(path, 8) == b"\x89PNG\r\n\x1a\n"),
    "decisions": ("a table of review decisions", lambda path: _first_line(path).startswith("path,label,rank,score,scored_by,")),
}


def enclosing_folder(path: str, folders: Iterable[str]) -> str | None:
    """The first of ``folders`` that ``path`` is (or lies inside, at any depth), both
    with their symbolic links resolved (``path`` need not exist yet); None if none."""
    target = os.path.realpath(path)
    for folder in folders:
        resolved = os.path.realpath(folder)
        if os.path.commonpath([target, resolved]) == resolved:
            return resolved
    return None


def map_names(paths: list[str]) -> list[str]:
    """A map file name for each scan: its name with ``_map.nii.gz`` (``-2``, ``-3``
    ... where two scans share a name, or one is listed twice)."""
    from uadcore.io.scans import SCAN_SUFFIXES

    names, taken = [], set()
    for path in paths:
        stem = os.path.basename(os.path.normpath(path))
        for suffix in sorted(SCAN_SUFFIXES, key=len, reverse=True):
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        name, count = f"{stem}_map.nii.gz", 1
        while name in taken:
            count += 1
            name = f"{stem}-{count}_map.nii.gz"
        taken.add(name)
        names.append(name)
    return names
