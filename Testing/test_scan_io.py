"""Reading every supported format gives the same voxels at the same RAS points."""

import os

import nibabel as nib
import numpy as np
import pytest

from uadcore.io import Grid, orientation_code, read_mask, read_scan, write_nifti
from uadcore.errors import ScanError
from uadcore.preprocess import resample
from volumes import MARKER_VALUE, bright_centroid, marker_volume, write_dicom_series, write_itk


@pytest.mark.parametrize("orientation", ["RAS", "LAS", "LPS", "PIL", "oblique"])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", "dicom"])
def test_every_format_puts_the_marker_at_its_ras_point(tmp_path, orientation, suffix):
    array, grid, marker = marker_volume(orientation, shape=(61, 67, 29), spacing=(1.3, 1.1, 2.7))
    path = str(tmp_path / f"scan{suffix}")
    if suffix.startswith(".nii"):
        write_nifti(array, grid, path)
    elif suffix == "dicom":
        write_dicom_series(array, grid, path)
    else:
        write_itk(array, grid, path)

    scan = read_scan(path)

    if suffix == "dicom":
        # DICOM keeps only the in-plane axes; slices run along row x column, so a
        # left-handed grid comes back with k reversed: same voxels, same places.
        on_written_grid = resample(scan.array, scan.grid, grid, order=0)
        np.testing.assert_allclose(on_written_grid, array, atol=0.5)  # int16 pixels
    else:
        assert scan.grid.matches(grid, tolerance=1e-3)
        assert orientation_code(scan.grid.direction) == orientation_code(grid.direction)
        np.testing.assert_allclose(scan.array, array)
    found = bright_centroid(scan.array, scan.grid, MARKER_VALUE / 2)
    assert np.linalg.norm(found - marker) < 0.5


def test_nibabel_reads_what_we_write(tmp_path):
    array, grid, _ = marker_volume("LPS", shape=(11, 13, 7))
    path = write_nifti(array, grid, str(tmp_path / "x.nii.gz"))
    image = nib.load(path)
    np.testing.assert_allclose(image.affine, grid.affine, atol=1e-5)
    assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 1


def test_gzip_on_several_threads_is_one_stream_that_every_reader_reads_whole(tmp_path):
    import gzip
    import zlib

    import SimpleITK as sitk

    from uadcore.io.scans import gzip_members

    values = np.random.default_rng(0).random((120, 100, 40), dtype=np.float32)  # 1.9 MB
    data = nib.Nifti1Image(values, np.eye(4)).to_bytes()
    compressed = gzip_members(data, workers=3)
    members, rest = 0, compressed
    while rest:
        stream = zlib.decompressobj(31)
        stream.decompress(rest)
        members, rest = members + 1, stream.unused_data
    assert members == 3 and gzip.decompress(compressed) == data
    path = tmp_path / "members.nii.gz"
    path.write_bytes(compressed)
    np.testing.assert_array_equal(np.asarray(nib.load(str(path)).dataobj), values)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0), values)  # ITK's zlib


def test_a_map_compressed_on_every_core_reads_back_whole(tmp_path):
    import SimpleITK as sitk

    grid = Grid.from_parts((120, 100, 40), (0, 0, 0), (1.0, 1.2, 2.0))
    values = np.random.default_rng(0).random(grid.shape, dtype=np.float32)
    path = write_nifti(values, grid, str(tmp_path / "map.nii.gz"))
    np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), values)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(path)).transpose(2, 1, 0), values)  # ITK's zlib reader


@pytest.mark.parametrize("image_class", [nib.Nifti1Image, nib.Nifti2Image])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_1_and_2_read_the_same(tmp_path, image_class, suffix):
    array, grid, _ = marker_volume("LPS", shape=(31, 35, 17), spacing=(3.0, 3.0, 4.0))
    path = str(tmp_path / f"scan{suffix}")
    image_class(array.astype(np.int16), grid.affine).to_filename(path)
    scan = read_scan(path)
    np.testing.assert_array_equal(scan.array, array.astype(np.int16))
    assert scan.array.dtype == np.float32 and scan.array.flags.c_contiguous
    np.testing.assert_allclose(scan.grid.affine, grid.affine, atol=1e-5)


def test_a_cut_gzip_file_is_named_and_explained(tmp_path):
    path = write_nifti(np.ones((40, 40, 40), np.float32), Grid.from_parts((40, 40, 40), (0, 0, 0), (1, 1, 1)), str(tmp_path / "whole.nii.gz"))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(open(path, "rb").read()[:-100])
    with pytest.raises(ScanError, match=r"cut\.nii\.gz: cannot read it as an image .*cut short"):
        read_scan(str(cut))


def _write_a_map(path):
    values = np.random.default_rng(1).random((120, 100, 40), dtype=np.float32)
    write_nifti(values, Grid.from_parts(values.shape, (0, 0, 0), (1.0, 1.0, 1.0)), path)


def test_a_forked_process_compresses_on_threads_of_its_own(tmp_path):
    """The compressing threads are kept per process: a child forked after the parent
    wrote a map (as worker processes are) starts its own instead of waiting forever
    on the parent's, which it does not have."""
    import multiprocessing

    _write_a_map(str(tmp_path / "parent.nii.gz"))
    child = multiprocessing.get_context("fork").Process(target=_write_a_map, args=(str(tmp_path / "child.nii.gz"),))
    child.start()
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0
    assert np.array_equal(nib.load(str(tmp_path / "child.nii.gz")).get_fdata(), nib.load(str(tmp_path / "parent.nii.gz")).get_fdata())


def test_a_2d_png_is_a_one_slice_volume(tmp_path):
    import SimpleITK as sitk

    pixels = np.zeros((20, 30), np.uint8)
    pixels[5, 7] = 255  # row 5, column 7
    sitk.WriteImage(sitk.GetImageFromArray(pixels), str(tmp_path / "film.png"))
    scan = read_scan(str(tmp_path / "film.png"))
    assert scan.array.shape == (30, 20, 1) and scan.is_2d
    assert scan.array[7, 5, 0] == 255


def test_a_4d_file_with_one_frame_is_a_volume(tmp_path):
    path = str(tmp_path / "one_frame.nii.gz")
    nib.Nifti1Image(np.ones((5, 6, 7, 1), np.float32), np.eye(4)).to_filename(path)
    assert read_scan(path).array.shape == (5, 6, 7)


def test_mask_on_the_scan_grid_is_read_as_bool(tmp_path):
    array, grid, _ = marker_volume("RAS", shape=(21, 23, 9))
    scan_path = write_nifti(array, grid, str(tmp_path / "scan.nii.gz"))
    mask_path = write_nifti((array > 500).astype(np.uint8), grid, str(tmp_path / "mask.nii.gz"))
    mask = read_mask(mask_path, read_scan(scan_path))
    assert mask.dtype == bool and mask.sum() == (array > 500).sum()


def test_write_nifti_is_atomic_and_leaves_no_temporary(tmp_path):
    grid = Grid.from_parts((4, 5, 6), (0, 0, 0), (1, 1, 1))
    write_nifti(np.zeros(grid.shape), grid, str(tmp_path / "map.nii.gz"))
    assert os.listdir(tmp_path) == ["map.nii.gz"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ScanError, match="nothing.nii.gz: no such file"):
        read_scan(str(tmp_path / "nothing.nii.gz"))
