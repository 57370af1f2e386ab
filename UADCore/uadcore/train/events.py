"""Training events: one dataclass per kind (`EVENTS`), the schema the engine emits
and the Slicer panels read. With ``--events`` each is a JSON line on stdout: its
fields and ``event`` (its name) and ``time``, strict JSON (a NaN or an infinity is
written as null); optional fields that are not set are left out. The start and a
long run's time estimate are also told to people, one line each on stderr."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, fields
from typing import ClassVar

from uadcore.io.strict_json import strict_json


@dataclass
class Event:
    name: ClassVar[str]
    optional: ClassVar[tuple[str, ...]] = ()  # fields left out of the record when None

    def to_record(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {"event": self.name, **{k: v for k, v in values.items() if v is not None or k not in self.optional}}


@dataclass
class Start(Event):
    name = "start"
    run: str
    model: str
    scans: int
    validation: int
    epochs: int
    first_epoch: int
    device: str
    ranks: int
    batch_size: int
    parameters: int


@dataclass
class Estimate(Event):
    """After the first epoch of a long run: what all of it will take here."""
    name = "estimate"
    epoch: int
    seconds: float
    epochs: int
    hours: float
    advice: str | None


@dataclass
class Excluded(Event):
    """A scan that could not be prepared, left out of the run."""
    name = "excluded"
    path: str
    reason: str


@dataclass
class Epoch(Event):
    name = "epoch"
    optional = ("removal", "stage", "val_loss", "lr")
    epoch: int
    loss: float
    kept: int
    removed: int
    seconds: float
    epochs: int
    removal: str | None = None  # at a removal epoch: "on", or "waiting" for the loss to settle
    stage: str | None = None  # of a model trained in stages
    val_loss: float | None = None
    lr: float | None = None


@dataclass
class Removed(Event):
    name = "removed"
    epoch: int
    threshold: float
    samples: list  # the audit rows of the removed scans (outliers.csv)


@dataclass
class RemovalHeld(Event):
    """Removal would have kept too few scans and removed none."""
    name = "removal_held"
    epoch: int
    would_keep: int
    scans: int


@dataclass
class Reinit(Event):
    name = "reinit"
    epoch: int


@dataclass
class Stage(Event):
    name = "stage"
    epoch: int
    stage: str
    epochs: int


@dataclass
class EarlyStop(Event):
    name = "early_stop"
    epoch: int
    best_val_loss: float


@dataclass
class Checkpoint(Event):
    name = "checkpoint"
    epoch: int
    path: str


@dataclass
class StillImproving(Event):
    """The validation loss was still falling at the end: train longer."""
    name = "still_improving"
    epoch: int
    fell_percent: float


@dataclass
class Stopped(Event):
    """The run stopped; what it trained up to ``epoch`` is in its checkpoint."""
    name = "stopped"
    optional = ("epoch", "resume", "signal", "at_once")
    epoch: int | None = None  # the last finished epoch (0: nothing trained)
    resume: str | None = None  # the command that continues the run; None: nothing stays to resume
    signal: str | None = None  # SIGTERM, SIGINT or STOP (the file)
    at_once: bool | None = None  # a second Ctrl-C: out without waiting for the step


@dataclass
class Done(Event):
    """The run's summary (what `train` returns)."""
    name = "done"
    run: str
    epochs: int
    scans: int
    kept: int
    batch_size: int
    still_improving: bool
    validation: int
    removed: int
    removed_unhealthy: int
    excluded: int
    final_loss: float | None
    device: str | None = None  # where it trained: "cuda:0", "cpu"


@dataclass
class Error(Event):
    name = "error"
    message: str
    kind: str  # "bad input", or the exception's type


EVENTS: dict[str, type[Event]] = {kind.name: kind for kind in (
    Start, Estimate, Excluded, Epoch, Removed, RemovalHeld, Reinit, Stage, EarlyStop, Checkpoint, StillImproving, Stopped,
    Done, Error)}


def parse_event(record: dict) -> Event | None:
    """The event of a JSON record (`Event.to_record`); None for a record of no known kind."""
    kind = EVENTS.get(record.get("event"))
    if kind is None:
        return None
    return kind(**{f.name: record.get(f.name) for f in fields(kind)})


class Events:
    def __init__(self, json_lines: bool = False, stream=None, progress: bool = True):
        self.json = json_lines
        self.progress = progress and not json_lines  # progress bars on stderr instead
        self.stream = stream or sys.stdout
        self.enabled_here = True  # False on DDP ranks other than 0

    def emit(self, event: str, **values) -> None:
        """Emit the event ``event`` (a name in `EVENTS`) with its fields; a missing
        or unknown field is a TypeError: the schema is the dataclass."""
        typed = EVENTS[event](**values)
        if self.progress and self.enabled_here and type(typed) in _FOR_PEOPLE:
            print(_FOR_PEOPLE[type(typed)](typed), file=sys.stderr, flush=True)
        if not (self.json and self.enabled_here):
            return
        self.stream.write(strict_json({**typed.to_record(), "time": round(time.time(), 3)}) + "\n")
        self.stream.flush()


# the events a person at the terminal (or reading a log) is told about in a line of
# their own; the rest shows in the progress bar
_FOR_PEOPLE = {
    Start: lambda e: (f"training {e.model} ({e.parameters / 1e6:.2f} M parameters) on {e.scans} scans "
                      f"({e.validation} more held out for validation), batch {e.batch_size}, epochs "
                      f"{e.first_epoch}-{e.epochs}, on {e.device}" + (f" x {e.ranks} ranks" if e.ranks > 1 else "")),
    Estimate: lambda e: (f"epoch {e.epoch} took {e.seconds:.0f} s: the {e.epochs} epochs will take about "
                         f"{e.hours:.1f} hours here" + (f"; {e.advice}" if e.advice else "")),
}
