"""Vision-transformer pieces shared by the masked autoencoder and its anomaly
classifier: cutting images into square patches (tokens) and back, fixed 2D
sine-cosine position embeddings, and a ViT encoder of MONAI transformer blocks.

Shapes: images (B, C, H, W) with H and W multiples of the patch side p; tokens
(B, N, C * p * p) with N = (H / p) * (W / p), row-major over the patch grid.
"""

from __future__ import annotations

import torch
from torch import nn


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C * patch * patch)."""
    b, c, h, w = images.shape
    grid = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def unpatchify(tokens: torch.Tensor, patch: int, size: tuple[int, int], channels: int = 1) -> torch.Tensor:
    """(B, N, C * patch * patch) -> (B, C, H, W); the inverse of `patchify`."""
    b = tokens.shape[0]
    rows, cols = size[0] // patch, size[1] // patch
    grid = tokens.reshape(b, rows, cols, channels, patch, patch)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(b, channels, size[0], size[1])


def sincos_position_embedding(rows: int, cols: int, dim: int) -> torch.Tensor:
    """Fixed 2D sine-cosine embedding of a rows x cols grid, (rows * cols, dim);
    half of the dimensions encode the row, half the column (as in MAE)."""
    if dim % 4:
        raise ValueError(f"the embedding size must be a multiple of 4 (got {dim})")
    frequencies = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    row, col = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="ij")
    parts = []
    for position in (row.reshape(-1), col.reshape(-1)):
        angles = position[:, None] * frequencies[None]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()


class ViTEncoder(nn.Module):
    """Patch embedding + fixed position embedding + a class token + transformer blocks.

    forward(x (B, C, H, W), keep (B, n) or None) -> (B, 1 + n, dim): the class token
    and the embeddings of the kept patches (all N patches when ``keep`` is None).
    """

    def __init__(self, image_size=(64, 64), patch=8, dim=192, depth=6, heads=3, mlp_ratio=4.0, in_channels=1):
        super().__init__()
        if image_size[0] % patch or image_size[1] % patch:
            raise ValueError(f"image size {tuple(image_size)} is not a multiple of the patch side {patch}")
        self.patch, self.grid = patch, (image_size[0] // patch, image_size[1] // patch)
        self.embed = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.register_buffer("position", sincos_position_embedding(*self.grid, dim)[None], persistent=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        from monai.networks.blocks import TransformerBlock  # MONAI where a network is built

        self.blocks = nn.ModuleList(TransformerBlock(dim, int(dim * mlp_ratio), heads, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.cls_token, std=0.02)

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.position  # (B, N, dim)
        if keep is not None:
            tokens = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)
