"""Building blocks shared by the convolutional models, for 2D and 3D alike."""

from __future__ import annotations

import math

from monai.networks.blocks import Convolution
from torch import nn

ACTIVATION = ("leakyrelu", {"negative_slope": 0.2})


def padded_shape(in_shape, depth: int) -> tuple:
    """``in_shape`` rounded up to a multiple of 2**depth on every axis."""
    factor = 2**depth
    return tuple(math.ceil(n / factor) * factor for n in in_shape)


def down(spatial_dims: int, in_channels: int, out_channels: int, norm=None) -> nn.Module:
    """Halve each side: kernel 4, stride 2, padding 1, then LeakyReLU."""
    return Convolution(spatial_dims, in_channels, out_channels, strides=2, kernel_size=4, padding=1, act=ACTIVATION, norm=norm)


def up(spatial_dims: int, in_channels: int, out_channels: int, norm=None, last: bool = False) -> nn.Module:
    """Double each side (transposed convolution); the last layer has no activation,
    so reconstructions are not clipped."""
    return Convolution(
        spatial_dims, in_channels, out_channels, strides=2, kernel_size=4, padding=1, output_padding=0,
        is_transposed=True, act=None if last else ACTIVATION, norm=None if last else norm, conv_only=last,
    )


def pad_to(x, shape):
    """Zero-pad the spatial axes of x (B, C, ...) at their far ends up to ``shape``."""
    pads = []
    for have, want in reversed(list(zip(x.shape[2:], shape))):
        pads += [0, want - have]
    return nn.functional.pad(x, pads) if any(pads) else x


def crop_to(x, shape):
    """The first ``shape`` voxels of each spatial axis of x (B, C, ...)."""
    return x[(slice(None), slice(None)) + tuple(slice(0, n) for n in shape)]
