"""One small interface for running independent jobs (runs, subjects, simulated studies).

A backend is anything with ``map(fn, items)`` that yields ``fn(item)`` in input order; ``fn`` and
the items must pickle. ``LocalExecutor`` runs them in worker processes here; ``DaskExecutor`` on a
dask.distributed cluster: one at a scheduler address, a local one, or workers submitted as SLURM
batch jobs through dask-jobqueue (``slurm_cluster``). ``make_executor`` builds the one the params'
``executor`` section names; ``as_executor`` lets functions take either a backend or a number of
local workers. ``progress`` wraps the results in a rich progress bar on
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


class OneThread:
    """``fn`` with BLAS/OpenMP held to one thread while it runs.

    Multithreaded BLAS splits some reductions differently with the number of threads, so results
    would change in the last bits with the backend (dask workers default to one thread) or the
    machine's core count. Every backend runs jobs through this, so the bytes depend on neither;
    with one job per core, one thread each is also the fastest.
    """

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, item):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            return self.fn(item)


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of giving it back to the kernel.

    By default every block over 32 MB (a run's voxels × volumes in float64) is its own mmap, returned
    to the kernel when freed, so the next array of that size faults in fresh zeroed pages: a third of
    the simulate stage's CPU time went to the kernel. Blocks up to 1 GB now come from the heap, and
    the heap's freed top is kept (up to 1 GB) with 256 MB of padding: sys time 7.7 -> 1.7 s, and the
    stage 25 % faster (docs/architecture.md item 42). Peak memory is unchanged; memory a stage freed
    stays with it until it exits. Forked workers inherit the setting. Elsewhere than glibc, nothing.
    Values never depend on it. Returns whether it applied."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the symbols this process has loaded: glibc's, on Linux
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(mallopt(opt, value) == 1 for opt, value in
               ((m_mmap_threshold, 1 << 30), (m_trim_threshold, 1 << 30), (m_top_pad, 256 << 20)))


class LocalExecutor:
    """Worker processes on this machine; one process (no pool) when ``n_jobs`` is 1."""

    def __init__(self, n_jobs: int = 1):
        self.n_jobs = max(1, int(n_jobs))

    def map(self, fn, items):
        if self.n_jobs == 1 or len(items) <= 1:
            yield from map(OneThread(fn), items)
            return
        pool = ProcessPoolExecutor(max_workers=self.n_jobs, initializer=_default_signals)
        try:
            yield from pool.map(OneThread(fn), items)
        except BaseException:  # a signal, an error, or the consumer gone: stop the workers now, not after their jobs
            _stop_now(pool)
            raise
        pool.shutdown(wait=True)


def _stop_now(pool: ProcessPoolExecutor, grace_s: float = 5.0) -> None:
    """Kill the pool's workers and let its manager thread end.

    A worker killed while it writes a result leaves part of a message in the result pipe, and the
    pool's manager thread, which the interpreter joins before it exits, then waits in ``recv`` for
    the rest forever: this process's own copy of the pipe's write end keeps it from seeing the end of
    the pipe (CPython 3.11). A test suite that ran a stage with a failing run in-process hung after
    its last test so (docs/validation.md, "Test-suite exit"); a command would hang after its error.
    Once the workers are gone, if the thread has not ended within ``grace_s``, that copy is closed:
    the read fails, the pool is marked broken and the thread ends."""
    from multiprocessing.connection import wait

    _quiet_broken_pool()
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for proc in procs:
        proc.terminate()
    results, manager = getattr(pool, "_result_queue", None), getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    if procs:  # not reaped here: the manager thread does that
        wait([proc.sentinel for proc in procs], timeout=grace_s)
    if manager is None or results is None:
        return
    manager.join(grace_s)
    if manager.is_alive():
        results._writer.close()
        manager.join(grace_s)


def _quiet_broken_pool() -> None:
    """The pool's manager thread, finding the workers it lost, marks their futures broken; those
    ``pool.map`` already cancelled raise InvalidStateError there (CPython 3.11), printed as a thread
    traceback. The workers were stopped on purpose: that one error is not reported."""
    import threading
    from concurrent.futures import InvalidStateError

    report = threading.excepthook

    def hook(args):
        if not issubclass(args.exc_type, InvalidStateError):
            report(args)

    threading.excepthook = hook


def _default_signals() -> None:
    """Workers die at once on SIGTERM and SIGINT (their parent owns the cleanup and the message)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class DaskExecutor:
    """Jobs on a dask.distributed cluster, results in input order.

    ``address``: connect to a running scheduler; else ``cluster_factory()`` builds the cluster (a
    SLURM one), else a local cluster of ``workers`` single-threaded processes. A cluster this
    executor starts lives for one ``map`` call.
    """

    def __init__(self, address: str | None = None, workers: int = 2, cluster_factory=None):
        self.address, self.workers, self.cluster_factory = address, max(1, int(workers)), cluster_factory

    def _cluster(self):
        import logging

        from distributed import LocalCluster

        if self.cluster_factory is not None:
            return self.cluster_factory()
        return LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                            dashboard_address=None, silence_logs=logging.ERROR)

    def map(self, fn, items):
        from contextlib import nullcontext

        from distributed import Client

        with nullcontext() if self.address else self._cluster() as cluster:
            with Client(self.address or cluster) as client:
                futures = client.map(OneThread(fn), list(items), pure=False)
                for future in futures:
                    yield future.result()


def slurm_cluster(p, jobs: int):
    """dask-jobqueue's SLURMCluster for the ``executor.slurm`` params, scaled to ``jobs`` jobs (one
    worker process each). Building it starts the scheduler here; jobs are submitted by ``scale``."""
    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(
        queue=p.queue, account=p.account, cores=p.cores, processes=1, memory=p.memory, walltime=p.walltime,
        job_extra_directives=list(p.job_extra_directives), job_script_prologue=list(p.job_script_prologue),
        log_directory=p.log_directory, scheduler_options={"dashboard_address": None})
    if jobs:
        cluster.scale(jobs=jobs)
    return cluster


def make_executor(p, n_jobs: int):
    """The backend the params' ``executor`` section names (``n_jobs``: -j, the default size)."""
    if p is None or p.kind == "local":
        return LocalExecutor(n_jobs)
    if p.kind == "dask":
        return DaskExecutor(p.address, p.workers or n_jobs)
    return DaskExecutor(cluster_factory=lambda: slurm_cluster(p.slurm, p.workers or n_jobs))


def as_executor(jobs) -> Executor:
    """A backend as is; a number of local worker processes as a ``LocalExecutor``."""
    return jobs if hasattr(jobs, "map") else LocalExecutor(jobs)


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
