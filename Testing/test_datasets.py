"""Folders and manifests."""

import os

import pytest

from uadcore.errors import ManifestError
from uadcore.io import ScanEntry, find_scans, load_dataset, read_manifest, write_manifest, write_nifti
from volumes import marker_volume, write_dicom_series


def small(folder, name):
    array, grid, _ = marker_volume("RAS", shape=(21, 23, 11), spacing=(4.0, 4.0, 6.0))
    return write_nifti(array, grid, os.path.join(folder, name))


def test_a_folder_is_searched_recursively_and_a_dicom_folder_is_one_scan(tmp_path):
    small(str(tmp_path), "a.nii.gz")
    small(str(tmp_path / "deeper" / "more"), "b.nii")
    array, grid, _ = marker_volume("LPS", shape=(21, 23, 5), spacing=(4.0, 4.0, 6.0))
    write_dicom_series(array, grid, str(tmp_path / "series1"))
    (tmp_path / "notes.txt").write_text("not a scan")
    (tmp_path / ".hidden.nii.gz").write_text("skipped")
    found = [os.path.relpath(e.path, tmp_path) for e in find_scans(str(tmp_path))]
    assert found == ["a.nii.gz", os.path.join("deeper", "more", "b.nii"), "series1"]


def test_manifest_paths_are_relative_to_the_manifest(tmp_path):
    small(str(tmp_path / "data"), "a.nii.gz")
    small(str(tmp_path / "data"), "a_mask.nii.gz")
    manifest = tmp_path / "lists" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,label,mask\n../data/a.nii.gz,Healthy,\n\n../data/a.nii.gz,,../data/a_mask.nii.gz\n")
    entries = read_manifest(str(manifest))
    assert entries == [
        ScanEntry(str(tmp_path / "data" / "a.nii.gz"), "healthy", None),
        ScanEntry(str(tmp_path / "data" / "a.nii.gz"), None, str(tmp_path / "data" / "a_mask.nii.gz")),
    ]


def test_manifest_written_and_read_back(tmp_path):
    scan = small(str(tmp_path / "scans"), "s.nii.gz")
    entries = [ScanEntry(os.path.abspath(scan), "unhealthy", os.path.abspath(scan))]
    manifest = write_manifest(entries, str(tmp_path / "manifest.csv"))
    assert open(manifest).read().splitlines()[1] == "scans/s.nii.gz,unhealthy,scans/s.nii.gz"
    assert read_manifest(manifest) == entries


def test_a_single_scan_is_a_data_set(tmp_path):
    scan = small(str(tmp_path), "only.nii.gz")
    assert load_dataset(scan) == [ScanEntry(os.path.abspath(scan))]


def test_an_empty_manifest_is_refused(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,mask\n")
    with pytest.raises(ManifestError, match="lists no scans"):
        read_manifest(str(manifest))
