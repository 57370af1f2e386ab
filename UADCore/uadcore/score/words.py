"""How a score is said, in the CLI's score line and the Anomaly map panel alike:
which map it came from (calibrated, or raw and so not comparable between
voxels), and how firm its percentile is (against how many healthy scans)."""

from __future__ import annotations

FEW_REFERENCE_SCANS = 10  # a percentile or threshold from fewer healthy scans is rough, and said to be


def map_words(kind: str, calibrated: bool) -> str:
    """"calibrated rec map" or "raw rec map (not calibrated)"."""
    return f"calibrated {kind} map" if calibrated else f"raw {kind} map (not calibrated)"


def percentile_words(percentile: float | None, reference_scans: int) -> str:
    """", above 80 % of the 12 healthy validation scans", said as rough under
    `FEW_REFERENCE_SCANS` of them; "" without a healthy reference."""
    if percentile is None or not reference_scans:
        return ""
    rough = f" (rough: fewer than {FEW_REFERENCE_SCANS})" if reference_scans < FEW_REFERENCE_SCANS else ""
    scans = "scan" if reference_scans == 1 else "scans"
    return f", above {percentile:.0f} % of the {reference_scans} healthy validation {scans}{rough}"


def score_words(score: float, sample_score: str, kind: str, calibrated: bool, percentile: float | None,
                reference_scans: int) -> str:
    """The one line that reports a scan's score, e.g. "score 2.31000 (top1 of the
    calibrated rec map), above 97 % of the 12 healthy validation scans"."""
    return (f"score {score:.5f} ({sample_score} of the {map_words(kind, calibrated)})"
            + percentile_words(percentile, reference_scans))


STATISTIC_WORDS = {"mean": "mean", "top1": "mean of the top 1 %", "share": "share above the healthy 1 % threshold"}


def sample_score_words(name: str, calibrated: bool) -> str:
    """What a sample score of `uad evaluate` is, for a table: "rec-top1" -> "mean of
    the top 1 % of the calibrated rec map"; "rec" (the paper's) -> its mean raw
    reconstruction error; a model's own terms (kl, elbo, per-slice kinds) by name."""
    kind, _, statistic = name.rpartition("-")
    if kind and statistic in STATISTIC_WORDS:
        return f"{STATISTIC_WORDS[statistic]} of the {'calibrated' if calibrated else 'raw'} {kind} map"
    if name == "rec":
        return "the paper's: mean reconstruction error of the raw map"
    return name
