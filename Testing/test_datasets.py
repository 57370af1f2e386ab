"""Folders and manifests."""

import os

import pytest

from uadcore.errors import ManifestError, ScanError, UADWarning
from uadcore.io import ScanEntry, find_scans, load_dataset, read_manifest, read_scan, write_manifest, write_nifti
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
    small(str(tmp_path / "data"), "b.nii.gz")
    small(str(tmp_path / "data"), "b_mask.nii.gz")
    manifest = tmp_path / "lists" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,label,mask\n../data/a.nii.gz,Healthy,\n\n../data/b.nii.gz,,../data/b_mask.nii.gz\n")
    entries = read_manifest(str(manifest))
    assert entries == [
        ScanEntry(str(tmp_path / "data" / "a.nii.gz"), "healthy", None),
        ScanEntry(str(tmp_path / "data" / "b.nii.gz"), None, str(tmp_path / "data" / "b_mask.nii.gz")),
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


def test_a_folder_with_a_manifest_is_the_data_set_it_lists(tmp_path):
    small(str(tmp_path / "healthy"), "a.nii.gz")
    small(str(tmp_path / "unhealthy"), "b.nii.gz")
    small(str(tmp_path / "masks"), "b.nii.gz")
    (tmp_path / "manifest.csv").write_text("path,label,mask\nhealthy/a.nii.gz,healthy,\nunhealthy/b.nii.gz,unhealthy,masks/b.nii.gz\n")
    with pytest.warns(UADWarning, match="manifest.csv"):
        entries = load_dataset(str(tmp_path))
    assert [(os.path.relpath(e.path, tmp_path), e.label) for e in entries] == [
        (os.path.join("healthy", "a.nii.gz"), "healthy"), (os.path.join("unhealthy", "b.nii.gz"), "unhealthy")]
    assert entries[1].mask == str(tmp_path / "masks" / "b.nii.gz")


def test_files_and_folders_named_like_masks_are_never_scans(tmp_path):
    for name in ("sub-01_T1.nii.gz", "masked-by-hand_T1.nii.gz", "segment3.nii.gz", "sub-01_mask.nii.gz", "seg.nii.gz",
                 "sub-02-seg.nii", "sub-03_brainmask.nii.gz", "Labels.nii.gz"):
        small(str(tmp_path), name)
    small(str(tmp_path / "masks"), "sub-01.nii.gz")
    small(str(tmp_path / "Segmentations" / "deep"), "x.nii.gz")
    with pytest.warns(UADWarning, match="passed over 7 file"):
        found = sorted(os.path.basename(e.path) for e in load_dataset(str(tmp_path)))
    assert found == ["masked-by-hand_T1.nii.gz", "segment3.nii.gz", "sub-01_T1.nii.gz"]


def test_a_scan_listed_twice_is_refused_with_both_lines(tmp_path):
    small(str(tmp_path), "a.nii.gz")
    small(str(tmp_path), "b.nii.gz")
    os.symlink(tmp_path / "a.nii.gz", tmp_path / "same-as-a.nii.gz")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,mask\na.nii.gz,healthy,\nb.nii.gz,,\nsame-as-a.nii.gz,unhealthy,\n")
    with pytest.raises(ManifestError, match=r"m.csv lines 2 and 4: the same scan twice"):
        read_manifest(str(manifest))


def test_one_stray_file_does_not_hide_a_dicom_series(tmp_path):
    array, grid, _ = marker_volume("LPS", shape=(21, 23, 5), spacing=(4.0, 4.0, 6.0))
    write_dicom_series(array, grid, str(tmp_path / "series"))
    (tmp_path / "series" / "AAA_README").write_text("notes, listed first")
    assert [e.path for e in find_scans(str(tmp_path))] == [str(tmp_path / "series")]


def test_a_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    array, grid, _ = marker_volume("LPS", shape=(21, 23, 9), spacing=(4.0, 4.0, 6.0))
    folder = write_dicom_series(array, grid, str(tmp_path / "series"))
    assert read_scan(folder).grid.shape == (21, 23, 9)
    names = sorted(os.listdir(folder))
    os.remove(os.path.join(folder, names[4]))
    with pytest.raises(ScanError, match="series: DICOM slices are not evenly spaced .* 12 mm apart, the others 6 mm"):
        read_scan(folder)
