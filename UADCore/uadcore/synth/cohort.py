"""A synthetic cohort on disk: healthy and unhealthy subjects as NIfTI files, lesion
masks, ``manifest.csv`` and ``subjects.json`` (every subject's random choices).

Layout of OUT::

    healthy/sub-0001.nii.gz ...
    unhealthy/sub-0081.nii.gz ...
    masks/sub-0081_mask.nii.gz ...
    manifest.csv        path,label,mask (relative paths)
    subjects.json       per subject: orientation, spacing, motion, contrast, lesion
"""

from __future__ import annotations

import json
import os

from uadcore.errors import UADError
from uadcore.io.datasets import ScanEntry, write_manifest
from uadcore.io.scans import write_nifti
from uadcore.parallel import process_map
from uadcore.synth.lesions import DEFAULT_KINDS
from uadcore.synth.lesions import KINDS as LESION_KINDS
from uadcore.synth.subject import choose_lesion_kind, make_subject
from uadcore.preprocess.template import load_template


def synthesize_cohort(out: str, healthy: int = 60, unhealthy: int = 20, seed: int = 0, workers: int | None = None,
                      progress: bool = True, lesion_kinds=DEFAULT_KINDS) -> str:
    """Write a cohort to the new or empty folder ``out``; returns the manifest path.
    Unhealthy subjects cycle through ``lesion_kinds``."""
    if healthy < 0 or unhealthy < 0 or healthy + unhealthy == 0:
        raise UADError(f"a cohort needs at least one subject (got --healthy {healthy} --unhealthy {unhealthy})")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UADError(f"{out}: exists and is not an empty folder; choose a new output folder")
    unknown = sorted(set(lesion_kinds) - set(LESION_KINDS))
    if unknown or not lesion_kinds:
        raise UADError(f"unknown lesion kind(s) {', '.join(unknown) or '(none given)'}; kinds are {', '.join(LESION_KINDS)}")
    os.makedirs(out, exist_ok=True)

    jobs = [(out, seed, index, None) for index in range(1, healthy + 1)]
    jobs += [(out, seed, index, choose_lesion_kind(seed, index, tuple(lesion_kinds))) for index in range(healthy + 1, healthy + unhealthy + 1)]
    results = process_map(_write_subject, jobs, workers, desc="synth", unit="subject", progress=progress, initializer=load_template)

    entries = [ScanEntry(r["path"], r["label"], r["mask"]) for r in results]
    manifest = write_manifest(entries, os.path.join(out, "manifest.csv"))
    record = {"seed": seed, "template": "MNI152 2009a symmetric (nilearn)", "subjects": [r["info"] for r in results]}
    with open(os.path.join(out, "subjects.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
    return manifest


def _write_subject(job) -> dict:
    out, seed, index, lesion_kind = job
    subject = make_subject(load_template(), seed, index, lesion_kind)
    name = f"sub-{index:04d}"
    label = "healthy" if lesion_kind is None else "unhealthy"
    path = write_nifti(subject.image, subject.grid, os.path.join(out, label, f"{name}.nii.gz"))
    mask = None
    if subject.mask is not None:
        mask = write_nifti(subject.mask.astype("uint8"), subject.grid, os.path.join(out, "masks", f"{name}_mask.nii.gz"))
    info = {"name": name, "label": label, **subject.info}
    return {"path": os.path.abspath(path), "label": label, "mask": os.path.abspath(mask) if mask else None, "info": info}
