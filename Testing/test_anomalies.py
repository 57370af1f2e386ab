"""The synthetic anomalies the anomaly segmenter learns from: where they go (only
inside the brain), how big they are, that every kind changes the image where its
mask says, and that a seed gives the same anomalies."""

import math

import pytest
import torch

from uadcore.synth.anomalies import KINDS, AnomalySettings, insert_anomalies

SHAPE = (40, 48, 40)


def brains(n=4, seed=0):
    """(n, 1, *SHAPE) images in [0, 1]: an ellipsoidal 'brain' of white matter
    (0.75) with smooth darker folds of grey matter (0.45), 0 outside."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n_) for n_ in SHAPE], indexing="ij"))
    inside = (grid**2).sum(0) < 0.8
    coarse = torch.randn((n, 1, 6, 7, 6), generator=generator)
    folds = torch.nn.functional.interpolate(coarse, size=SHAPE, mode="trilinear", align_corners=True) > 0.4
    return torch.where(inside, 0.75 - 0.3 * folds.float(), 0.0)


def test_nothing_changes_outside_the_brain_and_masks_stay_in_it():
    x = brains(8)
    altered, masks = insert_anomalies(x, AnomalySettings(clean_share=0.0, mass_effect_share=0.5),
                                      torch.Generator().manual_seed(1))
    outside = x == 0
    assert altered.shape == masks.shape == x.shape
    assert torch.equal(altered[outside], x[outside]) and not masks[outside].any()
    assert 0 <= float(masks.min()) and float(masks.max()) <= 1 and 0 <= float(altered.min()) and float(altered.max()) <= 1
    assert (masks.flatten(1).amax(1) > 0.5).all()  # clean_share 0: every image has an anomaly
    assert not torch.equal(altered, x)


def test_every_kind_changes_the_image_where_its_mask_is():
    x = brains(6, seed=2)
    for kind in KINDS:
        altered, masks = insert_anomalies(x, AnomalySettings(clean_share=0.0, kinds=(kind,), diameter_mm=(20.0, 40.0),
                                                             mass_effect_share=0.0),
                                          torch.Generator().manual_seed(3))
        change = (altered - x).abs()
        inside, far = masks > 0.9, masks == 0
        assert change[inside].mean() > 0.02, kind
        assert change[far].max() == 0, kind  # without mass effect nothing moves outside the regions


@pytest.mark.parametrize("kind", KINDS)
def test_regions_at_the_grids_edge_in_a_small_grid(kind):
    """A brain that fills a grid of 5 x 6 x 4 voxels: every region reaches past the edge."""
    x = torch.full((3, 1, 5, 6, 4), 0.75)
    altered, masks = insert_anomalies(x, AnomalySettings(clean_share=0.0, kinds=(kind,), mass_effect_share=1.0),
                                      torch.Generator().manual_seed(0))
    assert altered.shape == x.shape and torch.isfinite(altered).all() and masks.max() > 0


def test_sizes_span_the_range_asked_for():
    settings = AnomalySettings(voxel_mm=2.5, diameter_mm=(2.0, 60.0), clean_share=0.0, max_regions=1, mass_effect_share=0.0)
    diameters = []
    for seed in range(30):
        _, masks = insert_anomalies(brains(1, seed), settings, torch.Generator().manual_seed(seed))
        volume_mm3 = float((masks > 0.5).sum()) * 2.5**3
        diameters.append(2 * (3 * volume_mm3 / (4 * math.pi)) ** (1 / 3))
    assert max(diameters) < 60 * 1.4 * 1.35  # the largest axis 1.4x the radius, the surface moved by up to 35 %
    assert min(diameters) < 10 and max(diameters) > 25  # small ones and large ones (log-uniform)


def test_a_seed_gives_the_same_anomalies_and_some_images_stay_clean():
    x = brains(10, seed=4)
    settings = AnomalySettings(clean_share=0.3)
    first = insert_anomalies(x, settings, torch.Generator().manual_seed(5))
    second = insert_anomalies(x, settings, torch.Generator().manual_seed(5))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    clean = first[1].flatten(1).amax(1) == 0
    assert clean.any() and not clean.all()
    assert torch.equal(first[0][clean], x[clean])
    assert torch.equal(x, brains(10, seed=4))  # the input is not changed


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_images_stay_on_their_device_as_float32(dtype):
    x = brains(2).to(torch.device("cpu", 0), dtype)
    altered, masks = insert_anomalies(x, generator=torch.Generator().manual_seed(0))
    assert altered.device == masks.device == x.device and altered.dtype == masks.dtype == torch.float32


def test_a_region_is_marked_as_strongly_as_it_changed_the_tissue():
    """By default a faint change gets a faint mark and a clear one a full mark
    (`visible_change`); the images are the same draws as with full marks."""
    x = brains(24, seed=6)
    settings = dict(clean_share=0.0, kinds=("intensity",), max_regions=1, mass_effect_share=0.0, diameter_mm=(15.0, 30.0))
    full_altered, full = insert_anomalies(x, AnomalySettings(visible_change=0.0, **settings), torch.Generator().manual_seed(8))
    altered, marked = insert_anomalies(x, AnomalySettings(**settings), torch.Generator().manual_seed(8))
    assert AnomalySettings().visible_change == 0.1
    assert torch.equal(altered, full_altered)
    assert (marked <= full + 1e-6).all()
    inside = full > 0.9
    change = torch.stack([(altered[i] - x[i]).abs()[inside[i]].mean() for i in range(len(x))])
    strength = torch.stack([marked[i][inside[i]].max() for i in range(len(x))])
    clear, faint = change > 0.15, change < 0.06
    assert clear.any() and faint.any()  # the draws give both (intensity changes are often subtle)
    assert (strength[clear] > 0.9).all()  # a full mark (the soft weight is under 1 even at the centre)
    assert ((strength[faint] - change[faint] / 0.1).abs() < 0.15).all()  # about change / visible_change
