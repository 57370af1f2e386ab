"""A bright marker at a known RAS point comes back to that point, through every
preset, from scans in every orientation, with anisotropic spacing and odd sizes.

The brain presets (patches2d on 3D volumes too) run here at version 1 (a grid centred on the scan, no
registration: the marker volumes are not brains); the registered path of version
2 has its own geometry tests in test_brain_preparation.py."""

import numpy as np
import pytest

from uadcore.io import Grid, Scan
from uadcore.preprocess import make_preset, resample
from volumes import bright_centroid, marker_volume

ORIENTATIONS = ["RAS", "LAS", "LPS", "PIL", "oblique"]
PRESETS = {
    "brain3d-behrendt": {"version": 1},
    "brain2d-slices": {"version": 1},
    "patches2d": {"version": 1, "patch": 32, "stride": 16},
}


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("preset_name", list(PRESETS))
def test_marker_round_trip(orientation, preset_name):
    array, grid, marker = marker_volume(orientation)
    preset = make_preset(preset_name, **PRESETS[preset_name])
    prepared = preset.prepare(Scan(array, grid, "marker.nii.gz"))

    model_voxel = prepared.grid.spacing.max()
    on_model = bright_centroid(prepared.image, prepared.grid, 0.5)
    assert np.linalg.norm(on_model - marker) <= model_voxel

    # what the model sees, put back together, is the model-grid image where it looked
    assembled = prepared.assemble(prepared.inputs())
    seen = _seen_by_model(prepared)
    np.testing.assert_allclose(assembled[seen], prepared.image[seen], atol=1e-6)

    back = prepared.to_scan(assembled)
    assert back.shape == grid.shape
    native_voxel = grid.spacing.max()
    assert np.linalg.norm(bright_centroid(back, grid, 0.5) - marker) <= native_voxel


def _seen_by_model(prepared):
    seen = np.zeros(prepared.grid.shape, bool)
    if prepared.preset.name == "brain2d-slices":
        seen[:, :, prepared.units] = True
    elif prepared.preset.name == "patches2d":
        patch = prepared.preset.params["patch"]
        for i0, j0, k in prepared.units:
            seen[i0 : i0 + patch, j0 : j0 + patch, k] = True
    else:
        seen[:] = True
    return seen


def test_behrendt_grid_is_the_papers():
    array, grid, _ = marker_volume("LPS")
    prepared = make_preset("brain3d-behrendt", version=1).prepare(Scan(array, grid, "x"))
    assert prepared.grid.shape == (64, 77, 66)
    np.testing.assert_allclose(prepared.grid.spacing, 2.5)
    np.testing.assert_allclose(prepared.grid.direction, np.eye(3))
    assert prepared.inputs().shape == (1, 1, 64, 77, 66)
    assert prepared.image.min() >= 0.0 and prepared.image.max() == pytest.approx(1.0)
    assert (prepared.image[~prepared.region] == 0).all()


def test_slices_record_which_slices_are_kept():
    array, grid, _ = marker_volume("RAS")
    prepared = make_preset("brain2d-slices", version=1, size=64).prepare(Scan(array, grid, "x"))
    fraction = prepared.region.mean(axis=(0, 1))
    assert set(prepared.units) == set(np.flatnonzero(fraction >= 0.05))
    assert 0 < len(prepared.units) < prepared.grid.shape[2]
    assert prepared.inputs().shape == (len(prepared.units), 1, 64, 64)
    assert prepared.grid.spacing[0] == pytest.approx(3.0)  # 192 mm over 64 pixels


def test_mae_slices_are_224():
    array, grid, _ = marker_volume("RAS", spacing=(2.0, 2.0, 3.0), shape=(51, 55, 31))
    prepared = make_preset("brain2d-slices", version=1, size=224, slice_spacing_mm=4.0).prepare(Scan(array, grid, "x"))
    assert prepared.inputs().shape[1:] == (1, 224, 224)


def test_a_given_region_replaces_the_nonzero_region():
    array, grid, marker = marker_volume("RAS")
    region = np.zeros(grid.shape, bool)
    region[:, :, : grid.shape[2] // 2] = True  # a "brain" that is the lower half
    prepared = make_preset("brain3d-behrendt", version=1).prepare(Scan(array + 1.0, grid, "x"), region=region)
    assert prepared.region.any()
    lower, upper = grid.corners()[:, 2].min(), grid.index_to_world([[0, 0, grid.shape[2] // 2]])[0, 2]
    z = prepared.grid.index_to_world(np.argwhere(prepared.region))[:, 2]
    assert z.min() >= lower - 2.5 and z.max() <= upper + 2.5


def test_patches_of_a_2d_image_tile_it_and_come_back():
    # a 2D film: one slice whose plane is not axial (a coronal view), odd size
    direction = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    grid = Grid.from_parts((150, 1, 97), (-30.0, 12.0, 40.0), (0.2, 1.0, 0.2), direction)
    array = np.full(grid.shape, 50.0, np.float32)
    marker_ijk = np.array([101, 0, 33])
    array[94:109, 0, 26:41] = 1000.0  # 1.5 % of the film: above the clipping percentile
    marker = grid.index_to_world(marker_ijk)[0]

    prepared = make_preset("patches2d", patch=64, stride=32).prepare(Scan(array, grid, "film.png"))
    assert prepared.grid.shape == (150, 97, 1)
    tiles = prepared.inputs()
    assert tiles.shape[1:] == (1, 64, 64)
    assembled = prepared.assemble(tiles)
    np.testing.assert_allclose(assembled, prepared.image, atol=1e-6)  # every pixel tiled
    back = prepared.to_scan(assembled)
    assert np.linalg.norm(bright_centroid(back, grid, 0.5) - marker) <= 0.2


def test_patches_of_a_small_image_are_padded_to_one_patch():
    grid = Grid.from_parts((40, 30, 1), (0, 0, 0), (1.0, 1.0, 1.0))
    prepared = make_preset("patches2d", patch=64, stride=32).prepare(Scan(np.ones(grid.shape, np.float32), grid, "x"))
    assert prepared.grid.shape == (64, 64, 1)
    assert len(prepared.units) == 1


def test_constant_image_reassembles_exactly_from_overlapping_tiles():
    grid = Grid.from_parts((203, 150, 1), (0, 0, 0), (0.5, 0.5, 1.0))
    prepared = make_preset("patches2d", patch=64, stride=24).prepare(Scan(np.full(grid.shape, 7.0, np.float32), grid, "x"))
    assembled = prepared.assemble(prepared.inputs())
    assert np.array_equal(assembled[:203, :150], np.full((203, 150, 1), prepared.image[0, 0, 0], np.float32))


def test_per_tile_scores_paint_a_heat_map():
    grid = Grid.from_parts((128, 128, 1), (0, 0, 0), (1.0, 1.0, 1.0))
    prepared = make_preset("patches2d", patch=64, stride=64).prepare(Scan(np.ones(grid.shape, np.float32), grid, "x"))
    scores = np.arange(len(prepared.units), dtype=np.float32)
    heat = prepared.assemble(prepared.paint(scores))
    for score, (i0, j0, k) in zip(scores, prepared.units):
        assert (heat[i0 : i0 + 64, j0 : j0 + 64, k] == score).all()


def test_per_slice_scores_paint_each_kept_slice():
    array, grid, _ = marker_volume("LPS", shape=(40, 44, 36))
    prepared = make_preset("brain2d-slices", version=1, size=32, min_brain_fraction=0.0).prepare(Scan(array + 1.0, grid, "x"))
    scores = np.arange(len(prepared.units), dtype=np.float32) + 1.0
    painted = prepared.assemble(prepared.paint(scores))
    for score, k in zip(scores, prepared.units):
        assert (painted[:, :, k] == score).all()
    missing = np.setdiff1d(np.arange(prepared.grid.shape[2]), prepared.units)
    assert (painted[:, :, missing] == 0).all()


def test_resampling_onto_the_same_grid_is_exact():
    array, grid, _ = marker_volume("oblique", shape=(21, 25, 13))
    np.testing.assert_array_equal(resample(array, grid, grid), array)


def test_preset_round_trips_through_its_stored_form():
    from uadcore.preprocess import preset_from_dict

    preset = make_preset("brain2d-slices", size=224)
    again = preset_from_dict(preset.to_dict())
    assert again.params == preset.params and again.name == preset.name


def test_unknown_preset_option_is_refused():
    from uadcore.errors import UADError

    with pytest.raises(UADError, match="unknown option"):
        make_preset("brain3d-behrendt", size=3)


@pytest.mark.parametrize("seed", range(6))
def test_the_axis_aligned_fast_path_equals_general_trilinear_sampling(seed):
    from scipy import ndimage

    from uadcore.preprocess.resample import _separable_linear

    rng = np.random.default_rng(seed)
    array = rng.random((17, 11, 13)).astype(np.float32)
    permutation = rng.permutation(3)
    linear = np.zeros((3, 3))
    linear[permutation, np.arange(3)] = rng.choice([-1, 1], 3) * rng.uniform(0.3, 2.5, 3)
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = linear, rng.uniform(-4, 16, 3)
    shape = tuple(int(n) for n in rng.integers(5, 20, 3))
    fill = float(rng.choice([0.0, -2.0]))
    expected = ndimage.affine_transform(array, linear, offset=matrix[:3, 3], output_shape=shape, order=1,
                                        mode="grid-constant", cval=fill, prefilter=False)
    np.testing.assert_allclose(_separable_linear(array, matrix, shape, fill), expected, atol=2e-5)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("order", [0, 1])
def test_resampling_only_near_the_source_equals_sampling_everywhere(seed, order):
    """A small source (a map on a brain's box) onto a large target (the scan):
    sampling only the target voxels near the source changes no value."""
    from scipy import ndimage

    from uadcore.io import Grid
    from uadcore.preprocess import resample

    rng = np.random.default_rng(seed)
    array = rng.random((9, 7, 8)).astype(np.float32)
    rotation = np.linalg.qr(rng.standard_normal((3, 3)))[0] if seed % 2 else np.eye(3)[rng.permutation(3)]
    source = Grid.from_parts(array.shape, rng.uniform(-5, 5, 3), rng.uniform(1.5, 3.0, 3), rotation)
    target = Grid.from_parts((40, 36, 30), (-30, -30, -25), (1.6, 1.7, 1.8))
    fill = float(rng.choice([0.0, -1.0]))
    matrix = np.linalg.inv(source.affine) @ target.affine
    expected = ndimage.affine_transform(array, matrix[:3, :3], offset=matrix[:3, 3], output_shape=target.shape, order=order,
                                        mode="grid-constant", cval=fill, prefilter=False)
    result = resample(array, source, target, order=order, fill=fill, antialias=False)
    assert (result != fill).sum() < 0.2 * result.size  # the source covers a small part of the target
    np.testing.assert_allclose(result, expected, atol=2e-5)


@pytest.mark.parametrize("seed", range(4))
def test_blurring_only_the_reachable_source_equals_blurring_it_all(seed):
    """A fine scan with air around the brain onto a coarser, smaller model grid: the
    antialiasing blur of only the part the grid reaches gives the same values."""
    from scipy import ndimage

    from uadcore.io import Grid
    from uadcore.preprocess import resample

    rng = np.random.default_rng(seed)
    source = Grid.from_parts((120, 56, 40), (-30, -28, -40), (0.5, 1.0, 2.0))  # blur sigma 2 voxels along i
    array = rng.random(source.shape).astype(np.float32)
    rotation = np.linalg.qr(rng.standard_normal((3, 3)))[0] if seed % 2 else np.eye(3)
    target = Grid.from_parts((9, 10, 8), rng.uniform(-12, -6, 3), (2.5, 2.5, 2.5), rotation)
    sigma = np.maximum(2.5 / source.spacing - 1.0, 0.0) / 2.0
    matrix = np.linalg.inv(source.affine) @ target.affine
    expected = ndimage.affine_transform(ndimage.gaussian_filter(array, sigma, mode="nearest"), matrix[:3, :3], offset=matrix[:3, 3],
                                        output_shape=target.shape, order=1, mode="grid-constant", cval=0.0, prefilter=False)
    np.testing.assert_allclose(resample(array, source, target), expected, atol=2e-5)


@pytest.mark.parametrize("seed", range(6))
def test_rotated_grids_sample_as_general_trilinear_sampling(seed):
    """ITK's resampler on rotated grids gives scipy's values, also for a one-slice source."""
    from scipy import ndimage

    from uadcore.preprocess.resample import _itk_linear

    rng = np.random.default_rng(seed)
    array = rng.random((17, 11, 1 if seed == 0 else 13)).astype(np.float32)
    matrix = np.eye(4)
    matrix[:3, :3] = np.linalg.qr(rng.standard_normal((3, 3)))[0] * rng.uniform(0.5, 2.0, 3)
    shape = tuple(int(n) for n in rng.integers(5, 20, 3))
    # centre on centre, then moved by up to a few voxels: partly outside the source
    matrix[:3, 3] = (np.array(array.shape) - 1) / 2 - matrix[:3, :3] @ ((np.array(shape) - 1) / 2) + rng.uniform(-4, 4, 3)
    fill = float(rng.choice([0.0, -2.0]))
    expected = ndimage.affine_transform(array, matrix[:3, :3], offset=matrix[:3, 3], output_shape=shape, order=1,
                                        mode="grid-constant", cval=fill, prefilter=False)
    assert (expected != fill).any()
    np.testing.assert_allclose(_itk_linear(array, matrix, shape, fill), expected, atol=2e-5)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("direction", ["down", "up"])
def test_sampling_only_the_nonzero_box_equals_sampling_it_all(seed, direction):
    """A brain in air onto a coarser grid that covers all of it, with the antialiasing
    blur (down), and a map that is 0 outside the brain back onto a fine grid (up):
    cropping the source to its nonzero box, and what the blur spreads it to, changes
    no value."""
    from scipy import ndimage

    from uadcore.io import Grid
    from uadcore.preprocess import resample

    rng = np.random.default_rng(seed)
    fine = Grid.centred((0, 0, 0), (0.5, 1.0, 2.0), (90, 50, 36))  # blur sigma 2 voxels along i going down
    rotation = np.linalg.qr(rng.standard_normal((3, 3)))[0] if seed % 2 else np.eye(3)
    coarse = Grid.centred(rng.uniform(-3, 3, 3), (2.5, 2.5, 2.5), (30, 30, 40), rotation)
    source, target = (fine, coarse) if direction == "down" else (coarse, fine)
    array = np.zeros(source.shape, np.float32)
    corner = np.array(source.shape) // 3
    inside = tuple(slice(c, c + n) for c, n in zip(corner, np.array(source.shape) // 3))
    array[inside] = rng.random(array[inside].shape) + 0.5
    matrix = np.linalg.inv(source.affine) @ target.affine
    sigma = np.maximum(target.spacing.min() / source.spacing - 1.0, 0.0) / 2.0
    blurred = ndimage.gaussian_filter(array, sigma, mode="nearest")
    expected = ndimage.affine_transform(blurred, matrix[:3, :3], offset=matrix[:3, 3], output_shape=target.shape, order=1,
                                        mode="grid-constant", cval=0.0, prefilter=False)
    assert expected.max() > 0.5 and (expected == 0).mean() > 0.3  # the box lies inside, air around it
    np.testing.assert_allclose(resample(array, source, target), expected, atol=2e-5)


def test_an_all_zero_source_resamples_to_zeros():
    from uadcore.io import Grid
    from uadcore.preprocess import resample

    source = Grid.centred((0, 0, 0), (1.0, 1.0, 1.0), (20, 20, 20))
    target = Grid.centred((1, 0, 0), (2.0, 2.0, 2.0), (8, 8, 8))
    result = resample(np.zeros(source.shape, np.float32), source, target)
    assert result.shape == target.shape and result.dtype == np.float32 and not result.any()
