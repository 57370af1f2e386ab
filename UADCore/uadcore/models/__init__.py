"""Models: plain `torch.nn.Module`s, each in its own file with its shapes documented
and its `ModelSpec` (see `uadcore.models.spec`).

`MODELS` is the registry, by name: the CLI's choices and help, the scorer and the
Slicer panels all read it. Adding a model is one file (the module and its spec),
its name in the import of the model files and its spec in `_BUILT_IN` (or a call
to `register_model` from outside the package).
"""

from __future__ import annotations

from uadcore.errors import UADError
from uadcore.models import ae3d, anomseg, mae, normative, patchae, vae  # the model files
from uadcore.models.ae3d import AE3D
from uadcore.models.anomseg import AnomSeg3D
from uadcore.models.mae import MAE
from uadcore.models.normative import Normative
from uadcore.models.patchae import PatchAE
from uadcore.models.spec import AnomalyModel, ClosedFormModel, ModelSpec, ReconstructionModel, StagedModel
from uadcore.models.vae import VAE
from uadcore.registry import Registry

MODELS: Registry = Registry("model")  # {name: ModelSpec}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Offer ``spec``'s model everywhere (CLI, scorer, panels) under ``spec.name``."""
    return MODELS.register(spec)


_BUILT_IN = (normative.SPEC, ae3d.SPEC, vae.SPEC_2D, vae.SPEC_3D, mae.SPEC, patchae.SPEC, anomseg.SPEC)
for _spec in _BUILT_IN:
    register_model(_spec)


def model_spec(name: str) -> ModelSpec:
    """The spec of the model ``name``; an unknown name is a UADError listing the models."""
    if name not in MODELS:
        raise UADError(f"unknown model '{name}'; models are {', '.join(MODELS)}")
    return MODELS[name]


def make_model(name: str, in_shape, **options):
    """A model by name for inputs of spatial shape ``in_shape``."""
    return model_spec(name).build(in_shape, **options)


__all__ = ["AE3D", "AnomSeg3D", "MAE", "MODELS", "AnomalyModel", "ClosedFormModel", "ModelSpec", "Normative", "PatchAE", "ReconstructionModel", "StagedModel",
           "VAE", "make_model", "model_spec", "register_model"]
