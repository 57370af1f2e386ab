"""A trained run, loaded for scoring: scans in, sample scores and anomaly maps out,
the maps on each scan's own grid."""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch

from uadcore.device import amp_dtype, pick_device
from uadcore.errors import UADError
from uadcore.io import Scan, read_scan
from uadcore.models import MODELS, make_model
from uadcore.preprocess import Prepared, preset_from_dict
from uadcore.score.maps import ITEM_KINDS
from uadcore.score.sample import item_outputs, scan_scores
from uadcore.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from uadcore.train.data import stack_inputs


@dataclass
class ScanScore:
    """One scan's result.

    score: the sample score: the mean of the map inside the brain, or for a kind
        that scores each slice or patch, the highest of those scores.
    model_map: float32 map on the model grid (prepared.grid.shape), 0 outside the
        brain; for per-slice or per-patch kinds each input's score painted over it.
    item_scores: for those kinds, the score of each model input (slice or patch).
    prepared: the scan on the model grid (the map's grid and region).
    sample_scores: every sample score the model offers: "rec" (the mean
        reconstruction error inside the brain) and, for a VAE, "kl" and "elbo"
        (means over the scan's items, e.g. its slices).
    """

    path: str
    score: float
    model_map: np.ndarray
    prepared: Prepared
    sample_scores: dict = field(default_factory=dict)
    item_scores: np.ndarray | None = None

    def scan_map(self) -> np.ndarray:
        """The map on the scan's own grid."""
        return self.prepared.to_scan(self.model_map)


SCANS_AT_ONCE = 32  # scans stacked per pass: bounds the memory of inputs and outputs, not the speed
# voxels per scoring batch: on a CPU, batches beyond a few hundred thousand voxels
# run slower per input (measured: one 64x77x66 volume per pass beats 8; all the
# 64x64 slices of a scan in one pass beat one at a time, 7-8x); a GPU wants more
VOXELS_PER_BATCH = {"cpu": 1 << 18, "cuda": 1 << 22}


def auto_batch_size(input_shape, device) -> int:
    """Model inputs per scoring pass for inputs of ``input_shape`` (spatial) on ``device``."""
    voxels = int(np.prod(input_shape))
    return max(1, VOXELS_PER_BATCH.get(torch.device(device).type, 1 << 18) // voxels)


class Scorer:
    """Scores scans with the finished run in ``run_dir``."""

    def __init__(self, run_dir: str, device: str = "auto", batch_size: int | None = None, reference: bool = False):
        self.run_dir = os.path.abspath(run_dir)
        state = load_checkpoint(os.path.join(self.run_dir, CHECKPOINT_NAME))
        if not state.get("done"):
            raise UADError(f"{self.run_dir}: training has not finished (epoch {state['epoch']}); resume it first")
        self.config = state["config"]
        self.preset = preset_from_dict(state["preset"])
        self.device = pick_device(device)
        self.amp_dtype = amp_dtype(self.device, self.config.get("amp", True))
        self.batch_size = batch_size  # model inputs per pass; None: `auto_batch_size`
        self.reference = reference  # the published code's batch-dependent choices (see uadcore.score.maps)
        self.kinds = MODELS[self.config["model"]]["maps"]
        self.validation_scores = {kind: np.asarray(scores, float) for kind, scores in state["validation"].get("scores", {}).items()}
        self.thresholds = state["validation"].get("thresholds", {})  # kind -> {fpr: map value}
        self.trained_on = {entry["path"] for entry in state["train_entries"]}
        self._weights = state["model"]
        self._model = None
        self._sample_scores = weakref.WeakKeyDictionary()  # Prepared -> {sample kind: score}, while the scan is in use

    def _network(self, in_shape) -> torch.nn.Module:
        if self._model is None:
            model = make_model(self.config["model"], in_shape, **self.config["model_params"])
            model.load_state_dict(self._weights)
            self._model = model.to(self.device).eval()
        return self._model

    def score(self, scan: Scan | str, kind: str = "rec") -> ScanScore:
        """Sample score and map of one scan (a path or a `Scan`)."""
        self.check_kind(kind)
        scan = read_scan(scan, need_3d=self.preset.needs_3d) if isinstance(scan, str) else scan
        return self.score_prepared([self.preset.prepare(scan)], [scan.path], kind)[0]

    def score_prepared(self, prepared: list[Prepared], paths: list[str], kind: str = "rec") -> list[ScanScore]:
        """Scores and maps of scans already on the model grid, in batches, at most
        `SCANS_AT_ONCE` scans' inputs and outputs in memory at a time."""
        self.check_kind(kind)
        results = []
        for start in range(0, len(prepared), SCANS_AT_ONCE):
            results += self._score_some(prepared[start : start + SCANS_AT_ONCE], paths[start : start + SCANS_AT_ONCE], kind)
        return results

    def _score_some(self, prepared: list[Prepared], paths: list[str], kind: str) -> list[ScanScore]:
        items, regions, owners = stack_inputs(prepared)
        network = self._network(items.shape[2:])
        batch_size = self.batch_size or auto_batch_size(items.shape[2:], self.device)

        def run(name):
            return item_outputs(network, items, self.device, name, batch_size, self.amp_dtype, self.reference)

        outputs = run(kind)  # the map pass also gives the reconstruction error (and a VAE's terms)
        # every sample score the model offers, whatever the map: from this pass, from an
        # earlier call on the same prepared scans (`uad evaluate --map all`), or a pass of its own
        for name in self.sample_kinds:
            if name not in outputs and not all(name in self._sample_scores.get(one, {}) for one in prepared):
                outputs[name] = run(name)[name]
        per_scan = scan_scores(outputs, regions, owners, len(prepared))
        # the sample scores: the sample kinds and a VAE's terms (kl, elbo), not the mean of a gradient map
        offered = [name for name in per_scan if name in self.sample_kinds or name not in self.kinds]
        results = []
        for index, (one, path) in enumerate(zip(prepared, paths)):
            known = self._sample_scores.setdefault(one, {})
            known.update({name: float(per_scan[name][index]) for name in offered})
            own = outputs[kind][owners == index].numpy()
            model_map = one.assemble(own if kind not in ITEM_KINDS else one.paint(own)) * one.region
            results.append(ScanScore(path, float(per_scan[kind][index]), model_map.astype(np.float32), one, dict(known),
                                     own if kind in ITEM_KINDS else None))
        return results

    @property
    def sample_kinds(self) -> tuple:
        """The kinds whose sample score every result carries: rec, and the
        per-slice or per-patch kinds of the model."""
        return tuple(k for k in self.kinds if k == "rec" or k in ITEM_KINDS)

    def check_kind(self, kind: str) -> None:
        if kind not in self.kinds:
            raise UADError(f"map kind '{kind}' is not available for model {self.config['model']}; kinds: {', '.join(self.kinds)}")

    def percentile(self, score: float, kind: str = "rec") -> float | None:
        """Percentage of the healthy validation scans whose ``kind`` score is below ``score``."""
        reference = self.validation_scores.get(kind)
        if reference is None or len(reference) == 0:
            return None
        return float(100.0 * np.mean(reference < score))
