"""Data sets: a folder of scans, or a manifest CSV naming scans, labels and masks.

Manifest format (header required, columns ``label``, ``mask`` and ``brain``
optional, extra columns ignored)::

    path,label,mask
    healthy/sub-0001.nii.gz,healthy,
    unhealthy/sub-0081.nii.gz,unhealthy,masks/sub-0081_mask.nii.gz

``label`` is ``healthy``, ``unhealthy`` or empty (unknown); ``mask`` a lesion mask;
``brain`` a brain mask on the scan's grid, which replaces skull stripping. Relative paths are
relative to the manifest's folder. A DICOM series is named by its folder. A scan
listed twice (or one file under two labels) is refused with both line numbers.

A folder given as a data set is read through its ``manifest.csv`` when it has one
(with a note saying so). Without one it is searched for scans; files and folders
named like masks or segmentations (``*_mask*``, ``*_seg*``, ``masks/``,
``labels/``, ...) are never taken for scans (a note says how many were passed over).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass

from uadcore.errors import ManifestError, warn
from uadcore.io.atomic import atomic_path
from uadcore.io.scans import SCAN_SUFFIXES, has_scan_suffix

LABELS = ("healthy", "unhealthy")
MANIFEST_COLUMNS = ("path", "label", "mask")
OPTIONAL_COLUMNS = ("brain",)
FOLDER_MANIFEST = "manifest.csv"  # a folder with this file is the data set it lists
# a word of a file or folder name that marks a mask or segmentation, never a scan
MASK_WORD = re.compile(r"(?:^|[_\-.])(?:mask|masks|brainmask|seg|segs|segmentation|segmentations|label|labels|labelmap)(?=$|[_\-.])",
                       re.IGNORECASE)


@dataclass(frozen=True)
class ScanEntry:
    """One scan of a data set: absolute path, label (None = unknown), lesion mask
    path, brain mask path (replaces skull stripping)."""

    path: str
    label: str | None = None
    mask: str | None = None
    brain: str | None = None


def load_dataset(source: str) -> list[ScanEntry]:
    """The scans of a folder (searched recursively), of a manifest CSV, or one scan;
    every name they have `utf8_name`."""
    entries = _load_dataset(os.fspath(source))
    for entry in entries:
        for path in (entry.path, entry.mask, entry.brain):
            if path:
                utf8_name(path)
    return entries


def utf8_name(path: str) -> str:
    """``path``, if its name can be written as UTF-8; otherwise a `ManifestError`
    naming it. A name of other bytes (Latin-1 from an old system) cannot go into a
    manifest, JSON or a terminal: refused before any work, not after it."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise ManifestError(f"{shown}: its name is not valid UTF-8 (bytes of another encoding); rename it") from None
    return path


def _load_dataset(source: str) -> list[ScanEntry]:
    if os.path.isdir(source):
        manifest = os.path.join(source, FOLDER_MANIFEST)
        if os.path.isfile(manifest):
            warn(f"{source}: reading the scans its {FOLDER_MANIFEST} lists (with their labels and masks)")
            return read_manifest(manifest)
        return find_scans(source)
    if os.path.isfile(source) and source.lower().endswith(".csv"):
        return read_manifest(source)
    if os.path.isfile(source) and has_scan_suffix(source):
        return [ScanEntry(os.path.abspath(source))]
    if not os.path.exists(source):
        raise ManifestError(f"{source}: no such folder or manifest")
    raise ManifestError(f"{source}: is not a folder of scans, a manifest .csv or a scan file")


def find_scans(folder: str) -> list[ScanEntry]:
    """Every scan file under ``folder``, and every sub-folder of DICOM files as one
    series, sorted by path. Labels are unknown."""
    found, passed_over = [], []
    for root, folders, files in os.walk(folder):
        passed_over += [os.path.join(root, f) for f in folders if not f.startswith(".") and looks_like_mask(f)]
        folders[:] = sorted(f for f in folders if not f.startswith(".") and not looks_like_mask(f))
        visible = [f for f in files if not f.startswith(".")]
        # a folder is a DICOM series when any of its files is DICOM (decided from all
        # of them: one stray file must not flip it); other files there are not scans
        dicom = [f for f in visible if (f.lower().endswith(".dcm") or "." not in f) and _is_dicom(os.path.join(root, f))]
        if dicom:
            found.append(os.path.abspath(root))
            visible = [f for f in visible if f not in dicom and not f.lower().endswith(".dcm") and "." in f]
        for name in (f for f in visible if has_scan_suffix(f)):
            (passed_over if looks_like_mask(name) else found).append(os.path.abspath(os.path.join(root, name)))
    if passed_over:
        warn(f"{folder}: passed over {len(passed_over)} file(s) or folder(s) named like masks or segmentations "
             f"(e.g. {os.path.relpath(passed_over[0], folder)}); list scans and masks in a manifest to use them")
    if not found:
        raise ManifestError(
            f"{folder}: no scans found (looked for {', '.join(SCAN_SUFFIXES)} files "
            "and folders of DICOM files)"
        )
    return [ScanEntry(path) for path in sorted(found)]


def read_manifest(manifest: str) -> list[ScanEntry]:
    """Entries of a manifest CSV; every named file must exist."""
    base = os.path.dirname(os.path.abspath(manifest))
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ManifestError(f"{manifest}: cannot read it as CSV ({error})") from error
    if not rows:
        raise ManifestError(f"{manifest}: is empty; expected a header 'path,label,mask'")
    header = [name.strip().lower() for name in rows[0]]
    if "path" not in header:
        raise ManifestError(f"{manifest}: header {rows[0]} has no 'path' column (expected 'path,label,mask')")
    column = {name: header.index(name) for name in MANIFEST_COLUMNS + OPTIONAL_COLUMNS if name in header}

    entries, first_line = [], {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cell = {name: (row[i].strip() if i < len(row) else "") for name, i in column.items()}
        if not cell["path"]:
            raise ManifestError(f"{manifest} line {line}: empty path")
        path = _resolve(base, cell["path"])
        if not os.path.exists(path):
            raise ManifestError(f"{manifest} line {line}: scan not found: {path}")
        label = cell.get("label", "").lower() or None
        if label is not None and label not in LABELS:
            raise ManifestError(
                f"{manifest} line {line}: unknown label '{cell['label']}' "
                "(expected healthy, unhealthy or empty)"
            )
        mask = _resolve(base, cell["mask"]) if cell.get("mask") else None
        if mask is not None and not os.path.exists(mask):
            raise ManifestError(f"{manifest} line {line}: mask not found: {mask}")
        brain = _resolve(base, cell["brain"]) if cell.get("brain") else None
        if brain is not None and not os.path.exists(brain):
            raise ManifestError(f"{manifest} line {line}: brain mask not found: {brain}")
        identity = os.path.realpath(path)
        if identity in first_line:
            raise ManifestError(f"{manifest} lines {first_line[identity]} and {line}: the same scan twice ({path}); "
                                "list each scan once (a scan in training and validation would contaminate the thresholds)")
        first_line[identity] = line
        entries.append(ScanEntry(path, label, mask, brain))
    if not entries:
        raise ManifestError(f"{manifest}: lists no scans")
    return entries


def write_manifest(entries: list[ScanEntry], manifest: str) -> str:
    """Write entries as a manifest CSV, with paths relative to its folder when they
    lie below it. Written atomically."""
    base = os.path.dirname(os.path.abspath(manifest))
    with atomic_path(manifest) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        with_brain = any(entry.brain for entry in entries)
        writer.writerow(MANIFEST_COLUMNS + (OPTIONAL_COLUMNS if with_brain else ()))
        for entry in entries:
            row = [_relative(base, entry.path), entry.label or "", _relative(base, entry.mask) if entry.mask else ""]
            if with_brain:
                row.append(_relative(base, entry.brain) if entry.brain else "")
            writer.writerow(row)
    return manifest


def looks_like_mask(name: str) -> bool:
    """True for a file or folder name that marks a mask or segmentation
    (``sub-01_mask.nii.gz``, ``seg.nii.gz``, ``masks``), never a scan by itself."""
    stem = name
    for suffix in sorted(SCAN_SUFFIXES, key=len, reverse=True):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return bool(MASK_WORD.search(stem))


def _resolve(base: str, path: str) -> str:
    return os.path.abspath(os.path.join(base, os.path.expanduser(path)))


def _relative(base: str, path: str) -> str:
    relative = os.path.relpath(path, base)
    return path if relative.startswith("..") else relative.replace(os.sep, "/")


def _is_dicom(path: str) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def fingerprint(entries: list[ScanEntry]) -> str:
    """A fingerprint of a training set: each scan's, mask's and brain mask's resolved
    path, label, size and modification time (a DICOM folder: of all its files). Cheap
    (no file is read), and it changes when a scan is added, removed, relabelled,
    moved or rewritten."""
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: os.path.realpath(e.path)):
        digest.update(f"{entry.label}\0".encode())
        for path in (entry.path, entry.mask, entry.brain):
            if not path:
                digest.update(b"-\0")
                continue
            files = sorted(os.path.join(path, n) for n in os.listdir(path)) if os.path.isdir(path) else [path]
            for name in files:
                status = os.stat(name)
                digest.update(f"{os.path.realpath(name)}\0{status.st_size}\0{status.st_mtime_ns}\0".encode())
    return digest.hexdigest()
