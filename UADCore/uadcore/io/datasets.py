"""Data sets: a folder of scans, or a manifest CSV naming scans, labels and masks.

Manifest format (header required, columns ``label``, ``mask`` and ``brain``
optional, extra columns ignored)::

    path,label,mask
    healthy/sub-0001.nii.gz,healthy,
    unhealthy/sub-0081.nii.gz,unhealthy,masks/sub-0081_mask.nii.gz

``label`` is ``healthy``, ``unhealthy`` or empty (unknown); ``mask`` a lesion mask;
``brain`` a brain mask on the scan's grid, which replaces skull stripping. Relative paths are
relative to the manifest's folder. A DICOM series is named by its folder.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

from uadcore.errors import ManifestError
from uadcore.io.atomic import atomic_path
from uadcore.io.scans import SCAN_SUFFIXES, has_scan_suffix

LABELS = ("healthy", "unhealthy")
MANIFEST_COLUMNS = ("path", "label", "mask")
OPTIONAL_COLUMNS = ("brain",)


@dataclass(frozen=True)
class ScanEntry:
    """One scan of a data set: absolute path, label (None = unknown), lesion mask
    path, brain mask path (replaces skull stripping)."""

    path: str
    label: str | None = None
    mask: str | None = None
    brain: str | None = None


def load_dataset(source: str) -> list[ScanEntry]:
    """The scans of a folder (searched recursively), of a manifest CSV, or one scan."""
    source = os.fspath(source)
    if os.path.isdir(source):
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
    found = []
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        visible = [f for f in files if not f.startswith(".")]
        dicom = [f for f in visible if f.lower().endswith(".dcm") or "." not in f]
        if dicom and _is_dicom(os.path.join(root, dicom[0])):
            found.append(os.path.abspath(root))
            visible = [f for f in visible if f not in dicom]
        found += [os.path.abspath(os.path.join(root, f)) for f in visible if has_scan_suffix(f)]
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

    entries = []
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
