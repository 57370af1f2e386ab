"""Training events as JSON lines on stdout (``--events``), for a GUI following a
background run: start, estimate, excluded, epoch, removed, removal_held, reinit,
stage, early_stop, checkpoint, still_improving, stopped, done, error. The start
and a long run's time estimate are also told to people, one line each on stderr.
Each line is one JSON object with an ``event`` key: strict JSON (a NaN or an
infinity is written as null)."""

from __future__ import annotations

import sys
import time

from uadcore.io.strict_json import strict_json


class Events:
    def __init__(self, json_lines: bool = False, stream=None, progress: bool = True):
        self.json = json_lines
        self.progress = progress and not json_lines  # progress bars on stderr instead
        self.stream = stream or sys.stdout
        self.enabled_here = True  # False on DDP ranks other than 0

    def emit(self, event: str, **fields) -> None:
        if self.progress and self.enabled_here and event in _FOR_PEOPLE:
            print(_FOR_PEOPLE[event](fields), file=sys.stderr, flush=True)
        if not (self.json and self.enabled_here):
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self.stream.write(strict_json(record) + "\n")
        self.stream.flush()


# the events a person at the terminal (or reading a log) is told about in a line of
# their own; the rest shows in the progress bar
_FOR_PEOPLE = {
    "start": lambda f: (f"training {f['model']} ({f['parameters'] / 1e6:.2f} M parameters) on {f['scans']} scans "
                        f"({f['validation']} more held out for validation), batch {f['batch_size']}, epochs "
                        f"{f['first_epoch']}-{f['epochs']}, on {f['device']}" + (f" x {f['ranks']} ranks" if f["ranks"] > 1 else "")),
    "estimate": lambda f: (f"epoch {f['epoch']} took {f['seconds']:.0f} s: the {f['epochs']} epochs will take about "
                           f"{f['hours']:.1f} hours here" + (f"; {f['advice']}" if f.get("advice") else "")),
}
