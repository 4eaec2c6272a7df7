"""Keeping the garbage collector off a service's hot path, and giving the memory of a big job
back once it is done."""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable
from functools import cache


def settle_heap() -> None:
    """Once a service has started, keep the cyclic garbage collector off what it holds.

    A request or a consumed batch allocates tens of thousands of short-lived objects, and with
    the default thresholds the collector ran dozens of times per batch, its full passes walking
    every imported module and schema: a quarter of ingest's CPU per event, a fifth of
    scoring's. What exists at startup lives as long as the process, so it is frozen out of
    every pass; and the young generation is collected every :data:`YOUNG` allocations instead
    of 700 (most of those objects are freed by reference counting long before). Big blocks
    are mapped apart from then on (:func:`map_big_blocks_apart`).
    """
    gc.collect()
    gc.freeze()
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, older, oldest)
    map_big_blocks_apart()


# Above what a consumed batch holds at once (a thousand events' envelopes, states, cards and
# statements). At 20,000, a pass came in the middle of nearly every batch: it walked all of
# the batch's objects still in use, and moved them to the older generation, whose passes then
# walked them again. Measured over the CDNOW master log, scoring spent 1.9 s of its 12 s of
# CPU collecting (1.4 s less at 100,000); over the end-to-end saturation run, scoring and
# outreach each spent 5-7% of theirs.
YOUNG = 100_000


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    # The allocator the interpreter itself links (dlopen of no file: the process's symbols).
    trim: Callable[[int], int] | None = getattr(ctypes.CDLL(None), "malloc_trim", None)
    return trim  # None: not glibc (musl, macOS), whose allocator returns memory on its own


def release_freed() -> None:
    """Give the memory a big job freed back to the operating system.

    A pass over every customer (a refit, a long sweep) allocates and frees millions of small
    objects; glibc keeps the pages they were freed from for the process to reuse, so the
    resident size stays at the job's peak long after it has ended. ``malloc_trim`` returns
    every whole free page of the heap (and lowers its top) at once; it costs milliseconds, so it
    belongs after such a job, not after each request or batch.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


# glibc's own starting threshold, kept: a consumed batch's statement buffers and documents
# (hundreds of KB each) then never live in the heap. Scoring's peak under bench.bench_scale's
# load (200,000 customers, two batches in flight) was 283 MB at 128 KiB against 296 MB with
# the sliding threshold (medians of 5 and 4 runs; single runs vary by 15 MB either way).
BIG_BLOCK = 128 * 1024


def map_big_blocks_apart(threshold: int = BIG_BLOCK) -> None:
    """Have every block of ``threshold`` bytes or more mapped on its own from now on.

    glibc maps a big block apart and unmaps it when freed, but raises that threshold to the
    size of each one freed (up to 32 MB): after a few big temporaries, buffers and arrays of
    megabytes live in the heap, where each one growing copies itself and leaves its old room
    behind as a hole, and small objects allocated in a freed one's room keep the heap from
    shrinking. A job growing a dozen such arrays side by side (a refit's, over every customer)
    then holds about twice their size. A fixed threshold keeps them apart: grown in place
    (``mremap``), and handed back whole when freed. It lasts for the process.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, threshold)
