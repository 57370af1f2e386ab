"""Scan input/output: files and folders in, arrays on physical grids out, maps back.

World coordinates are RAS+ millimetres throughout (see `uadcore.io.grid`).
"""

from uadcore.io.datasets import ScanEntry, find_scans, load_dataset, read_manifest, write_manifest
from uadcore.io.grid import Grid, orientation_code
from uadcore.io.scans import SCAN_SUFFIXES, Scan, read_mask, read_scan, write_nifti

__all__ = [
    "Grid",
    "SCAN_SUFFIXES",
    "Scan",
    "ScanEntry",
    "find_scans",
    "load_dataset",
    "orientation_code",
    "read_manifest",
    "read_mask",
    "read_scan",
    "write_manifest",
    "write_nifti",
]
