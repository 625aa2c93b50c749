"""Freezing a replica's startup heap, so that the garbage collector's full passes skip it.

A replica builds everything it keeps before it serves: the model, its tokenizer, templates,
the HTTP app, Ray's and Serve's own state. CPython's collector would walk all of it again in
every full (oldest-generation) pass while requests wait on the replica's event loop.
`gc.freeze()` moves those objects into a permanent generation the collector never walks;
objects made while serving are collected as before. vLLM's own API server does the same
after start-up (`vllm.utils.gc_utils.freeze_gc_heap`).
"""

from __future__ import annotations

import gc
import logging
import os
import time

FREEZE_ENV = "RAYGATE_FREEZE_STARTUP_HEAP"  # "0": leave the heap as it is

logger = logging.getLogger("ray.serve")


def freeze_startup_heap(owner: str) -> int | None:
    """Collect once, then freeze every object left (call it at the end of a replica's
    set-up). Returns the number of objects frozen, or None when `RAYGATE_FREEZE_STARTUP_HEAP`
    is `0` (nothing done). Never raises."""
    if os.environ.get(FREEZE_ENV, "1") == "0":
        return None
    started = time.perf_counter()
    gc.collect()
    took = time.perf_counter() - started
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info(
        "%s: startup heap frozen (%d objects; a full collection of it took %.0f ms)",
        owner,
        frozen,
        took * 1000,
    )
    return frozen
