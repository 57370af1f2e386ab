"""Running one function over many independent jobs (scans, subjects) on all cores,
results in job order, with a progress bar."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

from uadcore.progress import progress_bar


def _one_thread_per_process(initializer):
    """Each worker uses one BLAS/OpenMP thread and one ITK thread: the processes
    already use every core, and nested threads would only fight over them (2x
    slower on 2 cores). It keeps freed memory as `uad` does."""
    import SimpleITK as sitk
    from threadpoolctl import threadpool_limits

    from uadcore.libraries import quiet_libraries
    from uadcore.malloc import keep_freed_memory

    quiet_libraries()  # as the `uad` process decided (--debug or not)
    keep_freed_memory()  # as in the `uad` process, where a worker is not forked from it
    threadpool_limits(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    if initializer is not None:
        initializer()


def process_map(function, jobs: list, workers: int | None = None, desc: str = "", unit: str = "it", progress: bool = True, initializer=None) -> list:
    """``[function(job) for job in jobs]`` over ``workers`` processes (default: one
    per core; 1 runs in this process). ``function`` must be importable (picklable)."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    results = []
    with progress_bar(total=len(jobs), desc=desc, unit=unit, enabled=progress) as bar:
        if workers == 1:
            if initializer is not None:
                initializer()
            for job in jobs:
                results.append(function(job))
                bar.update()
            return results
        with ProcessPoolExecutor(workers, initializer=_one_thread_per_process, initargs=(initializer,)) as pool:
            for result in pool.map(function, jobs, chunksize=max(1, min(4, len(jobs) // (4 * workers)))):
                results.append(result)
                bar.update()
    return results
