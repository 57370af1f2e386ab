"""Every kind of bad input: exit code 2, one line on stderr naming the file, and
nothing written into the input folder."""

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from uadcore.cli import main
from uadcore.io import write_nifti
from volumes import marker_volume


def folder_state(folder):
    """Every file under ``folder`` with its size and modification time."""
    state = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            state[path] = (os.path.getsize(path), os.path.getmtime(path))
    return state


def run_check(capsys, data, *options):
    """`uad check DATA` in this process; returns (exit code, stderr lines)."""
    code = main(["check", str(data), *options])
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.strip()]


def assert_rejected(capsys, data, named, reason, *options):
    before = folder_state(os.path.dirname(str(data)) if os.path.isfile(str(data)) else str(data))
    code, lines = run_check(capsys, data, *options)
    assert code == 2
    assert len(lines) == 1, lines
    assert str(named) in lines[0] and reason in lines[0], lines[0]
    assert folder_state(os.path.dirname(str(data)) if os.path.isfile(str(data)) else str(data)) == before


def good_scan(folder, name="good.nii.gz", orientation="RAS"):
    array, grid, _ = marker_volume(orientation, shape=(31, 35, 17), spacing=(3.0, 3.0, 4.0))
    return write_nifti(array, grid, os.path.join(folder, name))


def test_unreadable_file(tmp_path, capsys):
    bad = tmp_path / "noise.nii.gz"
    bad.write_bytes(os.urandom(2000))
    assert_rejected(capsys, tmp_path, bad, "cannot read")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_truncated_file(tmp_path, capsys, suffix):
    from volumes import write_itk

    array, grid, _ = marker_volume("RAS", shape=(31, 35, 17), spacing=(3.0, 3.0, 4.0))
    whole = str(tmp_path / f"whole{suffix}")
    write_nifti(array, grid, whole) if suffix.startswith(".nii") else write_itk(array, grid, whole)
    content = open(whole, "rb").read()
    os.remove(whole)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(content[: len(content) // 2])
    assert_rejected(capsys, tmp_path, cut, "cannot read")


def test_4d_file(tmp_path, capsys):
    path = tmp_path / "fmri.nii.gz"
    nib.Nifti1Image(np.ones((8, 8, 8, 5), np.float32), np.eye(4)).to_filename(str(path))
    assert_rejected(capsys, tmp_path, path, "is 4D")


def test_2d_image_where_3d_is_needed(tmp_path, capsys):
    path = tmp_path / "slice.nii.gz"
    nib.Nifti1Image(np.ones((64, 64), np.float32), np.eye(4)).to_filename(str(path))
    assert_rejected(capsys, tmp_path, path, "is 2D", "--preset", "brain3d-behrendt")


def test_a_2d_image_is_fine_for_patches(tmp_path, capsys):
    path = tmp_path / "film.nii.gz"
    nib.Nifti1Image(np.random.default_rng(0).random((200, 150)).astype(np.float32), np.eye(4)).to_filename(str(path))
    code, _ = run_check(capsys, tmp_path, "--preset", "patches2d")
    assert code == 0


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nan_or_inf_voxels(tmp_path, capsys, bad_value):
    array = np.ones((10, 10, 10), np.float32)
    array[3, 4, 5] = bad_value
    path = tmp_path / "broken.nii.gz"
    nib.Nifti1Image(array, np.eye(4)).to_filename(str(path))
    assert_rejected(capsys, tmp_path, path, "NaN or infinite")


def test_empty_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no scans here")
    assert_rejected(capsys, empty, empty, "no scans found")


def test_manifest_with_a_missing_file(tmp_path, capsys):
    good_scan(str(tmp_path))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,mask\ngood.nii.gz,healthy,\ngone.nii.gz,healthy,\n")
    assert_rejected(capsys, manifest, manifest, "line 3: scan not found")
    code, lines = run_check(capsys, manifest)
    assert "gone.nii.gz" in lines[0]


def test_manifest_with_a_missing_mask(tmp_path, capsys):
    good_scan(str(tmp_path))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,mask\ngood.nii.gz,unhealthy,gone_mask.nii.gz\n")
    assert_rejected(capsys, manifest, "gone_mask.nii.gz", "mask not found")


def test_manifest_with_an_unknown_label(tmp_path, capsys):
    good_scan(str(tmp_path))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,mask\ngood.nii.gz,sick,\n")
    assert_rejected(capsys, manifest, manifest, "unknown label 'sick'")


def test_manifest_without_a_path_column(tmp_path, capsys):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("file,label\ngood.nii.gz,healthy\n")
    assert_rejected(capsys, manifest, manifest, "no 'path' column")


def test_mask_whose_geometry_does_not_match_its_scan(tmp_path, capsys):
    good_scan(str(tmp_path))
    array, grid, _ = marker_volume("LPS", shape=(31, 35, 17), spacing=(3.0, 3.0, 4.0))
    write_nifti((array > 500).astype(np.uint8), grid, str(tmp_path / "mask.nii.gz"))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,mask\ngood.nii.gz,unhealthy,mask.nii.gz\n")
    assert_rejected(capsys, manifest, tmp_path / "mask.nii.gz", "does not match its scan")


def test_a_scan_that_is_all_zero(tmp_path, capsys):
    path = tmp_path / "blank.nii.gz"
    nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.eye(4)).to_filename(str(path))
    assert_rejected(capsys, tmp_path, path, "no nonzero voxels")


def test_no_such_data(tmp_path, capsys):
    code, lines = run_check(capsys, tmp_path / "elsewhere")
    assert code == 2 and "elsewhere: no such folder or manifest" in lines[0]


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    bad = tmp_path / "noise.nii"
    bad.write_bytes(b"\0" * 100)
    result = subprocess.run([sys.executable, "-m", "uadcore", "check", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and str(bad) in result.stderr
    assert "Traceback" not in result.stderr


def test_synth_refuses_a_folder_with_files(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    code = main(["synth", str(tmp_path), "--healthy", "1", "--unhealthy", "0"])
    assert code == 2
    assert str(tmp_path) in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["mine.txt"]


def test_check_writes_nothing_into_a_good_cohort(cohort, capsys):
    before = folder_state(os.path.dirname(cohort))
    code, _ = run_check(capsys, cohort)
    assert code == 0
    assert folder_state(os.path.dirname(cohort)) == before
