"""Building blocks shared by the convolutional models, for 2D and 3D alike.

MONAI is imported where a block is built, not with this module: the model
registry (the CLI's choices) loads every model file, and `uad train --help` need
not load MONAI."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATION = ("leakyrelu", {"negative_slope": 0.2})


def padded_shape(in_shape, depth: int) -> tuple:
    """``in_shape`` rounded up to a multiple of 2**depth on every axis."""
    factor = 2**depth
    return tuple(math.ceil(n / factor) * factor for n in in_shape)


def down(spatial_dims: int, in_channels: int, out_channels: int, norm=None) -> nn.Module:
    """Halve each side: kernel 4, stride 2, padding 1, then LeakyReLU."""
    from monai.networks.blocks import Convolution

    return Convolution(spatial_dims, in_channels, out_channels, strides=2, kernel_size=4, padding=1, act=ACTIVATION, norm=norm)


def up(spatial_dims: int, in_channels: int, out_channels: int, norm=None, last: bool = False) -> nn.Module:
    """Double each side (transposed convolution); the last layer has no activation,
    so reconstructions are not clipped."""
    from monai.networks.blocks import Convolution

    return Convolution(
        spatial_dims, in_channels, out_channels, strides=2, kernel_size=4, padding=1, output_padding=0,
        is_transposed=True, act=None if last else ACTIVATION, norm=None if last else norm, conv_only=last,
    )


class WholeGrid(nn.Module):
    """A convolution whose kernel spans its whole input grid, as the VAE's bottleneck
    has: (B, in, *grid) -> (B, out, 1, ...), or transposed, (B, in, 1, ...) ->
    (B, out, *grid). It is a matrix product and is computed as one: oneDNN runs
    these shapes as convolutions 2-6x slower on a CPU (most at batch size 1, where a
    3D VAE scores a volume). The parameters keep the convolution's layout and names
    (``conv.weight``, ``conv.bias``), so the layer is the convolution it replaces."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, grid, transposed: bool = False, act=None):
        super().__init__()
        from monai.networks.layers.utils import get_act_layer

        kind = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d) if transposed else (nn.Conv1d, nn.Conv2d, nn.Conv3d)
        self.conv = kind[spatial_dims - 1](in_channels, out_channels, kernel_size=tuple(grid))
        self.act = get_act_layer(act) if act is not None else nn.Identity()
        self.transposed, self.ones = transposed, (1,) * spatial_dims

    def forward(self, x):
        weight, bias = self.conv.weight, self.conv.bias
        if self.transposed:  # weight (in, out, *grid): each input value adds its own kernel
            y = (x.flatten(1) @ weight.flatten(1)).view(x.shape[0], *weight.shape[1:]) + bias.view(-1, *self.ones)
        else:  # weight (out, in, *grid): each output is a dot product over the whole grid
            y = F.linear(x.flatten(1), weight.flatten(1), bias).view(x.shape[0], -1, *self.ones)
        return self.act(y)


def in_float32(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in float32 even under autocast. For the full-resolution layers
    with one or a few channels (a network's first and last): cuDNN has no fast
    bfloat16 kernels for them (measured on an H200: one bf16 weight-gradient kernel
    of such a layer took 85 % of the paper-size VAE3D's training step), and they
    hold a small share of the FLOPs. On the CPU, where autocast is off, a plain call."""
    if not torch.is_autocast_enabled(x.device.type):
        return layer(x)
    with torch.autocast(x.device.type, enabled=False):
        return layer(x.float())


def through(layers: nn.Sequential, x: torch.Tensor, float32_layer: int | None = None) -> torch.Tensor:
    """``layers(x)``, the layer at index ``float32_layer`` (0 or -1: a network's
    full-resolution edge; None: none) run `in_float32`."""
    chosen = None if float32_layer is None else float32_layer % len(layers)
    for index, layer in enumerate(layers):
        x = in_float32(layer, x) if index == chosen else layer(x)
    return x


def pad_to(x, shape):
    """Zero-pad the spatial axes of x (B, C, ...) at their far ends up to ``shape``."""
    pads = []
    for have, want in reversed(list(zip(x.shape[2:], shape))):
        pads += [0, want - have]
    return nn.functional.pad(x, pads) if any(pads) else x


def crop_to(x, shape):
    """The first ``shape`` voxels of each spatial axis of x (B, C, ...)."""
    return x[(slice(None), slice(None)) + tuple(slice(0, n) for n in shape)]
