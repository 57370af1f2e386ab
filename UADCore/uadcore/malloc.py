"""Keeping freed memory in the process for the next array (glibc's malloc).

Preparing and scoring a scan make and drop arrays of a few MB at every step. By
default glibc returns such memory to the kernel when it is freed, so each new array
pays a page fault per 4 KiB page it touches: measured, half the time of resampling
a scan to the model grid and back. The `uad` command raises the two thresholds
that decide this, so up to `TRIM_THRESHOLD` of freed memory is kept for reuse.
"""

from __future__ import annotations

MMAP_THRESHOLD = 32 << 20  # arrays smaller than this come from the heap (glibc's largest allowed value)
TRIM_THRESHOLD = 128 << 20  # free memory kept at the top of the heap before it goes back to the kernel
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


def keep_freed_memory() -> bool:
    """Set both thresholds for this process (inherited by forked workers). False
    where the C library is not glibc (macOS, Windows, musl) and nothing changed."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, TypeError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
