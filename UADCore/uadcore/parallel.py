"""Running one function over many independent jobs (scans, subjects) on all cores,
results in job order, with a progress bar: all at once (`process_map`) or as a
stream that the caller consumes while the workers go on (`process_stream`)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from typing import Iterator

from uadcore.progress import progress_bar


def _one_thread_per_process(initializer, parent: int):
    """Each worker uses one BLAS/OpenMP thread and one ITK thread: the processes
    already use every core, and nested threads would only fight over them (2x
    slower on 2 cores). It keeps freed memory as `uad` does, leaves Ctrl-C to
    ``parent`` (the `uad` process's id), and ends when it is gone."""
    import SimpleITK as sitk
    from threadpoolctl import threadpool_limits

    from uadcore.libraries import quiet_libraries
    from uadcore.malloc import keep_freed_memory

    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group: the parent decides, then ends us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the handler a forked worker inherits: the pool ends us with it
    quiet_libraries()  # as the `uad` process decided (--debug or not)
    keep_freed_memory()  # as in the `uad` process, where a worker is not forked from it
    threadpool_limits(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    if initializer is not None:
        initializer()


def _die_with_parent(parent: int, every_s: float = 0.5) -> None:
    """End this worker when ``parent`` (the `uad` process) is gone, however it ended
    (SIGKILL too, where nothing in the parent can clean up): a daemon thread that
    sees the worker handed to another parent. Without it, the workers of a killed
    `uad train` went on preparing scans, hundreds of MB each, for nobody."""

    def watch():
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="uad-parent-watch", daemon=True).start()


def process_map(function, jobs: list, workers: int | None = None, desc: str = "", unit: str = "it", progress: bool = True,
                initializer=None, lost=None) -> list:
    """``[function(job) for job in jobs]`` over ``workers`` processes (default: one
    per core; 1 runs in this process). ``function`` must be importable (picklable);
    ``lost``: see `process_stream`."""
    return list(process_stream(function, jobs, workers, desc, unit, progress, initializer, ahead=len(jobs), lost=lost))


def process_stream(function, jobs: list, workers: int | None = None, desc: str = "", unit: str = "it",
                   progress: bool = True, initializer=None, ahead: int | None = None, lost=None) -> Iterator:
    """``function(job)`` of each job, yielded in job order as soon as it is ready,
    while the workers go on with the next ones: a pipeline whose consumer (a model
    scoring prepared scans) works while the workers prepare. At most ``ahead`` jobs
    (default: twice the workers) are submitted and not yet consumed, so the results
    waiting in memory stay bounded. A consumer that stops early cancels the rest.

    A job that kills its worker (the kernel's out-of-memory killer, a crash inside a
    library) gives ``lost(job)`` instead of its result when one is given, and the
    other jobs go on in new workers; without ``lost`` it raises `BrokenProcessPool`."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    with progress_bar(total=len(jobs), desc=desc, unit=unit, enabled=progress) as bar:
        if workers == 1:
            if initializer is not None:
                initializer()
            for job in jobs:
                result = function(job)
                bar.update()
                yield result
            return
        ahead = max(workers, ahead or 2 * workers)
        pool = _pool(workers, initializer)
        waiting = iter(jobs)
        pending = deque((job, pool.submit(function, job)) for job in islice(waiting, ahead))
        try:
            while pending:
                job, future = pending.popleft()
                try:
                    result = future.result()
                except BrokenProcessPool:
                    # a worker died, and with it every job in flight: the one whose turn it is
                    # runs alone (did it kill its worker?); the others start again in new workers
                    pool.shutdown(wait=True, cancel_futures=True)
                    result = _alone(function, job, initializer, lost)
                    pool = _pool(workers, initializer)
                    pending = deque((other, done if _succeeded(done) else pool.submit(function, other))
                                    for other, done in pending)
                pending.extend((next_job, pool.submit(function, next_job)) for next_job in islice(waiting, 1))
                bar.update()
                yield result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _pool(workers: int, initializer) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, initializer=_one_thread_per_process, initargs=(initializer, os.getpid()))


def _alone(function, job, initializer, lost):
    """``function(job)`` in a worker of its own; ``lost(job)`` if that worker dies too."""
    with _pool(1, initializer) as pool:
        try:
            return pool.submit(function, job).result()
        except BrokenProcessPool:
            if lost is None:
                raise
            return lost(job)


def _succeeded(future) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None
