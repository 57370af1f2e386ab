"""The evaluation report as a type: what `evaluate` measured for one map kind.

`EvaluationReport.to_dict` is the JSON of ``uad evaluate --json`` (flat, as it
always was): a measure that could not be taken is left out (no lesion masks: no
voxel metrics; a volume model: no slice or patch metrics), one that came out
undefined is null. `EvaluationReport.from_dict` reads that JSON back (the Slicer
panels read it from a background job).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class VoxelMetrics:
    """Voxel-level detection and segmentation, inside the brain, over the scans whose
    voxel truth is known (see `uadcore.evaluate.run`)."""

    voxel_auroc: float | None
    voxel_ap: float | None
    best_dice: float | None
    best_dice_threshold: float | None
    dice: float | None
    dice_threshold: float | None
    dice_missing: str | None = None  # why there is no `dice`, when there is none
    healthy_fpr: float | None = None  # the healthy false-positive rate of the stored threshold below
    healthy_fpr_threshold: float | None = None
    dice_at_healthy_fpr: float | None = None
    # the same over the scans with lesion voxels alone (the literature's pool: healthy scans' voxels add negatives
    # and lower AP): {"scans", "voxel_auroc", "voxel_ap", "best_dice"}; None when every scan has lesion voxels
    lesion_scans_only: dict | None = None

    def to_dict(self) -> dict:
        optional = ("dice_missing", "healthy_fpr", "healthy_fpr_threshold", "dice_at_healthy_fpr", "lesion_scans_only")
        return {k: v for k, v in asdict(self).items() if v is not None or k not in optional}


@dataclass
class UnitMetrics:
    """Slice- or patch-level AUROC and AP (``kind``: "slice" or "patch") over ``n``
    units, ``positive`` of them covered by lesion beyond ``overlap``."""

    kind: str
    n: int
    positive: int
    overlap: float
    auroc: float | None
    ap: float | None

    def to_dict(self) -> dict:
        return {f"{self.kind}_auroc": self.auroc, f"{self.kind}_ap": self.ap,
                "units": {"kind": self.kind, "n": self.n, "positive": self.positive, "overlap": self.overlap}}


@dataclass
class EvaluationReport:
    """One map kind's metrics on a labelled set of scans the run did not train on."""

    n: int  # scans evaluated
    map: str
    calibrated: bool
    sample_score: str  # the statistic of the map that is each scan's score
    healthy: int
    unhealthy: int
    postprocess: dict | None  # the post-processing applied (`POSTPROCESS`), None: none
    sample_auroc: float | None
    sample_ap: float | None
    sample_scores: dict  # {the model's other sample scores: {"auroc", "ap"}}
    peak_in_lesion: float | None  # share of lesion scans whose map peaks in the lesion
    skipped: list[dict] = field(default_factory=list)  # scans that could not be prepared: path, label, reason
    scans: list[dict] = field(default_factory=list)  # per scan: path, label, score, score_NAME for each sample score
    voxel: VoxelMetrics | None = None  # None: no scan with known voxel truth and a lesion
    units: UnitMetrics | None = None  # None: a whole-volume model

    def to_dict(self) -> dict:
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("voxel", "units")}
        for section in (self.voxel, self.units):
            if section is not None:
                record.update(section.to_dict())
        return record

    def metric(self, name: str):
        """A value of the report by its JSON name (``voxel_auroc``, ``slice_auroc``, ...), None where not measured."""
        return self.to_dict().get(name)

    @classmethod
    def from_dict(cls, record: dict) -> "EvaluationReport":
        own = {f.name for f in fields(cls)} - {"voxel", "units"}
        report = cls(**{k: v for k, v in record.items() if k in own})
        if "voxel_auroc" in record:
            report.voxel = VoxelMetrics(**{f.name: record.get(f.name) for f in fields(VoxelMetrics)})
        if "units" in record:
            unit = record["units"]
            report.units = UnitMetrics(unit["kind"], unit["n"], unit["positive"], unit["overlap"],
                                       record.get(f"{unit['kind']}_auroc"), record.get(f"{unit['kind']}_ap"))
        return report
