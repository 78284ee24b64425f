"""Handing freed memory back to the system between the pieces of a long streaming job.

A streaming job's working set is bounded (a bucket, a chunk), but its resident memory need not be:
glibc keeps freed blocks of a few MiB in the heap, where fragmentation lets the heap grow piece by
piece, and Arrow's allocator keeps freed pages for reuse. :func:`release_freed_memory` returns
both; called between pieces it keeps the peak where the working set is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_freed_memory() -> None:
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
