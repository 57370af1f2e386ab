"""What the panels do, as plain Python on an MRML scene passed in (the SlicerNNUnet
pattern: the widget receives its logic; tests drive the logic without the GUI).

Training and evaluation run as background `Job`s of the `uad` command; an
anomaly map of a loaded volume is computed in this process (one scan: seconds).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

from SlicerUADLib.jobs import Job
from SlicerUADLib.overlay import add_map_volume, color_legend, jump_to, peak_ras, show_map, show_outline
from SlicerUADLib.scene import scan_from_node
from uadcore.io.run_files import RunFiles
from uadcore.models import MODELS
from uadcore.train.config import CPU_EPOCHS, CPU_REINIT_AT, TrainConfig


def models() -> tuple[str, ...]:
    """The models the panels offer: the engine's registry as it is now."""
    return tuple(MODELS)


def map_kinds() -> tuple[str, ...]:
    """Every map kind of any registered model, in the registry's order."""
    return tuple(dict.fromkeys(kind for spec in MODELS.values() for kind in spec.maps))


@dataclass
class TrainSettings:
    """The Train panel's choices; `arguments` turns them into `uad train` flags."""

    data: str = ""
    out: str = ""
    model: str = TrainConfig.model
    size: str = "small"  # small (CPU-sized: the engine's CPU configuration) or paper
    epochs: int = CPU_EPOCHS
    outlier_removal: bool = TrainConfig.outlier_removal
    gamma: float = TrainConfig.gamma
    outlier_every: int = TrainConfig.outlier_every
    removal_score: str = TrainConfig.removal_score
    reinit_at: str = ",".join(map(str, CPU_REINIT_AT))  # epochs after which weights are re-initialised, "none" for none
    device: str = TrainConfig.device
    extra: list = field(default_factory=list)  # more `uad train` flags, as given

    def arguments(self) -> list[str]:
        if not self.data or not self.out:
            raise ValueError("choose the training scans (a folder or manifest) and a new output folder")
        args = ["train", "--data", self.data, "--out", self.out, "--model", self.model, "--size", self.size,
                "--epochs", str(self.epochs), "--gamma", f"{self.gamma:g}", "--outlier-every", str(self.outlier_every),
                "--removal-score", self.removal_score,
                "--reinit-at", self.reinit_at or "none", "--device", self.device, "--events"]
        if not self.outlier_removal:
            args.append("--no-outlier-removal")
        return args + list(self.extra)


class UADLogic:
    """The panels' logic on ``scene``. ``load_volume(path) -> node`` loads a scan
    the way the host does (Slicer's reader, or `StandaloneScene.load_volume`);
    ``python`` runs background jobs (PythonSlicer inside Slicer)."""

    def __init__(self, scene, load_volume, python: str | None = None):
        self.scene = scene
        self.load_volume = load_volume
        self.python = python
        self._scorers = {}
        self._observers = []

    # ---- the scene ----------------------------------------------------------------
    def watch_scene(self, on_closed=None, on_nodes_changed=None) -> None:
        """Call ``on_closed()`` after the scene was closed (File > Close Scene: every
        node a panel kept is gone) and ``on_nodes_changed()`` when a node was added
        or removed (the volume lists)."""
        events = []
        if on_closed is not None:
            events.append((self.scene.EndCloseEvent, on_closed))
        if on_nodes_changed is not None:
            events += [(self.scene.NodeAddedEvent, on_nodes_changed), (self.scene.NodeRemovedEvent, on_nodes_changed)]
        for event, callback in events:
            self._observers.append(self.scene.AddObserver(event, lambda caller, name, callback=callback: callback()))

    def stop_watching(self) -> None:
        """Remove the observers (module cleanup, window close)."""
        for tag in self._observers:
            self.scene.RemoveObserver(tag)
        self._observers = []

    # ---- training ---------------------------------------------------------------
    def start_training(self, settings: TrainSettings) -> Job:
        return Job(settings.arguments(), python=self.python, stop_file=RunFiles(os.path.abspath(settings.out)).stop)

    def resume_training(self, run: str) -> Job:
        return Job(["train", "--resume", run, "--events"], python=self.python, stop_file=RunFiles(os.path.abspath(run)).stop)

    # ---- a finished (or stopped) run ---------------------------------------------------
    @staticmethod
    def history(run: str) -> list[dict]:
        return _read_csv(RunFiles(run).history)

    # ---- reviewing a training set ------------------------------------------------------
    @staticmethod
    def review(folder: str) -> list[dict]:
        """The rows of a review of a run or an audit folder (`uadcore.review`), ranked."""
        from uadcore.review import load_review

        return load_review(folder)

    @staticmethod
    def export_review(folder: str, rows: list[dict], manifest: str) -> tuple[str, str]:
        """The curated manifest and the decisions beside it (the file dialog has asked
        about replacing an existing file; an input is never replaced)."""
        from uadcore.review import export

        return export(folder, rows, manifest, force=True)

    def start_audit(self, data: str, out: str) -> Job:
        """`uad audit DATA --out OUT --maps` in the background (normative, 5 folds: a minute for 100 scans)."""
        return Job(["audit", data, "--out", out, "--maps", "--json"], python=self.python)

    def show_map_file(self, volume_node, map_path: str, opacity: float = 0.5, threshold: float | None = None) -> dict:
        """A map written on ``volume_node``'s grid (an audit's, `uad score --out`'s)
        added and overlaid (transparent below ``threshold``), every slice view moved
        to its peak."""
        from uadcore.io import read_scan

        map_node = add_map_volume(self.scene, volume_node, read_scan(map_path).array, f"{volume_node.GetName()} audit map")
        _overlay(self.scene, map_node, volume_node, opacity, threshold, calibrated=True)  # audit maps are calibrated on the set
        return {"map_node": map_node}

    def show_mask_outline(self, volume_node, mask_path: str):
        """A ground-truth lesion mask of ``volume_node`` (a file on its grid: checked
        as `uad evaluate` checks masks) drawn as an outline over the map."""
        from uadcore.io import read_mask

        mask = read_mask(mask_path, scan_from_node(volume_node))
        return show_outline(self.scene, volume_node, mask, f"{volume_node.GetName()} lesion mask")

    def scorer(self, run: str, raw: bool = False, statistic: str | None = None):
        from uadcore.score.scorer import Scorer

        key = (os.path.abspath(run), raw, statistic)
        if key not in self._scorers:
            self._scorers[key] = Scorer(key[0], raw=raw, statistic=statistic)
        return self._scorers[key]

    # ---- anomaly maps --------------------------------------------------------------
    def compute_map(self, volume_node, run: str, kind: str | None = None, opacity: float = 0.5, fpr: str = "0.05",
                    raw: bool = False, statistic: str | None = None) -> dict:
        """Score the loaded ``volume_node`` with ``run``; add its map (in the volume's
        geometry; calibrated on healthy scans unless ``raw``) and overlay it,
        transparent below the healthy-data threshold at false-positive rate ``fpr``
        when the run stored one. ``statistic``: the sample score (default: the
        run's). Returns the map node, score, which map and score, percentile against
        healthy scans and the thresholds."""
        scorer = self.scorer(run, raw, statistic)
        kind = kind or scorer.kinds[0]
        result = scorer.score(scan_from_node(volume_node), kind=kind)
        name = f"{volume_node.GetName()} {kind} map"
        map_node = add_map_volume(self.scene, volume_node, result.scan_map(), name)
        thresholds = scorer.thresholds.get(kind, {})
        _overlay(self.scene, map_node, volume_node, opacity, thresholds.get(fpr), result.calibrated)
        return {"map_node": map_node, "kind": kind, "score": result.score, "sample_score": result.statistic,
                "calibrated": result.calibrated, "percentile": scorer.percentile(result.score, kind),
                "reference_scans": scorer.reference_scans(kind), "thresholds": thresholds, "sample_scores": result.sample_scores}

    def start_map(self, volume_node, run: str, kind: str | None = None, raw: bool = False,
                  statistic: str | None = None) -> "MapJob":
        """`compute_map` in a background job (`uad score`), so preparing the scan
        (skull stripping, N4, registration: tens of seconds on a CPU) never freezes
        the GUI. The volume's voxels go to the job as a NIfTI in a folder of its own
        (the volume need not come from a file); `finish_map` adds the map."""
        import tempfile

        from uadcore.io import write_nifti

        folder = tempfile.mkdtemp(prefix="uad-map-")
        scan = scan_from_node(volume_node)
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in volume_node.GetName()) or "volume"
        # the scan and its map in folders of their own: UAD never writes beside an input
        scan_path = write_nifti(scan.array, scan.grid, os.path.join(folder, "scan", f"{name}.nii.gz"))
        out = os.path.join(folder, "map", f"{name}_map.nii.gz")
        os.makedirs(os.path.dirname(out))
        from uadcore.pretrained import is_pretrained

        args = ["score", run if is_pretrained(run) else os.path.abspath(run), scan_path, "--out", out, "--json"]
        args += ["--map", kind] if kind else []
        args += ["--raw"] if raw else []
        args += ["--score", statistic] if statistic else []
        return MapJob(Job(args, python=self.python), volume_node, out, folder)

    def finish_map(self, map_job: "MapJob", opacity: float = 0.5, fpr: str = "0.05") -> dict:
        """The map of a finished `start_map` job added in the volume's geometry and
        overlaid as `compute_map` does; the job's temporary folder is removed."""
        import shutil

        from uadcore.io import read_scan

        payload = next((e for e in map_job.job.poll() if "score" in e and "map" in e), None)
        try:
            if payload is None:
                raise RuntimeError(map_job.job.error_message() or "the scoring job printed no result")
            volume_node = map_job.volume_node
            map_node = add_map_volume(self.scene, volume_node, read_scan(map_job.out).array,
                                      f"{volume_node.GetName()} {payload['map']} map")
        finally:
            shutil.rmtree(map_job.folder, ignore_errors=True)
        thresholds = payload.get("thresholds_at_fpr", {})
        _overlay(self.scene, map_node, volume_node, opacity, thresholds.get(fpr), payload["calibrated"])
        return {"map_node": map_node, "kind": payload["map"], "score": payload["score"], "sample_score": payload["sample_score"],
                "calibrated": payload["calibrated"], "percentile": payload["percentile_vs_healthy"],
                "reference_scans": payload["healthy_reference_scans"], "thresholds": thresholds, "sample_scores": payload["sample_scores"]}

    def load_with_map(self, scan_path: str, run: str, kind: str | None = None) -> dict:
        """Load a scan (e.g. a flagged training scan) and overlay its map."""
        node = self.load_volume(scan_path)
        return {"volume_node": node, **self.compute_map(node, run, kind)}

    # ---- evaluation ------------------------------------------------------------------
    def start_evaluation(self, run: str, manifest: str, kind: str = "all") -> Job:
        return Job(["evaluate", run, "--data", manifest, "--map", kind, "--json"], python=self.python)


@dataclass
class MapJob:
    """A background map computation: the job, the volume it scores, where the map
    will be, and the temporary folder holding both files."""

    job: Job
    volume_node: object
    out: str
    folder: str

    @property
    def running(self) -> bool:
        return self.job.running

    def cancel(self) -> None:
        """Cancel the job; its folder goes once the job has ended (in a thread: the GUI goes on)."""
        import threading

        self.job.cancel(grace_seconds=2.0)
        threading.Thread(target=self.stop, daemon=True).start()

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop the job, wait for its end, remove its folder."""
        import shutil

        self.job.stop(grace_seconds)
        shutil.rmtree(self.folder, ignore_errors=True)


def _overlay(scene, map_node, volume_node, opacity: float, threshold: float | None, calibrated: bool) -> None:
    """``map_node`` over ``volume_node`` (`show_map`) with its titled colour legend,
    every slice view at the map's peak."""
    show_map(scene, map_node, volume_node, opacity=opacity, threshold=threshold)
    color_legend(scene, map_node, calibrated)
    jump_to(scene, peak_ras(map_node))


def _read_csv(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
