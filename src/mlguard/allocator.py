"""Allocator settings: Polars' jemalloc is set before Polars loads (`mlguard` imports this
first), glibc's malloc before any thread starts and while a log is read.

All are process-wide, so each gives way to a user's own setting in the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# Polars' allocator (jemalloc) is set by Polars to purge freed pages within a second (dirty
# 500 ms, muzzy 1 s), so every 64 MiB chunk of a log faults its memory in afresh: on 10M lines,
# ~2 s of kernel time. Freed pages kept for 10 s are reused without a fault, and the kernel
# still takes back lazily freed (muzzy) ones when it is short of memory. Polars appends this to
# its own defaults when it loads (the last setting wins).
JEMALLOC_CONF = "muzzy_decay_ms:10000"

# glibc's malloc serves Python's own memory, among it each 64 MiB chunk a log is read in. A
# block that large is mmap()ed and unmapped on free, so every chunk's pages are faulted in and
# zeroed again (578,000 faults and 1.5 s of kernel time on a 10M-line log), and a thread that
# reads gets an arena of its own whose heaps are too small to keep such a block. With one arena,
# and while a log is read no mmap and a high trim threshold, a freed chunk's pages serve the next
# (10M lines: -600,000 faults, -1.4 s of kernel time, -5% wall time; freed chunks held while
# reading: +35 MiB of peak RSS in the throughput benchmark).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_READING = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 512 * 1024 * 1024))
_AFTER_READING = ((_M_MMAP_MAX, 65536), (_M_TRIM_THRESHOLD, 128 * 1024))  # glibc's defaults
_GLIBC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


def _glibc_function(name: str) -> Any:
    """A function of the C library this process runs on, or None where it has none (musl,
    macOS have no `mallopt` settings or `malloc_trim` of glibc's kind)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def _glibc_trim() -> Callable[[], None]:
    trim = _glibc_function("malloc_trim")
    if trim is None:
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

    def release() -> None:
        trim(0)

    return release


# glibc's `malloc_trim(0)`, or a no-op elsewhere: freed heap pages go back to the kernel. glibc
# keeps them mapped otherwise, so a process that allocates and frees hundreds of MB in pieces
# of every size (a daemon's full pass: NumPy, the scorers) creeps up pass after pass
# (BENCHMARKS.md, watch memory). A trim costs well under a millisecond.
release_free_memory = _glibc_trim()


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's mallopt, unless this is not glibc or the user tunes malloc themselves."""
    if sys.platform != "linux" or any(name in os.environ for name in _GLIBC_ENV):
        return None
    if "GLIBC_TUNABLES" in os.environ and "malloc" in os.environ["GLIBC_TUNABLES"]:
        return None
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt  # type: ignore[no-any-return]


def configure() -> None:
    os.environ.setdefault("_RJEM_MALLOC_CONF", JEMALLOC_CONF)
    mallopt = _mallopt()
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, 1)


# glibc keeps freed blocks up to this size in the heap by itself (its mmap threshold rises to
# the largest block freed, up to 32 MiB on 64-bit): smaller chunks need no settings.
_GLIBC_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


@contextmanager
def reusing_large_blocks(block_bytes: int) -> Iterator[None]:
    """While a log is read in chunks of `block_bytes`: freed chunks stay in the heap for the
    next one. After it, glibc's defaults again (a long-running daemon gives memory back)."""
    mallopt = _mallopt() if block_bytes > _GLIBC_MMAP_THRESHOLD_MAX else None
    if mallopt is None:
        yield
        return
    for param, value in _READING:
        mallopt(param, value)
    try:
        yield
    finally:
        for param, value in _AFTER_READING:
            mallopt(param, value)
        # The chunks kept for reuse go back to the kernel once reading is over, rather than
        # stay resident under whatever the process does next.
        release_free_memory()
