"""Training configuration as plain values: defaults, a JSON file, command-line
flags, in that order of precedence. The whole configuration is stored in every
checkpoint and in RUN/config.json."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

from uadcore.device import DEVICES
from uadcore.errors import UADError
from uadcore.score.calibrate import STATISTICS

PAPER_BATCH = 32
MIN_STEPS_PER_EPOCH = 16
# outlier removal waits until the training loss has settled: until it fell by less
# than this share over the last `outlier_every` epochs (after the start and after
# each re-initialisation); from then on the paper's rule, every `outlier_every` epochs
SETTLED = 0.05
REMOVAL_STARTS = ("settled", "paper")
# what outlier removal compares with gamma x its mean over the kept scans: the paper's
# training loss; a sample score of the reconstruction-error map calibrated on the
# healthy validation scans at that epoch (whole-volume models; see
# uadcore.score.calibrate), which a lesion of 1 % of the brain can decide; or the
# out-of-fold audit's score (`uadcore.score.out_of_fold.normative_scores`), once, before training
REMOVAL_SCORES = ("loss",) + tuple(f"rec-{statistic}" for statistic in STATISTICS) + ("audit",)


# a configuration that trains in minutes on a CPU, with the models' small options
# (``--size small``): what a long run's estimate advises and the Train panel's defaults
CPU_EPOCHS = 40
CPU_REINIT_AT = [15]


def training_batch_size(n_items: int) -> int:
    """The batch size when none is set: the paper's 32, smaller when the training
    set holds too few model inputs for `MIN_STEPS_PER_EPOCH` optimiser steps an epoch
    (the paper's epochs over ~600 scans take ~19 steps; 54 scans at 32 take 2, and
    the model does not learn in the epochs a CPU user can give it)."""
    return max(1, min(PAPER_BATCH, n_items // MIN_STEPS_PER_EPOCH))


# the Python types a setting may have in a config file or a checkpoint, by its annotation, and their names
_TYPES = {"str": ((str,), "text"), "int": ((int,), "a whole number"), "float": ((float, int), "a number"),
          "bool": ((bool,), "true or false"), "dict": ((dict,), "an object of options"), "list": ((list,), "a list"),
          "int | None": ((int, type(None)), "a whole number or null")}


def _shown(value) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


@dataclass
class TrainConfig:
    data: str = ""  # folder or manifest of training scans
    model: str = "ae3d"
    model_params: dict = field(default_factory=dict)  # e.g. {"channels": [8, 16, 32, 64], "latent": 128}
    preset_params: dict = field(default_factory=dict)  # options of the model's preprocessing preset
    epochs: int = 500  # the paper: 100 epochs with two re-initialisations, then 400 more
    batch_size: int | None = None  # None: `training_batch_size` of the training set
    lr: float = 1e-3
    outlier_removal: bool = True
    gamma: float = 1.4  # remove a sample when its loss > gamma x the epoch's mean loss
    outlier_every: int = 5  # epochs between removals
    removal_start: str = "settled"  # settled: once the loss has settled (see SETTLED); paper: from the first removal epoch
    removal_score: str = "loss"  # see REMOVAL_SCORES; "loss" is the paper's rule
    reinit_at: list = field(default_factory=lambda: [50, 100])  # re-initialise weights after these epochs
    plateau_patience: int = 0  # LR x 0.1 after this many epochs without a better validation loss (0: off)
    early_stop_patience: int = 0  # stop after this many epochs without a better validation loss (0: off)
    # the second stage of two-stage models (the MAE's anomaly classifier): AdamW
    classifier_epochs: int = 100
    classifier_lr: float = 1e-3
    classifier_weight_decay: float = 0.05
    checkpoint_every: int = 5
    val_fraction: float = 0.1  # healthy (or unlabelled) scans held out for the score distribution
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # mixed precision on CUDA
    compile: bool = False  # torch.compile the model (CUDA)
    workers: int = 0  # processes to preprocess scans (0: one per core)

    def validate(self, source: str = "configuration") -> "TrainConfig":
        problems = [problem for problem in map(self._type_problem, fields(self)) if problem]
        if problems:  # the checks below compare values: they need the right types first
            raise UADError(f"{source}: " + "; ".join(problems))
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size is not None and self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        if not 0 < self.lr < math.inf:
            problems.append(f"lr must be a number > 0 (got {self.lr})")
        if self.classifier_epochs < 0 or not self.classifier_lr > 0 or self.classifier_weight_decay < 0:
            problems.append("classifier_epochs must be >= 0, classifier_lr > 0 and classifier_weight_decay >= 0")
        if not 1.0 <= self.gamma < math.inf:  # below 1, about half the scans are above gamma x the mean
            problems.append(f"gamma must be a number >= 1 (got {self.gamma}); the paper uses 1.3-1.5")
        if self.plateau_patience < 0 or self.early_stop_patience < 0:
            problems.append("plateau_patience and early_stop_patience must be >= 0")
        if self.outlier_every < 1 or self.checkpoint_every < 1:
            problems.append("outlier_every and checkpoint_every must be >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction must be in [0, 1) (got {self.val_fraction})")
        if self.removal_start not in REMOVAL_STARTS:
            problems.append(f"removal_start must be one of {', '.join(REMOVAL_STARTS)} (got {self.removal_start})")
        if self.removal_score not in REMOVAL_SCORES:
            problems.append(f"removal_score must be one of {', '.join(REMOVAL_SCORES)} (got {self.removal_score})")
        if self.device not in DEVICES:
            problems.append(f"device must be auto, cpu or cuda (got {self.device})")
        if problems:
            raise UADError(f"{source}: " + "; ".join(problems))
        self.reinit_at = sorted(int(e) for e in self.reinit_at)
        return self

    def _type_problem(self, spec) -> str | None:
        """What is wrong with the type of the setting ``spec`` (a dataclass field), if anything."""
        value, (wanted, described) = getattr(self, spec.name), _TYPES[spec.type]
        if isinstance(value, wanted) and not (isinstance(value, bool) and bool not in wanted):  # True is no number to a user
            if wanted[0] is float:
                setattr(self, spec.name, float(value))  # 1 for a float setting is fine
            if spec.name == "reinit_at" and not all(isinstance(e, int) and not isinstance(e, bool) for e in value):
                return f"reinit_at must be a list of whole numbers (got {_shown(value)})"
            return None
        return f"{spec.name} must be {described} (got {_shown(value)})"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "configuration") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UADError(f"{source}: unknown setting(s) {', '.join(unknown)}; settings are {', '.join(sorted(known))}")
        return cls(**values).validate(source)

    @classmethod
    def from_file(cls, path: str) -> dict:
        """The settings a JSON config file gives (validated later, with the flags)."""
        try:
            with open(path, encoding="utf-8") as handle:
                values = json.load(handle)
        except OSError as error:
            raise UADError(f"{path}: cannot read the config file ({error.strerror})") from error
        except json.JSONDecodeError as error:
            raise UADError(f"{path}: is not valid JSON ({error})") from error
        if not isinstance(values, dict):
            raise UADError(f"{path}: a config file holds one JSON object of settings")
        return values


def preset_params(model: str, size: str | None, given: dict | None = None, **brain_options: str | None) -> dict:
    """The preset options of ``model`` that --size, --skull-strip and --registration
    (``brain_options``: skull_strip, registration; None where not given) ask for, over
    ``given`` (a --config file's): one decision for `uad train` and `uad prepare`,
    so that a prepared cache is the one training reads."""
    from uadcore.models import MODELS
    from uadcore.preprocess import PRESETS

    params = dict(given or {})
    if size == "small":
        params = {**MODELS[model].small_preset, **params}
    for name, value in brain_options.items():
        if value is None:
            continue
        if name not in PRESETS[MODELS[model].preset].defaults:
            flag = "--" + name.replace("_", "-")
            raise UADError(f"{flag}: model {model} does not prepare brain scans (preset {MODELS[model].preset})")
        params[name] = value
    return params
