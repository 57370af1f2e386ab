"""`uad` keeps freed memory for the next array instead of returning it to the kernel
(uadcore.malloc): checked in fresh processes through glibc's own accounting."""

import json
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, json, sys
import numpy as np
from uadcore.malloc import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
array = np.ones(16 << 20, np.uint8)  # 16 MB, as a few scan-sized arrays
del array
print(json.dumps({"kept": kept, "free_in_heap_mb": libc.mallinfo2().fordblks / 2**20}))
"""


def probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True)
    if "mallinfo2" in done.stderr:
        pytest.skip("the C library is not glibc 2.33 or newer")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_freed_array_stays_in_the_process_for_the_next_one():
    default, kept = probe("default"), probe("keep")
    if kept["kept"] is False:
        pytest.skip("the C library is not glibc")
    assert default["free_in_heap_mb"] < 8  # glibc's default: a 16 MB array goes back to the kernel
    assert kept["free_in_heap_mb"] >= 16
