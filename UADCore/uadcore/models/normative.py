"""Normative: the voxel-statistics baseline, no learning.

Per voxel of the registered model grid, the median and a robust spread (1.4826 x
the median absolute deviation, floored) of the healthy training scans; a scan's
map is its z-score ``(x - median) / spread`` at every voxel (``near_z``: |z| against
the closest healthy statistics within a voxel, forgiving residual misalignment). Fitted in closed form
(`fit`), not by gradient steps; the training engine refits it on the kept scans
and applies the same outlier removal as to every model (drop the scans whose mean
|z| exceeds gamma x the mean). The simple baseline that deep models must beat
(Meissen et al. 2021; Saase et al.).

Shapes: x (B, 1, ...) -> z (B, 1, ...); median, spread (1, 1, ...) buffers.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F

from uadcore.models.spec import ModelSpec

MAD_TO_SD = 1.4826  # the MAD of a normal distribution is 0.6745 of its SD
# the smallest spread (intensity units; white matter is 0.75): voxels where every
# healthy scan agrees (air around the brain) would otherwise give huge z for noise
MIN_SPREAD = 0.02
# the affine registration leaves a few mm of misalignment (a marker 3.3 mm off its MNI point,
# Testing/test_warp.py): at a tissue boundary one voxel of shift is a large |z| in every healthy
# scan, while a lesion differs from the healthy statistics of all its neighbours (``near_z``)
NEAR_REACH = 1  # voxels (2.5 mm on the brain grid)


class Normative(nn.Module):
    def __init__(self, in_shape=(64, 77, 66), in_channels=1, min_spread=MIN_SPREAD):
        super().__init__()
        self.in_shape = tuple(int(n) for n in in_shape)
        self.min_spread = float(min_spread)
        shape = (1, in_channels) + self.in_shape
        self.register_buffer("median", torch.zeros(shape))
        self.register_buffer("spread", torch.ones(shape))
        self.register_buffer("support", torch.zeros(shape))  # share of training scans with brain at the voxel

    @torch.no_grad()
    def fit(self, items: torch.Tensor, regions: torch.Tensor, chunk: int = 1 << 16) -> None:
        """Statistics of the training items (N, C, ...) and their brains (N, C, ...),
        computed over the voxels in chunks (bounded memory)."""
        flat = items.flatten(1).float()
        inside = regions.flatten(1).float()
        median = torch.empty(flat.shape[1])
        spread = torch.empty(flat.shape[1])
        for start in range(0, flat.shape[1], chunk):
            part = flat[:, start : start + chunk].to(self.median.device)
            centre = part.median(dim=0).values
            median[start : start + chunk] = centre.cpu()
            spread[start : start + chunk] = (MAD_TO_SD * (part - centre).abs().median(dim=0).values).cpu()
        shape = self.median.shape
        self.median.copy_(median.view(shape))
        self.spread.copy_(spread.clamp_min(self.min_spread).view(shape))
        self.support.copy_(inside.mean(0).view(shape))

    def z_score(self, x: torch.Tensor) -> torch.Tensor:
        """Signed z-score of every voxel, (B, C, ...) float32."""
        return (x.float() - self.median) / self.spread

    def near_z(self, x: torch.Tensor, reach: int = NEAR_REACH) -> torch.Tensor:
        """|z| of every voxel against the closest healthy statistics within ``reach``
        voxels: min over the offsets d in [-reach, reach]^3 of |x(v) - median(v + d)|
        / spread(v + d), (B, C, I, J, K) float32. A voxel that matches a neighbour's
        healthy values (a boundary a voxel off) scores low; a lesion matches none."""
        dims = x.dim() - 2
        median = F.pad(self.median, [reach] * (2 * dims), mode="replicate")
        spread = F.pad(self.spread, [reach] * (2 * dims), mode="replicate")
        x = x.float()
        nearest = None
        for offset in itertools.product(range(2 * reach + 1), repeat=dims):
            window = (Ellipsis,) + tuple(slice(o, o + n) for o, n in zip(offset, x.shape[2:]))
            z = (x - median[window]).abs() / spread[window]
            nearest = z if nearest is None else torch.minimum(nearest, z)
        return nearest

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The healthy median, (B, C, ...): what a reconstruction-error map compares with."""
        return self.median.expand_as(x)

    def loss_per_sample(self, x: torch.Tensor) -> torch.Tensor:
        """Mean |z| of each sample over the voxels where training scans have brain, (B,)."""
        weight = (self.support > 0.5).float()
        return (self.z_score(x).abs() * weight).flatten(1).sum(1) / weight.sum().clamp_min(1.0)


SPEC = ModelSpec(
    "normative", Normative, "brain3d-behrendt", maps=("abs-z", "near-z", "z", "rec"), closed_form=True,
    audit_map="near-z",
    summary="the voxel-statistics baseline: per-voxel healthy median and spread, map = |z|",
    train={"epochs": 25, "reinit_at": [], "checkpoint_every": 25},  # 5 fit-and-remove rounds
)
