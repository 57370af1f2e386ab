"""The model contract: what every model offers the engine and the scorer
(`AnomalyModel`), and what UAD knows about it besides its code (`ModelSpec`).

A model is a `torch.nn.Module` with ``loss_per_sample``; one whose maps compare a
scan with a healthy-looking version of it (the ``rec`` kind) is a
`ReconstructionModel` and also has ``reconstruct``. One trained in stages (the
MAE, then its anomaly classifier) is a `StagedModel`; one fitted in closed form
(the normative baseline) a `ClosedFormModel`. Its `ModelSpec`, in the model's own
file, names its preprocessing preset, its map kinds (`uadcore.score.maps.KINDS`),
its training defaults, a CPU-sized configuration, and the optimiser of each stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import torch

from uadcore.errors import UADError


@runtime_checkable
class AnomalyModel(Protocol):
    def loss_per_sample(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) -> (B,): what training minimises and outlier removal compares."""


@runtime_checkable
class ReconstructionModel(AnomalyModel, Protocol):
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) -> (B, C, ...): the healthy-looking version the maps compare with."""


@runtime_checkable
class StagedModel(ReconstructionModel, Protocol):
    stages: tuple[str, ...]

    def begin_stage(self, stage: str, fresh: bool = True) -> list[torch.nn.Parameter]:
        """Make ``stage`` the one trained; returns the parameters it trains."""


@runtime_checkable
class ClosedFormModel(ReconstructionModel, Protocol):
    def fit(self, items: torch.Tensor, regions: torch.Tensor) -> None:
        """Fit on the training items (N, C, ...) and their brains (N, C, ...)."""


def adam(parameters, config, stage: str) -> torch.optim.Optimizer:
    """The engine's optimiser: Adam at the configured learning rate, every stage."""
    return torch.optim.Adam(parameters, lr=config.lr)


MAX_PARAMETERS = 1_000_000_000  # 4 GB of float32 weights: 30x the paper's AE3D (32 M)


@dataclass(frozen=True)
class ModelSpec:
    """A model as UAD offers it.

    name: what ``--model`` calls it.
    cls: the `torch.nn.Module` class, built as ``cls(in_shape=..., **options)``.
    preset: its preprocessing preset (`uadcore.preprocess.PRESETS`), with
        ``preset_params`` where the paper's differ from the preset's defaults.
    maps: the map kinds it offers (`uadcore.score.maps.KINDS`); the first is the default.
    audit_map: the map kind the out-of-fold audit ranks scans by (`uadcore.audit`); None: the default map.
    train: training defaults where the paper's differ from `TrainConfig`'s.
    small, small_preset: model and preset options of a configuration for CPUs (``--size small``).
    stages: the stages it is trained in (a `StagedModel` has more than one); outlier
        removal, re-initialisation and the validation schedules belong to the first.
    closed_form: fitted in closed form on the kept scans (a `ClosedFormModel`), no gradient steps.
    optimizer: ``(parameters, config, stage) -> torch.optim.Optimizer`` of each stage.
    summary: one line for help texts.
    """

    name: str
    cls: type
    preset: str
    maps: tuple[str, ...]
    summary: str = ""
    audit_map: str | None = None
    preset_params: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    small: dict = field(default_factory=dict)
    small_preset: dict = field(default_factory=dict)
    stages: tuple[str, ...] = ("model",)
    closed_form: bool = False
    optimizer: Callable = adam

    def build(self, in_shape, **options) -> torch.nn.Module:
        """The model for inputs of spatial shape ``in_shape``. Options that make no
        model (no channels, a downsampling of 0) or one of more than `MAX_PARAMETERS`
        (a latent of 10^9) are refused before anything is allocated: the model is
        first built on PyTorch's meta device (shapes only, and no draw from the RNG)."""
        try:
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                shapes_only = self.cls(in_shape=tuple(in_shape), **options)
        except Exception as error:  # the options come from a file: any failure is bad input
            raise UADError(f"model {self.name}: bad options {options} ({type(error).__name__}: {error})") from error
        parameters = sum(p.numel() for p in shapes_only.parameters())
        if parameters > MAX_PARAMETERS:
            raise UADError(f"model {self.name}: options {options} make {parameters:.3g} parameters, more than the "
                           f"{MAX_PARAMETERS:.0e} of any model UAD trains")
        return self.cls(in_shape=tuple(in_shape), **options)

    def preset_options(self, options: dict | None = None) -> dict:
        """The preset's options for this model, ``options`` (the run's) over the paper's."""
        return {**self.preset_params, **(options or {})}
