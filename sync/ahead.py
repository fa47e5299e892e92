"""Work on the next item in a thread while the caller takes this one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["one_ahead"]

In = TypeVar("In")
Out = TypeVar("Out")


def one_ahead(work: Callable[[In], Out], items: Iterator[In]) -> Iterator[Out]:
    """`work` on each item, the next one in a thread while the caller takes this one.

    Polars lets go of the GIL while it works, so the next item's work (mapping a slice, reading
    a part) overlaps what the caller does with this one. One item ahead, no more, so that memory
    holds two results at most.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead: Future[Out] | None = None
        for item in items:
            following = pool.submit(work, item)
            if ahead is not None:
                yield ahead.result()
            ahead = following
        if ahead is not None:
            yield ahead.result()
