"""The training engine: one loop for every model, with outlier removal."""

from uadcore.train.config import TrainConfig
from uadcore.train.engine import STOP_FILE, train
from uadcore.train.events import Events

__all__ = ["Events", "STOP_FILE", "TrainConfig", "train"]
