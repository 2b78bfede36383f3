"""Order-preserving parallel map over a stream, with a bounded number of items in flight."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor


def ordered_map(
    fn: Callable,
    items: Iterable,
    workers: int,
    initializer: Callable | None = None,
    initargs: tuple = (),
    in_flight: int | None = None,
) -> Iterator:
    """Yield fn(item) for every item, in input order, computed in `workers` processes.

    At most `in_flight` items (default 2 per worker) are submitted and not yet yielded, so memory
    stays bounded however long the input is; the input is consumed lazily. `initializer(*initargs)`
    runs once in each worker; a worker exits by itself if this process dies. Workers start with
    "spawn": a fresh interpreter that does not inherit the caller's threads (forking a process
    that runs torch or tokenizers threads can deadlock).
    An exception in a worker is raised here, and the pending work is cancelled.
    """
    in_flight = in_flight or 2 * workers
    ex = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, initargs),
    )
    pending: deque = deque()
    try:
        for item in items:
            pending.append(ex.submit(fn, item))
            if len(pending) >= in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _start_worker(parent: int, initializer: Callable | None, initargs: tuple) -> None:
    """Runs first in every worker: exit when the parent dies (a worker blocked on the task queue
    would otherwise outlive a killed parent), leave Ctrl-C to the parent (which cancels the work
    and stops the pool, instead of every worker printing a traceback), then the caller's
    initializer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
    if initializer is not None:
        initializer(*initargs)
