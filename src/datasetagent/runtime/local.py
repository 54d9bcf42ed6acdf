"""Local executor: a process pool over all cores, streaming results in input order."""

from __future__ import annotations

import functools
import itertools
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:  # the pool's modules load with the pool: a run that needs none starts faster
    from concurrent.futures import Future, ProcessPoolExecutor

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs ``fn`` over items elsewhere (processes, a cluster); results in input order. The
    caller stores them: an executor never writes the run store."""

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


def _worker_init(parent: int) -> None:
    """Worker initialiser: one thread per process for BLAS, OpenMP and OpenCV, and an exit
    when the process that started the pool dies.

    The pool already uses every core; library thread pools on top of it oversubscribe the CPU,
    and BLAS threads spinning on tiny matrix products made a 2-process scan slower than one.

    A worker's parent is the fork server, and a killed run (``kill -9``) leaves both waiting
    for work forever (~265 MB): the fork server lives while any worker holds its pipe, and
    each worker holds its task queue's write end too. So each worker watches ``parent``; the
    fork server exits on its own once the last worker is gone.
    """
    single_threaded()
    threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="exit-with").start()


@functools.cache
def single_threaded() -> None:
    """Limit this worker process to one thread for BLAS, OpenMP and OpenCV (once a process):
    the executor already runs a worker a core."""
    import cv2
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    cv2.setNumThreads(1)


def _exit_with(pid: int) -> None:
    """Exit this process as soon as process ``pid`` has ended."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd (not Linux 5.3+): poll
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
            time.sleep(0.5)
    select.select([fd], [], [])  # readable once the process has exited
    os._exit(1)


class _Chunk(Generic[T, R]):
    """Applies ``fn`` to a list of items in a worker (one task per chunk, not per item)."""

    def __init__(self, fn: Callable[[T], R]) -> None:
        self.fn = fn

    def __call__(self, items: list[T]) -> list[R]:
        return [self.fn(item) for item in items]


class LocalExecutor:
    """Runs ``fn`` over items in worker processes; small batches run inline.

    ``fn`` must be picklable (a module-level function or a small callable object). Results
    stream back in input order, with a bounded number of chunks in flight, so memory does not
    grow with the number of items.
    """

    def __init__(self, workers: int | None = None, *, chunksize: int = 16) -> None:
        self.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self.chunksize = chunksize
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        if self.workers == 1 or len(items) < 2 * self.chunksize:
            return map(fn, items)
        chunk = max(1, min(self.chunksize, len(items) // (4 * self.workers) or 1))
        return self.imap(fn, items, chunksize=chunk)

    def imap(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        chunksize: int | None = None,
        in_flight: int | None = None,
    ) -> Iterator[R]:
        """Like ``map`` for an iterable of unknown length, consumed lazily.

        At most ``in_flight`` items (default: four chunks a worker) are submitted and not yet
        consumed. A consumer that works in bursts (say, deduplicating a batch of results at a
        time) should allow more than a burst's worth, or the workers idle during each burst.
        """
        return self.imap_chunks(_Chunk(fn), items, chunksize=chunksize, in_flight=in_flight)

    def imap_chunks(
        self,
        fn: Callable[[list[T]], list[R]],
        items: Iterable[T],
        *,
        chunksize: int | None = None,
        in_flight: int | None = None,
    ) -> Iterator[R]:
        """``imap`` for a ``fn`` that takes a whole chunk and returns one result per item, in
        order: for work that runs faster a step at a time over many items than item by item."""
        size = chunksize or self.chunksize
        window = max(4 * self.workers, -(-(in_flight or 0) // size))
        source = iter(items)
        chunks = iter(lambda: list(itertools.islice(source, size)), [])
        head = list(itertools.islice(chunks, 2))
        if self.workers == 1 or len(head) < 2 or len(head[1]) < size:
            # one worker, or under two chunks: starting a pool would cost more than it saves
            for part in itertools.chain(head, chunks):
                yield from fn(part)
            return
        if self._pool is None:
            self._pool = self._new_pool(fn)
        pending: deque[Future[list[R]]] = deque()
        for part in itertools.chain(head, chunks):
            pending.append(self._pool.submit(fn, part))
            if len(pending) >= window:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()

    def _new_pool(self, fn: object) -> ProcessPoolExecutor:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # forkserver: workers fork from a clean, single-threaded server, never from a parent
        # whose library threads may hold locks (a plain fork can deadlock on them); the server
        # imports the modules the work needs once (``fn``'s own, and those it names in a
        # ``preload`` attribute), so each worker starts in milliseconds.
        work = getattr(fn, "fn", fn)  # a _Chunk's function
        module = getattr(work, "__module__", None) or type(work).__module__
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(
            ["numpy", "cv2", "PIL.Image", module, *getattr(work, "preload", ())]
        )
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=ctx,
            initializer=_worker_init,
            initargs=(os.getpid(),),
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
