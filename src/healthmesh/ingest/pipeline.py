"""Run ingest's CPU-heavy work on worker processes while the main process writes.

Chunks are processed in order-preserving fashion with a bounded number in
flight, so memory stays flat however large the input. ``workers=0`` runs the
same code inline (small inputs, debugging). Workers come from a
``forkserver`` that preloads :mod:`healthmesh.ingest.worker` (the FHIR model
loaded once), so they are safe to start from a process that has threads
(the progress bar) and open database connections.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator
from multiprocessing.pool import AsyncResult, Pool

from healthmesh.ingest.worker import Outcome, process_chunk

__all__ = ["Pipeline"]

Result = tuple[str, list[tuple[int, Outcome]]]


def _init_worker() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C


def _run(source: str, lines: list[tuple[int, bytes]]) -> Result:
    return source, process_chunk(source, lines)


class Pipeline:
    """Ordered, bounded parallel map of :func:`process_chunk` over NDJSON chunks."""

    def __init__(self, workers: int) -> None:
        self.workers = max(0, workers)
        self._pool: Pool | None = None
        self._pending: deque[AsyncResult[Result]] = deque()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get_pool(self) -> Pool:
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["healthmesh.ingest._preload"])
            self._pool = ctx.Pool(self.workers, initializer=_init_worker)
        return self._pool

    def submit(self, source: str, lines: list[tuple[int, bytes]]) -> Iterator[Result]:
        """Queue a chunk; yields the results of chunks that are due, in order."""
        if self.workers == 0:
            yield _run(source, lines)
            return
        self._pending.append(self._get_pool().apply_async(_run, (source, lines)))
        while len(self._pending) > 2 * self.workers:
            yield self._pending.popleft().get()

    def drain(self) -> Iterator[Result]:
        """Yield every outstanding result, in order."""
        while self._pending:
            yield self._pending.popleft().get()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        self._pending.clear()


