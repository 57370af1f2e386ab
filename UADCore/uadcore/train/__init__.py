"""The training engine: one loop for every model, with outlier removal."""

from uadcore.train.config import TrainConfig
from uadcore.io.run_files import STOP_FILE
from uadcore.train.engine import train
from uadcore.train.events import Events

__all__ = ["Events", "STOP_FILE", "TrainConfig", "train"]
