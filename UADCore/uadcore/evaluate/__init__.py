"""Metrics (apart from models) and, in `uadcore.evaluate.run`, the evaluation of a
trained run. The run module is not imported here: it needs the scorer, which needs
the training package, which needs these metrics."""

from uadcore.evaluate.metrics import best_dice_threshold, dice, sample_metrics, threshold_at_fpr, voxel_metrics

__all__ = ["best_dice_threshold", "dice", "sample_metrics", "threshold_at_fpr", "voxel_metrics"]
