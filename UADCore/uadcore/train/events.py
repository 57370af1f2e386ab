"""Training events as JSON lines on stdout (``--events``), for a GUI following a
background run: start, excluded, epoch, removed, reinit, stage, early_stop,
checkpoint, still_improving, stopped, done, error.
Each line is one JSON object with an ``event`` key."""

from __future__ import annotations

import json
import sys
import time


class Events:
    def __init__(self, json_lines: bool = False, stream=None, progress: bool = True):
        self.json = json_lines
        self.progress = progress and not json_lines  # progress bars on stderr instead
        self.stream = stream or sys.stdout
        self.enabled_here = True  # False on DDP ranks other than 0

    def emit(self, event: str, **fields) -> None:
        if not (self.json and self.enabled_here):
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()
