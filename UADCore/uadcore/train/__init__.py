"""The training engine: one loop for every model, with outlier removal.

Its names load on first use (PEP 562): `uadcore.train.config` (the settings, read
by `uad train --help`) comes without the engine and what it imports."""

import importlib

_WHERE = {"TrainConfig": "uadcore.train.config", "STOP_FILE": "uadcore.io.run_files", "train": "uadcore.train.engine",
          "Events": "uadcore.train.events"}

__all__ = ["Events", "STOP_FILE", "TrainConfig", "train"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'uadcore.train' has no attribute '{name}'")
    return getattr(importlib.import_module(_WHERE[name]), name)
