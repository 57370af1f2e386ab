"""Running one function over many independent jobs (scans, subjects) on all cores,
results in job order, with a progress bar: all at once (`process_map`) or as a
stream that the caller consumes while the workers go on (`process_stream`)."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from typing import Iterator

from uadcore.progress import progress_bar


def _one_thread_per_process(initializer, parent: int):
    """Each worker uses one BLAS/OpenMP thread and one ITK thread: the processes
    already use every core, and nested threads would only fight over them (2x
    slower on 2 cores). It keeps freed memory as `uad` does, and ends when
    ``parent`` (the `uad` process's id) is gone."""
    import SimpleITK as sitk
    from threadpoolctl import threadpool_limits

    from uadcore.libraries import quiet_libraries
    from uadcore.malloc import keep_freed_memory

    _die_with_parent(parent)
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


def process_map(function, jobs: list, workers: int | None = None, desc: str = "", unit: str = "it", progress: bool = True, initializer=None) -> list:
    """``[function(job) for job in jobs]`` over ``workers`` processes (default: one
    per core; 1 runs in this process). ``function`` must be importable (picklable)."""
    return list(process_stream(function, jobs, workers, desc, unit, progress, initializer, ahead=len(jobs)))


def process_stream(function, jobs: list, workers: int | None = None, desc: str = "", unit: str = "it",
                   progress: bool = True, initializer=None, ahead: int | None = None) -> Iterator:
    """``function(job)`` of each job, yielded in job order as soon as it is ready,
    while the workers go on with the next ones: a pipeline whose consumer (a model
    scoring prepared scans) works while the workers prepare. At most ``ahead`` jobs
    (default: twice the workers) are submitted and not yet consumed, so the results
    waiting in memory stay bounded. A consumer that stops early cancels the rest."""
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
        with ProcessPoolExecutor(workers, initializer=_one_thread_per_process,
                                 initargs=(initializer, os.getpid())) as pool:
            waiting = iter(jobs)
            pending = deque(pool.submit(function, job) for job in islice(waiting, ahead))
            try:
                while pending:
                    result = pending.popleft().result()
                    pending.extend(pool.submit(function, job) for job in islice(waiting, 1))  # keep ``ahead`` in flight
                    bar.update()
                    yield result
            finally:
                for future in pending:
                    future.cancel()
