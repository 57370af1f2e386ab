"""The map kinds (`KINDS`, the registry every model's `ModelSpec.maps` names):
voxel-wise anomaly maps of every model (Zimmerer et al. for the VAE):

- ``rec``: |x - x_hat|, x_hat reconstructed from z = mu;
- ``kl-grad``, ``rec-grad``, ``elbo-grad``: |d term / dx| for the KL term, the
  reconstruction term 0.5 ((x - x_hat(mu(x))) / c)^2 summed over voxels, or both
  (model in eval mode, z = mu);
- ``combi``: the KL gradient, smoothed and min-max normalised, times the
  reconstruction term;
- ``abs-z``, ``z``: the normative baseline's |z| and signed z-score per voxel
  (rec there is |x - healthy median|); ``near-z``: its |z| against the closest
  healthy statistics within a voxel (`Normative.near_z`);
- ``probability``: the anomaly segmenter's P(anomalous) per voxel.

Per image by default: gradients of the *sum* over the batch (each image's gradient
is then its own), min-max over each image. ``reference=True`` reproduces the
published code: gradients of the batch *mean*, every gradient map smoothed (7x7,
sigma 3, zero padding), min-max over the whole batch; a map then depends on which
images share its batch.

All maps: (B, C, ...) float32, shaped like the input.

Some kinds give one score per model input (a slice or a patch) instead of a map;
a scan's map then paints each input's score over it (``MapKind.per_item``):

- ``classifier``: the MAE's anomaly classifier, P(pseudo-abnormal) of a slice;
- ``ssim``: 1 - SSIM(x, x_hat) of a slice (the MAE ablation of Georgescu et al.);
- ``patch-rmse``: the root mean squared reconstruction error of a patch (Wei et al.).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from uadcore.models import VAE
from uadcore.registry import Registry

GRADIENT_KINDS = ("kl-grad", "rec-grad", "elbo-grad", "combi")
SMOOTH_SIZE, SMOOTH_SIGMA = 7, 3.0


def anomaly_maps(model, x: torch.Tensor, kind: str, reference: bool = False) -> torch.Tensor:
    """The ``kind`` map of every image of the batch x (B, C, ...)."""
    return map_outputs(model, x, kind, reference)[kind]


def map_outputs(model, x: torch.Tensor, kind: str, reference: bool = False) -> dict:
    """The ``kind`` map of the batch x (B, C, ...) and, from the same forward pass,
    what the sample scores need, so scoring a scan runs the model once.

    Returns {kind: map (B, C, ...), "rec": |x - x_hat| (B, C, ...)} and, for a VAE,
    "kl" and "elbo" (B,): the KL term and the negative ELBO (reconstruction term
    summed over voxels + KL, constants dropped), z = mu.
    """
    map_kind = KINDS.get(kind)
    if map_kind is None or map_kind.per_item:
        raise ValueError(f"unknown map kind {kind}")
    model.eval()
    return map_kind.compute(model, x, reference)


def reconstruction_outputs(model, x: torch.Tensor, reference: bool = False) -> dict:
    """{"rec": |x - reconstruct(x)|} (B, C, ...); a VAE's terms from the same pass."""
    if isinstance(model, VAE):
        return vae_outputs(model, x, reference)
    with torch.no_grad():
        return {"rec": (model.reconstruct(x).float() - x.float()).abs()}


def z_outputs(model, x: torch.Tensor, reference: bool = False) -> dict:
    """The normative baseline's signed and absolute z-scores, and |x - healthy median|."""
    with torch.no_grad():
        z = model.z_score(x)
        return {"rec": (model.reconstruct(x).float() - x.float()).abs(), "abs-z": z.abs(), "z": z}


def near_z_outputs(model, x: torch.Tensor, reference: bool = False) -> dict:
    """The normative baseline's |z| against the closest healthy statistics within a
    voxel, and |x - healthy median|."""
    with torch.no_grad():
        return {"rec": (model.reconstruct(x).float() - x.float()).abs(), "near-z": model.near_z(x)}


def probability_outputs(model, x: torch.Tensor, reference: bool = False) -> dict:
    """The anomaly segmenter's voxel probabilities, {"probability": (B, C, ...)}."""
    with torch.no_grad():
        return {"probability": model.anomaly_probability(x)}


def vae_outputs(model, x: torch.Tensor, reference: bool = False, kind: str = "rec") -> dict:
    """A VAE's ``kind`` map (rec or one of `GRADIENT_KINDS`) with "rec", "kl" and "elbo"."""
    gradient = kind in GRADIENT_KINDS
    with torch.enable_grad() if gradient else torch.no_grad():
        x = (x.detach() if x.is_floating_point() else x.float()).clone().requires_grad_(gradient)
        rec_term, kl, reconstruction = model.terms(x, sample=False)
        rec_sum = rec_term.flatten(1).sum(1, dtype=torch.promote_types(rec_term.dtype, torch.float32))  # no half-precision sums
        outputs = {"rec": (reconstruction.detach().float() - x.detach().float()).abs(),
                   "kl": kl.detach().float(), "elbo": (rec_sum + kl).detach().float()}
        if not gradient:
            return outputs
        per_image = {"kl-grad": kl, "combi": kl, "rec-grad": rec_sum, "elbo-grad": rec_sum + kl}[kind]
        total = per_image.mean() if reference else per_image.sum()
        grad = torch.autograd.grad(total, x)[0].abs()
    if reference or kind == "combi":
        grad = smooth(grad)
    outputs[kind] = grad.detach() if kind != "combi" else (_minmax(grad, over_batch=reference) * rec_term).detach()
    return outputs


def smooth(maps: torch.Tensor, size: int = SMOOTH_SIZE, sigma: float = SMOOTH_SIGMA) -> torch.Tensor:
    """Normalised Gaussian smoothing over the spatial axes of (B, C, ...), zero padding."""
    offsets = torch.arange(size, dtype=torch.float32, device=maps.device) - (size - 1) / 2
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    spatial = maps.dim() - 2
    convolve = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    channels = maps.shape[1]
    out = maps.float()
    for axis in range(spatial):
        shape = [1] * spatial
        shape[axis] = size
        weight = kernel.view(1, 1, *shape).repeat(channels, 1, *([1] * spatial))
        padding = [0] * spatial
        padding[axis] = size // 2
        out = convolve(out, weight, padding=padding, groups=channels)
    return out


def _minmax(maps: torch.Tensor, over_batch: bool) -> torch.Tensor:
    """Scale to [0, 1] per image (or over the whole batch)."""
    if over_batch:
        low, high = maps.min(), maps.max()
    else:
        flat = maps.flatten(1)
        shape = (-1,) + (1,) * (maps.dim() - 1)
        low, high = flat.min(1).values.view(shape), flat.max(1).values.view(shape)
    return (maps - low) / (high - low).clamp_min(1e-12)


def batched_maps(model, items: torch.Tensor, device, kind: str = "rec", batch_size: int = 8, amp_dtype=None, reference: bool = False) -> torch.Tensor:
    """``anomaly_maps`` of many items, ``batch_size`` at a time.

    items: (M, C, ...) on any device. Returns (M, C, ...) float32 on the CPU. Except
    with ``reference``, an item's map does not depend on the batching.
    """
    return batched_map_outputs(model, items, device, kind, batch_size, amp_dtype, reference)[kind]


def batched_map_outputs(model, items: torch.Tensor, device, kind: str = "rec", batch_size: int = 8, amp_dtype=None,
                        reference: bool = False) -> dict:
    """``map_outputs`` of many items (M, C, ...), ``batch_size`` at a time: each
    output concatenated over the items, float32 on the CPU."""
    parts: dict = {}
    for start in range(0, len(items), batch_size):
        x = items[start : start + batch_size].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            for name, value in map_outputs(model, x, kind, reference).items():
                parts.setdefault(name, []).append(value.float().cpu())
    if not parts:
        return {kind: torch.zeros_like(items), "rec": torch.zeros_like(items)}
    return {name: torch.cat(values) for name, values in parts.items()}


@torch.no_grad()
def item_scores(model, x: torch.Tensor, kind: str) -> torch.Tensor:
    """One score per image of the batch x (B, C, H, W) for an item kind, (B,) float32."""
    map_kind = KINDS.get(kind)
    if map_kind is None or not map_kind.per_item:
        raise ValueError(f"unknown item kind {kind}")
    model.eval()
    return map_kind.compute(model, x).float()


def ssim_scores(model, x: torch.Tensor) -> torch.Tensor:
    """1 - SSIM(x, x_hat) of each image, (B,)."""
    from monai.metrics import SSIMMetric

    similarity = SSIMMetric(spatial_dims=x.dim() - 2, data_range=1.0)(model.reconstruct(x).float().clamp(0, 1), x.float())
    return 1.0 - similarity.reshape(-1)


def batched_item_scores(model, items: torch.Tensor, device, kind: str, batch_size: int = 8, amp_dtype=None) -> torch.Tensor:
    """``item_scores`` of many items (M, C, ...), ``batch_size`` at a time: (M,) float32 on the CPU."""
    scores = []
    for start in range(0, len(items), batch_size):
        x = items[start : start + batch_size].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            scores.append(item_scores(model, x, kind).cpu())
    return torch.cat(scores) if scores else torch.zeros(0)


@dataclass(frozen=True)
class MapKind:
    """A kind of anomaly map.

    compute: for a voxel kind ``(model, x (B, C, ...), reference) -> {name: tensor}``
        (see `map_outputs`); for a ``per_item`` kind ``(model, x) -> (B,)`` scores,
        one per model input (a slice or a patch), painted over the input in the scan's map.
    """

    name: str
    summary: str
    compute: Callable
    per_item: bool = False


KINDS: Registry = Registry("map kind")  # {name: MapKind}


def register_kind(kind: MapKind) -> MapKind:
    """Offer ``kind`` to the models whose spec names it."""
    return KINDS.register(kind)


def is_item_kind(kind: str) -> bool:
    """True for a kind that gives one score per model input (slice or patch)."""
    return kind in KINDS and KINDS[kind].per_item


for _kind in (
    MapKind("rec", "reconstruction error |x - x_hat|", reconstruction_outputs),
    MapKind("kl-grad", "|d KL / dx| of a VAE", functools.partial(vae_outputs, kind="kl-grad")),
    MapKind("rec-grad", "|d reconstruction term / dx| of a VAE", functools.partial(vae_outputs, kind="rec-grad")),
    MapKind("elbo-grad", "|d ELBO / dx| of a VAE", functools.partial(vae_outputs, kind="elbo-grad")),
    MapKind("combi", "smoothed, normalised KL gradient x reconstruction term", functools.partial(vae_outputs, kind="combi")),
    MapKind("abs-z", "|z| against the healthy voxel statistics", z_outputs),
    MapKind("near-z", "|z| against the closest healthy voxel statistics within a voxel", near_z_outputs),
    MapKind("z", "signed z against the healthy voxel statistics", z_outputs),
    MapKind("probability", "the anomaly segmenter's P(anomalous) per voxel", probability_outputs),
    MapKind("classifier", "the MAE's anomaly classifier, P(pseudo-abnormal) of a slice",
            lambda model, x: model.abnormal_probability(x), per_item=True),
    MapKind("ssim", "1 - SSIM(x, x_hat) of a slice", ssim_scores, per_item=True),
    MapKind("patch-rmse", "root mean squared reconstruction error of a patch", lambda model, x: model.patch_rmse(x), per_item=True),
):
    register_kind(_kind)
