"""Work on every core: results in job order, and a stream that holds only a bounded
number of jobs in flight (the scorer consumes while the workers prepare)."""

import os

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
