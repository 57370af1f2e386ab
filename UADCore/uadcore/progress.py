"""Progress bars on stderr for long work; silent when stderr is not a terminal or
when the caller asks for quiet (e.g. --json, --events)."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True):
    """A tqdm bar on stderr; use as a context manager and call ``update()``."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=(not enabled) or None,  # None: tqdm turns itself off when not a tty
        dynamic_ncols=True,
        leave=False,
    )
