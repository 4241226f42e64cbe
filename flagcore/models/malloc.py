"""Keep the memory a batch frees for the next batch, instead of handing it back to the kernel.

Each inference batch allocates and frees the same activations (for the `full` preset's int8
batches of 16 windows, (1024, 3072) float32 blocks of 12.6 MB, on two worker threads). glibc's
malloc serves blocks of that size with ``mmap`` or from per-thread heaps that it trims after each
free, so every batch touches fresh pages: on a 2-core AMD EPYC the `full` preset's int8 evaluate
of 9,073 bars spent a quarter of its workers' CPU time in the kernel (36 windows/s), and 1,000
int8 windows took 0.8-4.3 million minor page faults. Kept in the process, the same blocks are
reused: 9,000-140,000 faults per 1,000 windows and 44-49 windows/s in the evaluate, the same bits
(benchmarks/evaluate_profile.py records the faults and the kernel's time).

Thresholds alone left the worker threads' own arenas: glibc gives each thread an arena of 64 MB
heaps and unmaps a heap as soon as it is empty, whatever the trim threshold, and a batch's
activations come close to 64 MB, so some runs still spilled into fresh heaps batch after batch
(0.5-3.2 million faults per 800 int8 windows, up to a quarter of the time). One arena for every
thread (``ARENA_MAX``) keeps all of it in the main heap: 100,000-150,000 faults per 800 windows in
every run. It applies to threads that take their first arena after the call: ``flagcore``'s command
makes the call before anything starts a thread; a process that ran threads before keeps their
arenas.

The settings are process-wide and last for the process; they do not change any result. The cost
is memory that stays with the process after inference: at most ``TRIM_THRESHOLD`` free at the top
of the heap. Other C libraries (musl, macOS) are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

# mallopt's parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# blocks under this come from the heap and are reused; glibc's largest allowed value (32 MB on a
# 64-bit machine), above the `full` preset's largest int8 activation (12.6 MB)
MMAP_THRESHOLD = 32 << 20
# free memory the heap keeps at its top before it returns any
TRIM_THRESHOLD = 128 << 20
# arenas at most: the main one, shared by every thread (sharing it left the two inference workers'
# user time within the runs' spread, 3 runs each)
ARENA_MAX = 1


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed blocks under 32 MB for reuse in one heap; once per process.

    Returns True where the settings applied (Linux with glibc), False elsewhere.

    Examples
    --------
    >>> keep_freed_memory() == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    True
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # mallopt returns 1 on success; a fixed mmap threshold also stops glibc's own adjustments
    return (
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        and libc.mallopt(M_ARENA_MAX, ARENA_MAX) == 1
    )
