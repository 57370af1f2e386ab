"""The evaluation of a trained run on labelled scans it did not train on
(`uadcore.evaluate.run`), and its report (`uadcore.evaluate.results`). The
metrics themselves live apart from any model, in `uadcore.metrics`."""

from uadcore.evaluate.results import EvaluationReport, UnitMetrics, VoxelMetrics

__all__ = ["EvaluationReport", "UnitMetrics", "VoxelMetrics"]
