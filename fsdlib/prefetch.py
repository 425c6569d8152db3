"""One background prefetcher: the next items of an iterator made in a thread while the consumer uses the current one.

The feature-store builder reads clips ahead of the transform with it (fsdlib/features.py), training makes its
next batch while a step runs (fsdlib/train.py).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterator[T], depth: int = 1, name: str = "fsdlib-prefetch") -> Iterator[T]:
    """Iterate `items` in a daemon thread called `name`, at most `depth` items (ready or in the making) ahead of
    the consumer; the producer's exceptions re-raise in the consumer, in order. When the consumer stops early
    (close, or an exception) the thread finishes the item it is making, makes no other, and is joined."""
    if depth < 1:
        raise ValueError(f"prefetch depth must be at least 1, got {depth}")
    slots = threading.Semaphore(depth)  # one taken per item made, given back when the consumer takes one
    box: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()

    def produce() -> None:
        try:
            while True:
                slots.acquire()
                if stop.is_set():
                    return
                item = next(items, _DONE)
                box.put((item, None))
                if item is _DONE:
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            box.put((_DONE, exc))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, exc = box.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            slots.release()  # the next item is made while the consumer uses this one
            yield item
    finally:
        stop.set()
        slots.release()  # wakes a producer waiting for a slot, which then sees `stop`
        thread.join()
