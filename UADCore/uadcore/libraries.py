"""The one place that decides what the libraries under UAD may print.

A command's stderr carries UAD's own lines: progress, one line per `UADWarning`
(``uad CMD: warning: ...``) and the error. Library chatter (numpy RuntimeWarnings,
torch's and nibabel's warnings and log lines, ITK WARNING blocks) says nothing a
user can act on and hides the line that matters; ``--debug`` shows all of it.
Worker processes follow the main process through `DEBUG_ENV`.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from uadcore.errors import UADWarning

DEBUG_ENV = "UAD_DEBUG"
PREFIX_ENV = "UAD_WARNING_PREFIX"


def quiet_libraries(debug: bool | None = None, prefix: str | None = None) -> None:
    """Route warnings for this process (and, through the environment, its workers):
    UAD's as one line each, prefixed by ``prefix``; the libraries' only with ``debug``
    (None: as the environment says)."""
    debug = os.environ.get(DEBUG_ENV) == "1" if debug is None else debug
    prefix = prefix or os.environ.get(PREFIX_ENV, "uad")
    os.environ[DEBUG_ENV], os.environ[PREFIX_ENV] = ("1" if debug else "0"), prefix
    warnings.simplefilter("default" if debug else "ignore")
    warnings.simplefilter("default", UADWarning)  # inserted first: UAD's always pass

    def show(message, category, filename, lineno, file=None, line=None):
        where = "" if issubclass(category, UADWarning) else f" ({category.__name__}, {filename}:{lineno})"
        print(f"{prefix}: warning: {message}{where}", file=sys.stderr, flush=True)

    warnings.showwarning = show
    logging.getLogger("nibabel").setLevel(logging.DEBUG if debug else logging.CRITICAL)
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(debug)
