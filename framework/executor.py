"""One small interface for running independent jobs (runs, subjects): local processes today.

A backend is anything with ``map(fn, items)`` that yields ``fn(item)`` in input order; ``fn`` and
the items must pickle. A distributed backend (a cluster queue, dask) implements the same method and
is passed where ``LocalExecutor`` is now. ``progress`` wraps the results in a rich progress bar on
stderr when stderr is a terminal, and is silent otherwise (logs and tests see no bar).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]: ...


class LocalExecutor:
    """Worker processes on this machine; one process (no pool) when ``n_jobs`` is 1."""

    def __init__(self, n_jobs: int = 1):
        self.n_jobs = max(1, int(n_jobs))

    def map(self, fn, items):
        if self.n_jobs == 1 or len(items) <= 1:
            yield from map(fn, items)
            return
        with ProcessPoolExecutor(max_workers=self.n_jobs) as pool:
            yield from pool.map(fn, items)


def progress(results: Iterable[R], total: int, description: str) -> Iterator[R]:
    """Yield ``results`` while a progress bar on stderr counts them (only on a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        for r in results:
            yield r
            bar.advance(task)
