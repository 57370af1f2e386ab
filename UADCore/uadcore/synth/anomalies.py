"""Synthetic anomalies inserted into healthy scans on the fly, with their masks: what
the anomaly segmenter (`uadcore.models.anomseg`) learns to find, so it never sees a
real lesion.

Each anomalous image gets one to `MAX_REGIONS` regions (multi-focal). A region is
an ellipsoid of random axes and orientation whose surface a smooth random field
makes irregular, of 2-60 mm across (`SMALL_SHARE` of them 2-6 mm, the others 6-60
mm, each range log-uniform), with a soft edge of random width, and one of `KINDS`
inside:

- ``intensity``: brighter or darker (a gain and an offset), with a smooth texture;
  sometimes only a few per cent of white matter (subtle);
- ``foreign``: tissue from another place of another scan of the batch (or the same
  scan), flipped at random: a plausible texture in the wrong place;
- ``blur``: the region smoothed and rescaled (lost structure, a washed-out area);
- ``ring``: a dark core with a brighter rim, as a necrotic tumour or an abscess;
- ``noise``: a speckled region (heterogeneous tissue).

Some regions also push their surroundings outwards (mass effect, a radial
displacement that fades with distance); the displaced healthy tissue is not
marked, the region is. The change blends in through the soft edge, and
nothing changes outside the brain (the scan's nonzero voxels): the mask and
the image are 0 there as in the input.

A region's mask says how visible it is (`visible_change`): its soft weight
times the mean absolute change inside it over `visible_change`, at most 1, so
a region that hardly changed its tissue (a blur of homogeneous white matter, an
offset of 3 %) is not a full "anomaly" the network is pushed to find where
there is nothing to see (as in NSA, Schlüter et al. 2022, whose labels follow
the intensity difference). With `visible_change` 0 every region is marked in full.

All random draws come from a CPU `torch.Generator` (or the global one), so the
same seed gives the same anomalies on any device; the images stay on theirs.

Shapes: images (B, 1, I, J, K) in [0, 1] (white matter at 0.75, 0 outside the
brain) -> (altered images (B, 1, I, J, K), masks (B, 1, I, J, K) in [0, 1]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

KINDS = ("intensity", "foreign", "blur", "ring", "noise")
MAX_REGIONS = 3
# regions under 6 mm (a voxel or two of the 2.5 mm grid) teach little and slow the
# learning of the rest: with all sizes log-uniform over 2-60 mm the segmenter found
# fewer BraTS tumours after 600 steps than with 6-60 mm (benchmarks/RESULTS.md)
SMALL_SHARE = 0.15
SMALL_BELOW_MM = 6.0
# a region is marked in full when its tissue changed by this much on average (white
# matter is 0.75; healthy voxels differ from their neighbourhood's mean by ~0.04 on
# the prepared IXI scans): with full marks for every region, on IXI the segmenter's
# BraTS and pooled lesion AP were lower for each of three seeds (benchmarks/RESULTS.md)
VISIBLE_CHANGE = 0.1


@dataclass(frozen=True)
class AnomalySettings:
    """What the generator draws from.

    voxel_mm: the model grid's spacing (brain3d-behrendt: 2.5 mm), to turn sizes into voxels.
    diameter_mm: the range of a region's diameter; `small_share` of the regions are
        drawn below `SMALL_BELOW_MM` (where the range reaches there), each part log-uniformly.
    clean_share: the share of images left unchanged (mask 0): the segmenter must
        also learn to leave a healthy scan dark.
    mass_effect_share: the share of regions that displace their surroundings.
    max_regions: the most regions of one image; kinds: the kinds drawn from.
    visible_change: the mean absolute change (image units: white matter 0.75) at
        which a region is marked in full; less change, a fainter mark; 0 marks every
        region in full.
    """

    voxel_mm: float = 2.5
    diameter_mm: tuple = (2.0, 60.0)
    small_share: float = SMALL_SHARE
    clean_share: float = 0.1
    mass_effect_share: float = 0.3
    max_regions: int = MAX_REGIONS
    kinds: tuple = KINDS
    visible_change: float = VISIBLE_CHANGE


@torch.no_grad()
def insert_anomalies(images: torch.Tensor, settings: AnomalySettings = AnomalySettings(),
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Altered copies of ``images`` (B, 1, I, J, K) and their soft anomaly masks,
    both float32 on the images' device (see the module docstring)."""
    images = images.float()
    brains = images > 0
    altered, masks = images.clone(), torch.zeros_like(images)
    brain_voxels = [torch.nonzero(b[0]).cpu() for b in brains]  # one transfer per image, not one per draw
    for index in range(len(images)):
        if _uniform(generator) < settings.clean_share or len(brain_voxels[index]) == 0:
            continue
        for _ in range(1 + int(_uniform(generator) * settings.max_regions)):
            _insert_region(images, altered, masks, brains, brain_voxels, index, settings, generator)
    altered = torch.where(brains, altered.clamp(0.0, 1.0), 0.0)
    return altered, torch.where(brains, masks, 0.0)


def _insert_region(images, altered, masks, brains, brain_voxels, index, settings, generator) -> None:
    """One region of a random kind into ``altered[index]``, its weight into ``masks[index]``."""
    shape = images.shape[2:]
    device = images.device
    voxels = brain_voxels[index]
    centre = voxels[int(_uniform(generator) * len(voxels))].tolist()
    radius = _diameter_mm(settings, generator) / 2 / settings.voxel_mm  # voxels
    axes = radius * (0.6 + 0.8 * torch.rand(3, generator=generator))
    reach = int(math.ceil(float(axes.max()) * 1.6)) + 2
    box = tuple(slice(max(c - reach, 0), min(c + reach + 1, n)) for c, n in zip(centre, shape))
    box_shape = tuple(s.stop - s.start for s in box)
    offsets = _offsets(box, centre, device)  # (3, *box_shape) voxels from the centre
    rotation = _random_rotation(generator).to(device)
    rotated = torch.einsum("ij,j...->i...", rotation, offsets)
    distance = torch.sqrt(sum((rotated[i] / float(axes[i])) ** 2 for i in range(3)))
    irregular = float(0.35 * _uniform(generator))
    distance = distance * (1.0 + irregular * _smooth_field(box_shape, 3, generator, device))
    edge = 0.05 + 0.3 * _uniform(generator)  # soft edge, as a share of the radius
    weight = torch.sigmoid((1.0 - distance) / edge)  # 1 inside, 0.5 on the surface
    region = (slice(index, index + 1), slice(None)) + box
    brain = brains[region][0, 0]
    if _uniform(generator) < settings.mass_effect_share and radius >= 3:
        _push_outwards(altered, region, offsets, radius, generator)
    local = altered[region][0, 0]
    kind = settings.kinds[int(_uniform(generator) * len(settings.kinds))]
    content = _content(kind, images, local, index, box, box_shape, distance, generator)
    weight = weight * brain
    mark = weight * _visibility(content, local, weight, settings)  # before `local`, a view of `altered`, changes
    altered[region] = (local * (1 - weight) + content * weight)[None, None]
    masks[region] = torch.maximum(masks[region], mark[None, None])


def _visibility(content, local, weight, settings: AnomalySettings) -> torch.Tensor:
    """How visible a region is, a 0-dim tensor in [0, 1]: the mean absolute change
    of its tissue (where its weight is over 0.5) over `settings.visible_change`
    (a tensor, so a GPU step does not wait for it)."""
    if settings.visible_change <= 0:
        return torch.ones((), device=local.device)
    inside = (weight > 0.5).float()
    change = ((content - local).abs() * inside).sum() / inside.sum().clamp_min(1.0)
    return (change / settings.visible_change).clamp(max=1.0)


def _diameter_mm(settings: AnomalySettings, generator) -> float:
    """A region's diameter: `small_share` of them under `SMALL_BELOW_MM`, each part log-uniform."""
    low, high = settings.diameter_mm
    split = min(max(SMALL_BELOW_MM, low), high)
    if low < split < high:
        low, high = (low, split) if _uniform(generator) < settings.small_share else (split, high)
    return math.exp(math.log(low) + _uniform(generator) * (math.log(high) - math.log(low)))


def _content(kind: str, images, local, index, box, box_shape, distance, generator) -> torch.Tensor:
    """What fills a region of ``kind``: (box shape) float32 on the images' device."""
    device = local.device
    level = 0.75  # white matter
    if kind == "intensity":
        gain = math.exp((2 * _uniform(generator) - 1) * math.log(2.0))  # 0.5-2x
        offset = level * _signed(generator) * (0.03 + 0.4 * _uniform(generator) ** 2)  # often subtle
        texture = 1.0 + 0.25 * _uniform(generator) * _smooth_field(box_shape, 4, generator, device)
        return (local * gain + offset) * texture
    if kind == "foreign":
        source = images[int(_uniform(generator) * len(images)), 0]
        shift = [int(_uniform(generator) * n) for n in source.shape]
        piece = torch.roll(source, shifts=shift, dims=(0, 1, 2))[box]
        flips = [axis for axis in range(3) if _uniform(generator) < 0.5]
        piece = torch.flip(piece, flips) if flips else piece
        return piece * (0.8 + 0.4 * _uniform(generator))
    if kind == "blur":
        width = 1 + int(_uniform(generator) * 3)
        padded = F.pad(local[None, None], (width,) * 6, mode="replicate")  # a region at the grid's edge can be thinner than the kernel
        smoothed = F.avg_pool3d(padded, 2 * width + 1, stride=1)[0, 0]
        return smoothed * (0.7 + 0.6 * _uniform(generator))
    if kind == "ring":
        core, rim = level * (0.05 + 0.4 * _uniform(generator)), level * (0.9 + 0.4 * _uniform(generator))
        shell = torch.exp(-(((distance - 0.85) / 0.15) ** 2))
        return core * (1 - shell) + rim * shell
    # noise: speckle around the local intensity
    sigma = level * (0.05 + 0.3 * _uniform(generator))
    return local + sigma * torch.randn(box_shape, generator=generator).to(device)


def _push_outwards(altered, region, offsets, radius: float, generator) -> None:
    """Displace the tissue around a region's centre outwards by up to half its
    radius, fading with distance (a mass effect), inside ``region`` of ``altered``."""
    local = altered[region]  # (1, 1, *box)
    box_shape = local.shape[2:]
    strength = 0.2 + 0.3 * _uniform(generator)
    distance = offsets.norm(dim=0).clamp_min(1e-3)
    push = strength * radius * torch.exp(-((distance / (1.5 * radius)) ** 2))  # voxels, along the radius
    sampled_at = offsets - offsets / distance * push  # each voxel shows what lay nearer the centre
    index = sampled_at - offsets[:, :1, :1, :1]  # voxel index inside the box (offsets of its first voxel subtracted)
    sizes = torch.tensor(box_shape, dtype=torch.float32, device=local.device).view(3, 1, 1, 1)
    normalised = 2 * index / (sizes - 1).clamp_min(1) - 1
    grid = normalised.flip(0).permute(1, 2, 3, 0)[None]  # grid_sample wants (x, y, z) = (K, J, I)
    altered[region] = F.grid_sample(local, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _offsets(box, centre, device) -> torch.Tensor:
    """(3, *box shape) float32: each voxel's index minus ``centre``."""
    ranges = [torch.arange(s.start, s.stop, device=device, dtype=torch.float32) - c for s, c in zip(box, centre)]
    return torch.stack(torch.meshgrid(*ranges, indexing="ij"))


def _smooth_field(shape, control_points: int, generator, device) -> torch.Tensor:
    """A smooth random field of ``shape`` (about unit spread): noise on a coarse
    lattice, interpolated trilinearly."""
    coarse = torch.randn((1, 1) + (control_points,) * 3, generator=generator).to(device)
    return F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0]


def _random_rotation(generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator))
    return q * torch.sign(torch.diagonal(r))


def _uniform(generator) -> float:
    return float(torch.rand(1, generator=generator))


def _signed(generator) -> float:
    return 1.0 if _uniform(generator) < 0.5 else -1.0
