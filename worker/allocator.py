"""glibc malloc tuned for a process that allocates the same large tensors at every step.

By default glibc serves large blocks with fresh mmap()s and returns freed memory to the
kernel, so every denoising step page-faults its temporaries in again: measured here as
seconds of kernel time per full-size image (bench/stack_overhead.py). Keeping blocks below
``MMAP_THRESHOLD`` on the heap and never trimming it makes the worker reuse its memory; its
resident size then stays at its peak, which is what a GPU worker's host process does anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's own upper bound for this setting on 64-bit
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: in effect, never trim


def keep_freed_memory() -> bool:
    """Set the thresholds for this process and the pool children it forks; False off glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.info("not glibc: malloc left at its defaults")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
