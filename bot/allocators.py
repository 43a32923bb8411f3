"""Allocator settings: give freed memory back to the OS, so a command's peak RSS is its data.

A backtest reads a few parquet files, converts them, and drops the intermediates. Two allocator
defaults keep those freed megabytes resident (measured on a year of 5m bars: ~55 MiB of a 235 MiB
peak):

* pyarrow's default pool (mimalloc or jemalloc) caches freed segments for reuse. pyarrow picks its
  pool when it loads, from ``ARROW_DEFAULT_MEMORY_POOL``: :func:`use_system_pool_for_arrow` sets it
  to ``system`` (unless the user set it) before anything imports pyarrow. pyarrow only reads and
  writes files here, where the pool's speed does not show.
* glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so later large
  arrays come from the heap and stay mapped after ``free``. :func:`return_freed_memory` pins the
  threshold at 128 KiB, so every array of 128 KiB or more is its own mapping, unmapped when freed.
  That costs a little speed in allocation-heavy loops, so only one-shot commands (``cascade
  backtest``) call it; the optimiser and the live runner do not.
"""

from __future__ import annotations

import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 128 * 1024


def use_system_pool_for_arrow() -> None:
    """Make pyarrow use the system allocator (call before pyarrow is imported; the user's choice wins)."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


def return_freed_memory() -> None:
    """Pin glibc's mmap threshold so large freed arrays go back to the OS (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc (e.g. musl): its defaults stand
        pass
