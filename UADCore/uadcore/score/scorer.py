"""A trained run, loaded for scoring: scans in, sample scores and anomaly maps out,
the maps on each scan's own grid."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np
import torch

from uadcore.device import amp_dtype, pick_device, use_device
from uadcore.errors import UADError
from uadcore.io import Scan, ScanEntry, read_scan
from uadcore import pretrained
from uadcore.io.checkpoint import FinishedRun
from uadcore.io.run_files import RunFiles
from uadcore.models import model_spec
from uadcore.preprocess import Prepared, preset_from_dict
from uadcore.preprocess.dataset import iter_prepared, stack_inputs
from uadcore.score.calibrate import ITEM_STATISTIC, SHARE_FPR, STATISTICS, Calibration
from uadcore.score.calibrate import statistics as map_statistics
from uadcore.score.maps import is_item_kind
from uadcore.score.sample import item_outputs, scan_scores


@dataclass
class ScanScore:
    """One scan's result.

    score: the sample score: ``statistic`` of the map inside the brain (mean, top1,
        share), or for a kind that scores each slice or patch, the highest of those
        scores ("max").
    model_map: float32 map on the model grid (prepared.grid.shape), 0 outside the
        brain, calibrated on healthy scans when ``calibrated``; for per-slice or
        per-patch kinds each input's score painted over it.
    item_scores: for those kinds, the score of each model input (slice or patch).
    prepared: the scan on the model grid (the map's grid and region).
    sample_scores: every sample score the model offers: "rec" (the mean raw
        reconstruction error inside the brain), for a VAE "kl" and "elbo" (means
        over the scan's items, e.g. its slices), and "KIND-STATISTIC" for each
        statistic of each map scored so far (e.g. "rec-top1").
    """

    path: str
    score: float
    model_map: np.ndarray
    prepared: Prepared
    sample_scores: dict = field(default_factory=dict)
    item_scores: np.ndarray | None = None
    statistic: str = "mean"
    calibrated: bool = False

    def scan_map(self) -> np.ndarray:
        """The map on the scan's own grid."""
        return self.prepared.to_scan(self.model_map)


SCANS_AT_ONCE = 32  # scans stacked per pass: bounds the memory of inputs and outputs, not the speed
SCANS_PER_PASS = 8  # scans of a stream scored together: few, so the first results come soon
# voxels per scoring batch: on a CPU, batches beyond a few hundred thousand voxels
# run slower per input (measured: one 64x77x66 volume per pass beats 8; all the
# 64x64 slices of a scan in one pass beat one at a time, 7-8x); a GPU wants more
VOXELS_PER_BATCH = {"cpu": 1 << 18, "cuda": 1 << 22}


def auto_batch_size(input_shape, device) -> int:
    """Model inputs per scoring pass for inputs of ``input_shape`` (spatial) on ``device``."""
    voxels = int(np.prod(input_shape))
    return max(1, VOXELS_PER_BATCH.get(torch.device(device).type, 1 << 18) // voxels)


class Scorer:
    """Scores scans with the finished run in ``run_dir``.

    Voxel maps are calibrated on the run's healthy validation scans where the run
    has a calibration (`uadcore.score.calibrate`), unless ``raw`` or
    ``reference``; ``statistic`` picks the sample score read from the map (default:
    the one the run chose on pseudo-lesions, see `calibrate.choose_statistic`).
    """

    def __init__(self, run_dir: str, device: str = "auto", batch_size: int | None = None, reference: bool = False,
                 raw: bool = False, statistic: str | None = None):
        run = FinishedRun.load(pretrained.run_folder(run_dir))  # "pretrained:NAME": a model shipped in the package
        self.run_dir = run.folder
        self._setup(run.model, run.model_options, run.amp, preset_from_dict(run.preset), device, batch_size, reference, raw,
                    statistic, run.validation, run.calibration)
        self.trained_on = run.trained_on
        self._weights = run.weights

    @classmethod
    def of_model(cls, model: torch.nn.Module, name: str, preset, device, amp: bool = True) -> "Scorer":
        """A scorer of the model ``name`` in memory (training's end): raw maps, no healthy reference."""
        scorer = cls.__new__(cls)
        scorer.run_dir = None
        scorer._setup(name, {}, amp, preset, device, None, False, True, "mean", {}, {})
        scorer.trained_on = set()
        scorer._model = model.eval()
        return scorer

    def _setup(self, model: str, model_options: dict, amp: bool, preset, device, batch_size, reference, raw, statistic,
               validation, calibration) -> None:
        if statistic is not None and statistic not in STATISTICS:
            raise UADError(f"sample score '{statistic}' is not one UAD has; sample scores are {', '.join(STATISTICS)}")
        self.spec = model_spec(model)
        self.model_options = model_options
        self.preset = preset
        self.device = pick_device(device)
        use_device(self.device)
        self.amp_dtype = amp_dtype(self.device, amp)
        self.batch_size = batch_size  # model inputs per pass; None: `auto_batch_size`
        self.reference = reference  # the published code's batch-dependent choices (see uadcore.score.maps)
        self.kinds = self.spec.maps
        self.calibrations = {} if raw or reference else {kind: Calibration.from_state(c) for kind, c in calibration.items()}
        healthy = validation.get("maps") or _older_reference(validation)
        # per kind: the statistic of the sample score, and the healthy reference of
        # the map as this scorer makes it (calibrated or raw)
        self.statistics, self.thresholds, self.validation_scores = {}, {}, {}
        for kind, entry in healthy.items():
            mode = entry.get("calibrated") if kind in self.calibrations else entry.get("raw")
            chosen = ITEM_STATISTIC if is_item_kind(kind) else (statistic or entry.get("sample_score", "mean"))
            self.statistics[kind] = chosen
            self.thresholds[kind] = (mode or {}).get("thresholds", {})
            if (mode or {}).get("scores", {}).get(chosen) is not None:
                self.validation_scores[kind] = np.asarray(mode["scores"][chosen], float)
        self._default_statistic = statistic or "mean"
        self._model = None
        self._sample_scores = weakref.WeakKeyDictionary()  # Prepared -> {sample kind: score}, while the scan is in use

    def _network(self, in_shape) -> torch.nn.Module:
        if self._model is None:
            try:
                model = self.spec.build(in_shape, **self.model_options)
            except UADError as error:
                raise UADError(f"{RunFiles(self.run_dir or '').checkpoint}: {error}") from error
            try:
                model.load_state_dict(self._weights)
            except (RuntimeError, KeyError, TypeError) as error:  # torch lists every mismatched tensor: say it in one line
                raise UADError(f"{RunFiles(self.run_dir or '').checkpoint}: its weights do not fit model "
                               f"{self.spec.name} with options {self.model_options}; the checkpoint is damaged "
                               "or was edited") from error
            self._model = model.to(self.device).eval()
        return self._model

    def calibrated(self, kind: str) -> bool:
        """True when ``kind`` maps come calibrated on the healthy validation scans."""
        return kind in self.calibrations

    def statistic(self, kind: str) -> str:
        """The sample score of ``kind``: a statistic of the map, or for a kind that
        scores each slice or patch, the highest of those scores."""
        return ITEM_STATISTIC if is_item_kind(kind) else self.statistics.get(kind, self._default_statistic)

    def score(self, scan: Scan | str, kind: str = "rec") -> ScanScore:
        """Sample score and map of one scan (a path or a `Scan`)."""
        self.check_kind(kind)
        scan = read_scan(scan, need_3d=self.preset.needs_3d) if isinstance(scan, str) else scan
        return self.score_prepared([self.preset.prepare(scan)], [scan.path], kind)[0]

    def score_many(self, scans: list[ScanEntry | str], kind: str = "rec", workers: int | None = None, progress: bool = True,
                   masks: bool = False, scans_per_pass: int = SCANS_PER_PASS):
        """(entry, its `ScanScore` or the one-line message of its bad input, its lesion
        mask on the model grid or None) of every scan, in order, one at a time:
        worker processes read and prepare the next scans while this process scores
        the ones ready (`iter_prepared`), a few (``scans_per_pass``) at a time.
        Lesion masks are brought along only with ``masks`` (evaluation); without,
        the prepared scans are not remembered either, so a stream of thousands
        holds only those in flight."""
        self.check_kind(kind)
        entries = [ScanEntry(s) if isinstance(s, str) else s for s in scans]
        if not masks:  # as training reads them: the scan and its brain mask
            entries = [ScanEntry(e.path, brain=e.brain) for e in entries]
        ready = []
        for entry, result in iter_prepared(entries, self.preset, workers, progress, remember=masks):
            ready.append((entry, result))
            if len(ready) == scans_per_pass:
                yield from self._score_ready(ready, kind)
                ready = []
        yield from self._score_ready(ready, kind)

    def _score_ready(self, ready: list[tuple[ScanEntry, object]], kind: str):
        good = [(entry.path, result[0]) for entry, result in ready if not isinstance(result, str)]
        scored = iter(self.score_prepared([p for _, p in good], [path for path, _ in good], kind) if good else [])
        for entry, result in ready:
            yield (entry, result, None) if isinstance(result, str) else (entry, next(scored), result[1])

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
            if name not in outputs and not all(name in self._sample_scores.get(scan, {}) for scan in prepared):
                outputs[name] = run(name)[name]
        per_scan = scan_scores(outputs, regions, owners, len(prepared))
        # the sample scores: the sample kinds and a VAE's terms (kl, elbo), not the mean of a gradient map
        model_sample_kinds = [name for name in per_scan if name in self.sample_kinds or name not in self.kinds]
        statistic = self.statistic(kind)
        results = []
        for index, (scan, path) in enumerate(zip(prepared, paths)):
            scores = self._sample_scores.setdefault(scan, {})
            scores.update({name: float(per_scan[name][index]) for name in model_sample_kinds})
            scan_outputs = outputs[kind][owners == index].numpy()
            if is_item_kind(kind):
                model_map = scan.assemble(scan.paint(scan_outputs)) * scan.region
                score = float(per_scan[kind][index])
            else:
                model_map = scan.assemble(scan_outputs) * scan.region
                if kind in self.calibrations:
                    model_map = self.calibrations[kind].apply(model_map, scan.region)
                share_at = self.thresholds.get(kind, {}).get(str(SHARE_FPR))
                for name, value in map_statistics(model_map, scan.seen_region(), share_at).items():
                    scores[f"{kind}-{name}"] = value
                if f"{kind}-{statistic}" not in scores:
                    raise UADError(f"{self.run_dir}: sample score '{statistic}' needs the healthy voxel threshold of "
                                   "validation scans, and this run has none (trained with --val-fraction 0)")
                score = scores[f"{kind}-{statistic}"]
            results.append(ScanScore(path, score, model_map.astype(np.float32), scan, dict(scores),
                                     scan_outputs if is_item_kind(kind) else None, statistic, kind in self.calibrations))
        return results

    @property
    def sample_kinds(self) -> tuple:
        """The kinds whose sample score every result carries: rec, and the
        per-slice or per-patch kinds of the model."""
        return tuple(k for k in self.kinds if k == "rec" or is_item_kind(k))

    def check_kind(self, kind: str) -> None:
        if kind not in self.kinds:
            raise UADError(f"map kind '{kind}' is not available for model {self.spec.name}; kinds: {', '.join(self.kinds)}")

    def reference_scans(self, kind: str = "rec") -> int:
        """How many healthy validation scans the percentiles of ``kind`` rank against."""
        return len(self.validation_scores.get(kind, []))

    def percentile(self, score: float, kind: str = "rec") -> float | None:
        """Percentage of the healthy validation scans whose ``kind`` sample score (as
        this scorer computes it) is below ``score``."""
        reference = self.validation_scores.get(kind)
        if reference is None or len(reference) == 0:
            return None
        return float(100.0 * np.mean(reference < score))


def _older_reference(validation: dict) -> dict:
    """The healthy reference of a run trained before calibration: raw maps, the
    mean as sample score."""
    return {kind: {"raw": {"scores": {ITEM_STATISTIC if is_item_kind(kind) else "mean": scores},
                           "thresholds": validation.get("thresholds", {}).get(kind, {})}}
            for kind, scores in validation.get("scores", {}).items()}
