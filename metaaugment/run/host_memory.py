"""Keep freed host memory for reuse, so that CPU training stops page-faulting every step.

Each training step frees its activations and allocates them again at the next step. With
glibc's defaults, blocks above a (dynamic) threshold are mmapped and unmapped, and free
memory at the top of the heap is handed back to the OS, so every step touches hundreds of
megabytes of fresh pages and pays a page fault (and zeroing) per 4 KiB. On our 2-core CPU
that was 22% of a small CNN's plain SGD step and 30% of a MetaAugment step, which
allocates more (perf/host_memory.py), and it made timings swing from run to run.
CUDA's caching allocator keeps freed blocks; `keep_freed_host_memory` asks glibc to do
the same: blocks up to 32 MiB (glibc's largest mmap threshold) come from the heap, and the
heap is never trimmed. The process then holds on to its peak memory, as a GPU training
process does. Blocks above 32 MiB are still mapped and unmapped each time.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_LARGEST_MMAP_THRESHOLD = 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc
_NEVER_TRIM = -1


def keep_freed_host_memory() -> bool:
    """Make glibc keep freed blocks for reuse (see the module docstring). Process-wide;
    the CLI calls it at start, library users may call it once before training on CPU.
    Returns False, changing nothing, where glibc's mallopt is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success
    return mallopt(_M_MMAP_THRESHOLD, _LARGEST_MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) == 1
