"""Process memory: glibc's allocator tuned for a long run that allocates and frees batch after batch.

Both helpers are no-ops where the C library is not glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc

M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release_memory() -> None:
    """Hand the heap a committed batch freed back to the system (glibc keeps it otherwise, and the
    next batch's allocations fragment it: +100-250 MB a batch on a 400 MB file)."""
    gc.collect()
    with contextlib.suppress(AttributeError):
        if (libc := _libc()) is not None:
            libc.malloc_trim(0)


def fewer_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (default 8 per core): each thread that frees a batch's memory keeps
    its own fragmented heap otherwise (peak -80 to -120 MB on a 414 MB file)."""
    with contextlib.suppress(AttributeError):
        if (libc := _libc()) is not None:
            libc.mallopt(M_ARENA_MAX, arenas)
