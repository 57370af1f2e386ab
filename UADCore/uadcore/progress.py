"""Progress on stderr for long work: a tqdm bar on a terminal, and plain lines in a
log (stderr redirected to a file or a pipe), at most one every `LOG_EVERY_S`
seconds (``$UAD_PROGRESS_EVERY`` to change it) plus the last, so work shorter than
that writes nothing; nothing either when the caller asks for quiet (e.g. --json,
--events)."""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

LOG_EVERY_S = 30.0


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True):
    """A progress bar on stderr; use as a context manager and call ``update()``."""
    if enabled and not _is_terminal(sys.stderr):
        return LogProgress(total, desc, unit, every=float(os.environ.get("UAD_PROGRESS_EVERY", LOG_EVERY_S)))
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, dynamic_ncols=True, leave=False)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LogProgress:
    """tqdm's interface (update, set_postfix, total, close) as lines such as
    ``prepare: 17/165 scans (10 %), 2m05s, about 18m left``."""

    def __init__(self, total: int | None, desc: str, unit: str, every: float = LOG_EVERY_S, stream=None):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.stream = stream or sys.stderr
        self.n, self.postfix = 0, ""
        self.started = self.last = time.monotonic()
        self.closed, self.written = False, False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        finished = bool(self.total) and self.n >= self.total
        if now - self.last >= self.every or (finished and self.written):
            self.last, self.written = now, True
            self._line(now)

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{key} {value}" for key, value in values.items())

    def close(self) -> None:
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line(self, now: float) -> None:
        elapsed = now - self.started
        text = f"{self.desc}: {self.n}"
        if self.total:
            text += f"/{self.total} {self.unit}s ({100 * self.n // self.total} %), {_duration(elapsed)}"
            if 0 < self.n < self.total:
                text += f", about {_duration(elapsed / self.n * (self.total - self.n))} left"
        else:
            text += f" {self.unit}s, {_duration(elapsed)}"
        if self.postfix:
            text += f"; {self.postfix}"
        print(text, file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s")
