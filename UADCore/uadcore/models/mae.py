"""MAE: the masked autoencoder with a pseudo-abnormal module and an anomaly
classifier of Georgescu et al., for 2D slices.

Two stages, trained one after the other by the same engine:

1. ``mae``: a ViT encoder sees a random 25 % of the patches (mask ratio 0.75), a
   light decoder predicts the others; MSE on the masked patches only.
2. ``classifier``: the MAE is frozen. A normal slice X gives the classifier input
   |X - X_hat|; a second, independent reconstruction with pseudo-abnormal boxes
   pasted in gives |X - X_hat'|. A ViT (started from the MAE encoder) learns to
   tell them apart with binary cross-entropy; the anomaly score of a slice is the
   probability of the pseudo-abnormal class.

Reconstruction (`reconstruct`): ``passes`` (4) masked passes; each keeps the
visible patches of the input exactly and takes the prediction for the masked
ones; the pasted images are averaged. For scoring the masks are fixed (drawn from
a fixed seed, the same for every slice), so a slice's reconstruction does not
depend on its batch or on when it is scored.

Shapes: x (B, 1, H, W) with H, W multiples of ``patch``; reconstruction likewise;
scores (B,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uadcore.models.spec import ModelSpec
from uadcore.models.vit import ViTEncoder, patchify, sincos_position_embedding, unpatchify

# Class indices of the anomaly classifier, fixed here and nowhere else: its single
# logit is the log-odds of PSEUDO_ABNORMAL, so sigmoid(logit) is the anomaly score.
NORMAL, PSEUDO_ABNORMAL = 0, 1
MASK_SEED = 20_230_101  # the fixed masks of scoring reconstructions
BOX_SIDES_AT_224 = (10, 40)  # pseudo-abnormal box sides in pixels at 224 x 224 (the paper)
MAX_BOXES = 10


class MAE(nn.Module):
    stages = ("mae", "classifier")

    def __init__(self, in_shape=(224, 224), patch=16, dim=768, depth=12, heads=12, decoder_dim=512, decoder_depth=8,
                 decoder_heads=16, mask_ratio=0.75, passes=4, extract_mask_ratio=0.75, in_channels=1):
        super().__init__()
        self.in_shape = tuple(int(n) for n in in_shape)
        self.patch, self.mask_ratio = int(patch), float(mask_ratio)
        self.passes, self.extract_mask_ratio = int(passes), float(extract_mask_ratio)
        self.in_channels = in_channels
        self.encoder = ViTEncoder(self.in_shape, patch, dim, depth, heads, in_channels=in_channels)
        rows, cols = self.encoder.grid
        self.to_decoder = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("decoder_position", sincos_position_embedding(rows, cols, decoder_dim)[None], persistent=False)
        from monai.networks.blocks import TransformerBlock

        self.decoder = nn.ModuleList(TransformerBlock(decoder_dim, 4 * decoder_dim, decoder_heads, qkv_bias=True) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.to_pixels = nn.Linear(decoder_dim, patch * patch * in_channels)
        nn.init.normal_(self.mask_token, std=0.02)
        # the anomaly classifier: the encoder's architecture and a one-logit head
        self.classifier = ViTEncoder(self.in_shape, patch, dim, depth, heads, in_channels=in_channels)
        self.head = nn.Linear(dim, 1)
        self.stage = "mae"

    # ---- stages ----------------------------------------------------------------
    def begin_stage(self, stage: str, fresh: bool = True) -> list[nn.Parameter]:
        """Make ``stage`` the one trained; returns the parameters it trains. A
        ``fresh`` classifier stage starts the classifier from the MAE encoder."""
        if stage not in self.stages:
            raise ValueError(f"unknown stage {stage}")
        self.stage = stage
        trained = [self.classifier, self.head] if stage == "classifier" else [self.encoder, self.to_decoder, self.decoder, self.decoder_norm, self.to_pixels]
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        parameters = [p for module in trained for p in module.parameters()]
        if stage == "mae":
            parameters.append(self.mask_token)
        for parameter in parameters:
            parameter.requires_grad_(True)
        if stage == "classifier" and fresh:
            self.classifier.load_state_dict(self.encoder.state_dict())
            self.head.reset_parameters()
        return parameters

    def loss_per_sample(self, x: torch.Tensor) -> torch.Tensor:
        """(B,): the current stage's loss of each sample."""
        if self.stage == "classifier":
            return self._classifier_loss(x)
        noise = torch.rand(x.shape[0], self.encoder.n_patches, device=x.device)
        prediction, masked = self.masked_prediction(x, noise, self.mask_ratio)
        error = (prediction.float() - patchify(x, self.patch).float()).pow(2).mean(dim=-1)  # (B, N)
        return (error * masked).sum(dim=1) / masked.sum(dim=1)

    # ---- the masked autoencoder ----------------------------------------------------
    def masked_prediction(self, x: torch.Tensor, noise: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict every patch of x from the patches with the lowest ``noise``.

        noise: (B, N) or (N,) (the same mask for every image). Returns the predicted
        patches (B, N, p * p) and the mask (B, N), 1.0 where a patch was hidden.
        """
        b, n = x.shape[0], self.encoder.n_patches
        noise = noise.expand(b, n) if noise.dim() == 1 else noise
        n_keep = max(1, int(round(n * (1.0 - mask_ratio))))
        keep = torch.argsort(noise, dim=1)[:, :n_keep]
        masked = torch.ones(b, n, device=x.device).scatter_(1, keep, 0.0)
        encoded = self.to_decoder(self.encoder(x, keep))  # (B, 1 + n_keep, d)
        tokens = self.mask_token.to(encoded.dtype).expand(b, n, -1).clone()
        tokens.scatter_(1, keep[..., None].expand(-1, -1, tokens.shape[-1]), encoded[:, 1:])
        tokens = torch.cat([encoded[:, :1], tokens + self.decoder_position], dim=1)
        for block in self.decoder:
            tokens = block(tokens)
        return self.to_pixels(self.decoder_norm(tokens))[:, 1:], masked

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None, random_masks: bool = False) -> torch.Tensor:
        """The paste-and-average reconstruction, (B, 1, H, W).

        Masks: fixed (the same ``passes`` masks for every image and every call) unless
        ``random_masks``, then drawn independently per image from ``generator`` (or
        the global generator on x's device).
        """
        patches = patchify(x, self.patch)
        total = torch.zeros_like(patches, dtype=torch.float32)
        for index in range(self.passes):
            if random_masks:
                noise = torch.rand(x.shape[0], self.encoder.n_patches, generator=generator, device=x.device if generator is None else "cpu").to(x.device)
            else:
                noise = torch.rand(self.encoder.n_patches, generator=torch.Generator().manual_seed(MASK_SEED + index)).to(x.device)
            prediction, masked = self.masked_prediction(x, noise, self.extract_mask_ratio)
            hidden = masked[..., None]
            total += (hidden * prediction.float() + (1.0 - hidden) * patches.float())
        return unpatchify(total / self.passes, self.patch, self.in_shape, self.in_channels)

    # ---- the anomaly classifier -------------------------------------------------
    def classifier_logit(self, difference: torch.Tensor) -> torch.Tensor:
        """|X - X_hat| (B, 1, H, W) -> log-odds of PSEUDO_ABNORMAL, (B,)."""
        return self.head(self.classifier(difference)[:, 0]).squeeze(1)

    def abnormal_probability(self, x: torch.Tensor) -> torch.Tensor:
        """The anomaly score of each slice: P(pseudo-abnormal | |x - x_hat|), (B,)."""
        difference = (x.float() - self.reconstruct(x).float()).abs()
        return torch.sigmoid(self.classifier_logit(difference).float())

    def _classifier_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean binary cross-entropy of each slice's normal and pseudo-abnormal
        example, (B,). Both reconstructions use fresh random masks."""
        with torch.no_grad():
            normal = self.reconstruct(x, random_masks=True)
            altered, _ = pseudo_abnormal(self.reconstruct(x, random_masks=True), x > 0)
        inputs = torch.cat([(x.float() - normal).abs(), (x.float() - altered).abs()])
        targets = torch.cat([torch.full((len(x),), float(NORMAL)), torch.full((len(x),), float(PSEUDO_ABNORMAL))]).to(x.device)
        losses = F.binary_cross_entropy_with_logits(self.classifier_logit(inputs).float(), targets, reduction="none")
        return 0.5 * (losses[: len(x)] + losses[len(x) :])


def pseudo_abnormal(images: torch.Tensor, region: torch.Tensor | None = None, generator: torch.Generator | None = None):
    """The pseudo-abnormal module: k ~ U{1..10} boxes per image, sides drawn
    uniformly from 10-40 px at 224 x 224 (scaled to the image size), each box's
    intensities multiplied by beta ~ U(0, 1).

    Box centres are random pixels of ``region`` (e.g. the brain, (B, 1, H, W) bool)
    when given: the published code places them anywhere, but a box on the
    background changes nothing and would teach the classifier that an unchanged
    image is abnormal.

    images: (B, C, H, W). Returns (altered copy, boxes) with boxes[b] a list of
    (top, left, height, width, beta).
    """
    b, _, h, w = images.shape
    low, high = (max(2, int(round(side * min(h, w) / 224))) for side in BOX_SIDES_AT_224)
    out = images.clone()
    boxes = []

    def draw(n, upper=None):
        if upper is None:
            return torch.rand(n, generator=generator)
        return torch.randint(upper[0], upper[1] + 1, (n,), generator=generator)

    for index in range(b):
        k = int(draw(1, (1, MAX_BOXES))[0])
        candidates = torch.nonzero(region[index].reshape(-1, h, w).any(0)) if region is not None else None
        image_boxes = []
        for _ in range(k):
            height, width = (int(v) for v in draw(2, (low, high)))
            if candidates is not None and len(candidates):
                centre = candidates[int(draw(1, (0, len(candidates) - 1))[0])].tolist()
            else:
                centre = [int(draw(1, (0, h - 1))[0]), int(draw(1, (0, w - 1))[0])]
            top = min(max(centre[0] - height // 2, 0), max(h - height, 0))
            left = min(max(centre[1] - width // 2, 0), max(w - width, 0))
            beta = float(draw(1)[0])
            out[index, :, top : top + height, left : left + width] *= beta
            image_boxes.append((top, left, height, width, beta))
        boxes.append(image_boxes)
    return out, boxes


def optimizer(parameters, config, stage: str) -> torch.optim.Optimizer:
    """Adam for the MAE; AdamW (the paper's) for the anomaly classifier."""
    if stage == "classifier":
        return torch.optim.AdamW(parameters, lr=config.classifier_lr, weight_decay=config.classifier_weight_decay)
    return torch.optim.Adam(parameters, lr=config.lr)


# Georgescu et al.: ViT-B/16 MAE on 224x224 slices, then a ViT-B anomaly classifier
SPEC = ModelSpec(
    "mae2d", MAE, "brain2d-slices", maps=("classifier", "rec", "ssim"), stages=MAE.stages, optimizer=optimizer,
    summary="the masked autoencoder and anomaly classifier of Georgescu et al.",
    preset_params={"size": 224}, train={"epochs": 1600, "reinit_at": []},
    small={"patch": 8, "dim": 96, "depth": 4, "heads": 4, "decoder_dim": 64, "decoder_depth": 2, "decoder_heads": 4},
    small_preset={"size": 64},
)
