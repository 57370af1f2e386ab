"""VAE: the variational autoencoder of Zimmerer et al., for 2D slices or 3D volumes.

Fully convolutional: strided convolutions (feature maps 16-32-64-256 by default)
bring the padded input down to a small grid, one convolution spanning that grid
(`WholeGrid`, computed as the matrix product it is) gives the posterior mean and
log-variance of ``latent`` values; the decoder mirrors it with transposed
convolutions. The likelihood p(x|z) is Gaussian with
standard deviation ``std`` (c, 1 by default), the prior N(0, I).

Shapes (spatial_dims = 2): x (B, 1, H, W) -> mu, logvar (B, latent) -> (B, 1, H, W);
(spatial_dims = 3): x (B, 1, I, J, K) likewise.
"""

from __future__ import annotations

import torch
from torch import nn

from uadcore.models.blocks import ACTIVATION, WholeGrid, crop_to, down, pad_to, padded_shape, through, up
from uadcore.models.spec import ModelSpec


class VAE(nn.Module):
    def __init__(self, in_shape=(64, 64), channels=(16, 32, 64, 256), latent=256, std=1.0, in_channels=1):
        super().__init__()
        self.spatial_dims = len(in_shape)
        self.in_shape = tuple(int(n) for n in in_shape)
        self.padded_shape = padded_shape(self.in_shape, len(channels))
        bottleneck = tuple(n // 2 ** len(channels) for n in self.padded_shape)
        self.latent, self.std = int(latent), float(std)
        d = self.spatial_dims

        widths = (in_channels,) + tuple(channels)
        self.encoder = nn.Sequential(
            *[down(d, widths[i], widths[i + 1]) for i in range(len(channels))],
            WholeGrid(d, channels[-1], 2 * latent, bottleneck),
        )
        decoder = [
            WholeGrid(d, latent, channels[-1], bottleneck, transposed=True, act=ACTIVATION),
            *[up(d, widths[i + 1], widths[i]) for i in range(len(channels) - 1, 0, -1)],
            up(d, widths[1], in_channels, last=True),
        ]
        self.decoder = nn.Sequential(*decoder)
        self.edges_in_float32 = True  # the first and last layer in float32 under autocast (`blocks.in_float32`); not a weight

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> posterior mean and log-variance, each (B, latent)."""
        moments = through(self.encoder, pad_to(x, self.padded_shape), 0 if self.edges_in_float32 else None).flatten(1)
        return moments[:, : self.latent], moments[:, self.latent :]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent) -> reconstruction shaped like the input."""
        grid = z.view(z.shape[0], self.latent, *([1] * self.spatial_dims))
        return crop_to(through(self.decoder, grid, -1 if self.edges_in_float32 else None), self.in_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training: decode a sample of the posterior; eval: decode its mean."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction from z = mu, as for scoring."""
        return self.decode(self.encode(x)[0])

    def terms(self, x: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-voxel reconstruction term 0.5 ((x - x_hat) / c)^2 (shaped like x),
        per-sample KL divergence (B,), and the reconstruction x_hat."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        reconstruction = self.decode(z)
        rec_term = 0.5 * ((x - reconstruction) / self.std) ** 2
        return rec_term, kl_divergence(mu, logvar), reconstruction

    def loss_per_sample(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO of each sample (constants dropped): reconstruction term
        summed over voxels + KL, shape (B,). z is sampled in training mode."""
        rec_term, kl, _ = self.terms(x, sample=self.training)
        return rec_term.flatten(1).float().sum(dim=1) + kl.float()


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over latent units, shape (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


VAE_MAPS = ("rec", "kl-grad", "rec-grad", "elbo-grad", "combi")
VAE_TRAINING = {"lr": 1e-4, "plateau_patience": 1, "early_stop_patience": 3}
# Zimmerer et al.: 64x64 slices, feature maps 16-32-64-256, z = 256, Adam 1e-4
SPEC_2D = ModelSpec("vae2d", VAE, "brain2d-slices", maps=VAE_MAPS, train=VAE_TRAINING,
                    summary="the VAE of Zimmerer et al. on 64x64 slices",
                    small={"channels": [8, 16, 32, 64], "latent": 64})
SPEC_3D = ModelSpec("vae3d", VAE, "brain3d-behrendt", maps=VAE_MAPS, train=VAE_TRAINING,
                    summary="the same VAE on the brain3d-behrendt volume grid",
                    small={"channels": [8, 16, 32, 64], "latent": 128})
