"""Local executor: a process pool over all cores, streaming results in input order."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs ``fn`` over items in worker processes; small batches run inline.

    ``fn`` must be picklable (a module-level function or a small callable object).
    """

    def __init__(self, workers: int | None = None, *, chunksize: int = 16) -> None:
        self.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self.chunksize = chunksize
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        if self.workers == 1 or len(items) < 2 * self.chunksize:
            return map(fn, items)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        chunk = max(1, min(self.chunksize, len(items) // (4 * self.workers) or 1))
        return self._pool.map(fn, items, chunksize=chunk)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
