"""Models: plain `torch.nn.Module`s, each in its own file with its shapes documented.

Every model offers ``loss_per_sample(x) -> (B,)`` (what the training engine
minimises and what outlier removal compares) and ``reconstruct(x)`` (what scoring
compares with the input). A model trained in two stages names them in ``stages``
and switches with ``begin_stage``. `MODELS` names them with their preprocessing
preset (and its options, where the paper's differ from the preset's defaults), the
map kinds they offer (the first is the default), their training defaults (where
the paper's differ from the engine's), and the model and preset options of a small
configuration for CPUs.
"""

from __future__ import annotations

from uadcore.errors import UADError
from uadcore.models.ae3d import AE3D
from uadcore.models.mae import MAE
from uadcore.models.normative import Normative
from uadcore.models.patchae import PatchAE
from uadcore.models.vae import VAE

VAE_MAPS = ("rec", "kl-grad", "rec-grad", "elbo-grad", "combi")
MODELS = {
    "normative": {  # the voxel-statistics baseline: per-voxel healthy median and spread, map = z
        "cls": Normative,
        "preset": "brain3d-behrendt",
        "maps": ("abs-z", "z", "rec"),
        "train": {"epochs": 25, "reinit_at": [], "checkpoint_every": 25},  # 5 fit-and-remove rounds
        "small": {},
    },
    "ae3d": {
        "cls": AE3D,
        "preset": "brain3d-behrendt",
        "maps": ("rec",),
        "train": {},
        "small": {"channels": [8, 16, 32, 64], "latent": 128},
    },
    "vae2d": {  # Zimmerer et al.: 64x64 slices, feature maps 16-32-64-256, z = 256, Adam 1e-4
        "cls": VAE,
        "preset": "brain2d-slices",
        "maps": VAE_MAPS,
        "train": {"lr": 1e-4, "plateau_patience": 1, "early_stop_patience": 3},
        "small": {"channels": [8, 16, 32, 64], "latent": 64},
    },
    "vae3d": {  # the same VAE on the brain3d-behrendt grid
        "cls": VAE,
        "preset": "brain3d-behrendt",
        "maps": VAE_MAPS,
        "train": {"lr": 1e-4, "plateau_patience": 1, "early_stop_patience": 3},
        "small": {"channels": [8, 16, 32, 64], "latent": 128},
    },
    "mae2d": {  # Georgescu et al.: ViT-B/16 MAE on 224x224 slices, then a ViT-B anomaly classifier
        "cls": MAE,
        "preset": "brain2d-slices",
        "preset_params": {"size": 224},
        "maps": ("classifier", "rec", "ssim"),
        "train": {"epochs": 1600, "reinit_at": []},
        "small": {"patch": 8, "dim": 96, "depth": 4, "heads": 4, "decoder_dim": 64, "decoder_depth": 2, "decoder_heads": 4},
        "small_preset": {"size": 64},
    },
    "patchae2d": {  # Wei et al.: 128x128 patches, feature maps 2-4-8-16-32, Adam 1e-3, batch 200
        "cls": PatchAE,
        "preset": "patches2d",
        "maps": ("patch-rmse", "rec"),
        "train": {"reinit_at": [], "batch_size": 200},
        "small": {},
        "small_preset": {"patch": 32, "stride": 16, "spacing_mm": 2.0},
    },
}


def make_model(name: str, in_shape, **params):
    """A model by name for inputs of spatial shape ``in_shape``."""
    if name not in MODELS:
        raise UADError(f"unknown model '{name}'; models are {', '.join(MODELS)}")
    try:
        return MODELS[name]["cls"](in_shape=tuple(in_shape), **params)
    except TypeError as error:
        raise UADError(f"model {name}: bad options {params} ({error})") from error
