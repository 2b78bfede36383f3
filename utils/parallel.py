"""Order-preserving parallel map over a stream, with a bounded number of items in flight."""

from __future__ import annotations

import multiprocessing as mp
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
    runs once in each worker. Workers start with "spawn": a fresh interpreter that does not inherit
    the caller's threads (forking a process that runs torch or tokenizers threads can deadlock).
    An exception in a worker is raised here, and the pending work is cancelled.
    """
    in_flight = in_flight or 2 * workers
    ex = ProcessPoolExecutor(
        max_workers=workers, mp_context=mp.get_context("spawn"), initializer=initializer, initargs=initargs
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
