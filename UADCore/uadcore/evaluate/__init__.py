"""Metrics (apart from models) and the evaluation of a trained run."""

from uadcore.evaluate.metrics import best_dice_threshold, dice, sample_metrics, threshold_at_fpr, voxel_metrics
from uadcore.evaluate.run import evaluate

__all__ = ["best_dice_threshold", "dice", "evaluate", "sample_metrics", "threshold_at_fpr", "voxel_metrics"]
