"""Work on every core: results in job order, and a stream that holds only a bounded
number of jobs in flight (the scorer consumes while the workers prepare)."""

import os
import signal
from concurrent.futures.process import BrokenProcessPool

import pytest

from uadcore.parallel import process_map, process_stream


def mark_and_square(job):
    """Leaves a file for each job started, returns its square."""
    folder, number = job
    open(os.path.join(folder, str(number)), "w").close()
    return number * number


def test_results_come_in_job_order(tmp_path):
    jobs = [(str(tmp_path), n) for n in range(12)]
    assert process_map(mark_and_square, jobs, workers=2, progress=False) == [n * n for n in range(12)]
    assert list(process_stream(mark_and_square, jobs, workers=1, progress=False)) == [n * n for n in range(12)]


def test_a_stream_submits_only_so_many_ahead_and_stops_when_its_consumer_does(tmp_path):
    jobs = [(str(tmp_path), n) for n in range(20)]
    stream = process_stream(mark_and_square, jobs, workers=2, progress=False, ahead=3)
    assert next(stream) == 0 and next(stream) == 1
    stream.close()  # the consumer is done: nothing more is started
    started = sorted(int(name) for name in os.listdir(tmp_path))
    assert started == list(range(len(started))) and 2 <= len(started) <= 5  # 3 ahead, refilled once per result


def square_unless_three(job):
    """Kills its own worker process on job 3, as the out-of-memory killer would."""
    if job == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return job * job


def test_a_job_that_kills_its_worker_is_lost_alone_and_the_others_go_on():
    results = process_map(square_unless_three, list(range(8)), workers=2, progress=False, lost=lambda job: f"lost {job}")
    assert results == [0, 1, 4, "lost 3", 16, 25, 36, 49]
    with pytest.raises(BrokenProcessPool):  # where nobody says what a lost job gives
        process_map(square_unless_three, list(range(8)), workers=2, progress=False)
