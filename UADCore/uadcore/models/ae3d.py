"""AE3D: the 3D convolutional autoencoder of Behrendt et al.

A stack of strided 3D convolutions compresses the volume to a dense latent vector
of ``latent`` values (n_z = 512 in the paper); a mirrored stack of transposed
convolutions reconstructs it. The input is zero-padded inside the network to a
multiple of 2**depth and the output cropped back, so any grid works (the paper's is
64x77x66). No batch normalisation by default: a scan's reconstruction never depends
on which scans share its batch, and training gives the same result split across
DDP ranks.

Shapes: x (B, 1, I, J, K) -> reconstruction (B, 1, I, J, K); z (B, latent).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from uadcore.models.blocks import crop_to, down, pad_to, padded_shape, through, up
from uadcore.models.spec import ModelSpec


class AE3D(nn.Module):
    def __init__(self, in_shape=(64, 77, 66), channels=(32, 64, 128, 256), latent=512, in_channels=1, norm=None):
        super().__init__()
        self.in_shape = tuple(int(n) for n in in_shape)
        self.padded_shape = padded_shape(self.in_shape, len(channels))
        self.bottleneck_shape = (channels[-1],) + tuple(n // 2 ** len(channels) for n in self.padded_shape)

        widths = (in_channels,) + tuple(channels)
        self.encoder = nn.Sequential(*[down(3, widths[i], widths[i + 1], norm) for i in range(len(channels))], nn.Flatten())
        flat = math.prod(self.bottleneck_shape)
        self.to_latent = nn.Linear(flat, latent)
        self.from_latent = nn.Sequential(nn.Linear(latent, flat), nn.LeakyReLU(0.2))
        decoder = [up(3, widths[i + 1], widths[i], norm) for i in range(len(channels) - 1, 0, -1)]
        decoder.append(up(3, widths[1], in_channels, last=True))
        self.decoder = nn.Sequential(*decoder)
        self.edges_in_float32 = True  # the first and last layer in float32 under autocast (`blocks.in_float32`); not a weight

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, I, J, K) -> z (B, latent)."""
        return self.to_latent(through(self.encoder, pad_to(x, self.padded_shape), 0 if self.edges_in_float32 else None))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent) -> (B, C, I, J, K)."""
        grid = self.from_latent(z).view(-1, *self.bottleneck_shape)
        return crop_to(through(self.decoder, grid, -1 if self.edges_in_float32 else None), self.in_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction used for scoring, (B, C, I, J, K)."""
        return self(x)

    def loss_per_sample(self, x: torch.Tensor) -> torch.Tensor:
        """L1 reconstruction loss of each sample over all its voxels, shape (B,)."""
        return (self(x) - x).abs().flatten(1).float().mean(dim=1)


SPEC = ModelSpec(
    "ae3d", AE3D, "brain3d-behrendt", maps=("rec",), summary="the 3D autoencoder of Behrendt et al.",
    small={"channels": [8, 16, 32, 64], "latent": 128},
)
