"""PatchAE: the patch autoencoder one-class classifier of Wei et al.

Strided convolutions with ReLU halve the patch five times while the feature maps
grow 2-4-8-16-32 (128x128 -> 64x64x2 -> 32x32x4 -> 16x16x8 -> 8x8x16 -> 4x4x32 in
the paper); transposed convolutions mirror them back. The loss is the mean squared
error; a patch's anomaly score is its RMSE (`patch_rmse`).

Shapes: x (B, 1, P, P), P a multiple of 2**len(channels) -> reconstruction
(B, 1, P, P); scores (B,).
"""

from __future__ import annotations

import torch
from torch import nn

from uadcore.models.spec import ModelSpec


class PatchAE(nn.Module):
    def __init__(self, in_shape=(128, 128), channels=(2, 4, 8, 16, 32), in_channels=1):
        super().__init__()
        self.in_shape = tuple(int(n) for n in in_shape)
        factor = 2 ** len(channels)
        if any(n % factor for n in self.in_shape):
            raise ValueError(f"patch {self.in_shape} is not a multiple of {factor} ({len(channels)} halvings)")
        widths = (in_channels,) + tuple(channels)
        encoder, decoder = [], []
        for i in range(len(channels)):
            encoder += [nn.Conv2d(widths[i], widths[i + 1], kernel_size=4, stride=2, padding=1), nn.ReLU()]
        for i in range(len(channels), 0, -1):
            decoder.append(nn.ConvTranspose2d(widths[i], widths[i - 1], kernel_size=4, stride=2, padding=1))
            if i > 1:
                decoder.append(nn.ReLU())
        self.encoder, self.decoder = nn.Sequential(*encoder), nn.Sequential(*decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def loss_per_sample(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared error of each patch, (B,)."""
        return (self(x).float() - x.float()).pow(2).flatten(1).mean(dim=1)

    def patch_rmse(self, x: torch.Tensor) -> torch.Tensor:
        """Each patch's anomaly score: root mean squared reconstruction error, (B,)."""
        return self.loss_per_sample(x).sqrt()


# Wei et al.: 128x128 patches, feature maps 2-4-8-16-32, Adam 1e-3, batch 200
SPEC = ModelSpec(
    "patchae2d", PatchAE, "patches2d", maps=("patch-rmse", "rec"), summary="the patch autoencoder of Wei et al.",
    train={"reinit_at": [], "batch_size": 200},
    small_preset={"patch": 32, "stride": 16, "spacing_mm": 2.0},
)
