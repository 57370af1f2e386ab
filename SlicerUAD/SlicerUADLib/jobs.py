"""Background jobs: `python -m uadcore ...` in its own process, followed without
ever blocking the GUI.

A `Job` starts the command with JSON-lines events on stdout (``--events`` or
``--json``). Two reader threads move stdout lines and the stderr tail into
memory; they never touch Qt. The GUI calls `Job.poll` from a timer: it returns the
events that arrived since the last call, at once.

Inside Slicer the command runs through ``PythonSlicer``, a launcher that starts the
real interpreter as its child and forwards no signal: the launcher's exit says
nothing about the job. So a job is running while its output pipes are open (the
real interpreter holds them until it ends), and `Job.cancel` reaches the job
itself: it creates the run's STOP file where there is one (the engine then writes
a resumable checkpoint and says "stopped"), signals the job's whole process group
(POSIX: the job starts a session of its own; Windows: a CTRL+BREAK to its group),
and kills the whole tree if output is still open after a grace period. A separate
process also frees all GPU memory when the job ends.

Threads rather than non-blocking pipe reads: ``os.set_blocking`` on pipes does not
exist on Windows before Python 3.12, and Slicer runs there too. Output is read as
UTF-8 with undecodable bytes replaced: one stray byte must not end a reader (the
job would then block on a full pipe).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading

STDERR_TAIL = 40  # lines kept for the error message


class Job:
    """One background command. ``python`` is the interpreter that has uadcore:
    ``sys.executable`` outside Slicer, PythonSlicer inside it."""

    def __init__(self, args: list[str], python: str | None = None, cwd: str | None = None, env: dict | None = None,
                 module: str = "uadcore", stop_file: str | None = None):
        self.command = [python or sys.executable, "-m", module, *args]
        self.stop_file = stop_file  # a training run's RUN/STOP: the engine stops at it, whatever launched it
        self.events: queue.Queue = queue.Queue()
        self.stderr_tail: collections.deque = collections.deque(maxlen=STDERR_TAIL)
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, bufsize=1,
            encoding="utf-8", errors="replace", cwd=cwd, env=_job_environment(env), **_own_process_group(),
        )
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.cancelled = False

    # ---- what the GUI calls ------------------------------------------------------
    def poll(self) -> list[dict]:
        """The events that arrived since the last call (never waits)."""
        arrived = []
        while True:
            try:
                arrived.append(self.events.get_nowait())
            except queue.Empty:
                return arrived

    @property
    def running(self) -> bool:
        """True while the job can still print: its process, or the interpreter a
        launcher started, holds the output pipes open."""
        return self.process.poll() is None or any(reader.is_alive() for reader in self._readers)

    @property
    def finished(self) -> bool:
        """The job has ended and everything it printed has been read."""
        return not self.running

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def error_message(self) -> str | None:
        """None after success; else what went wrong, with the last lines of the log."""
        code = self.process.poll()
        if code in (None, 0) or self.cancelled:
            return None
        tail = "\n".join(list(self.stderr_tail)[-12:]) or "(nothing on stderr)"
        return f"{' '.join(self.command[1:4])} ... failed (exit code {code}):\n{tail}"

    def cancel(self, grace_seconds: float = 10.0) -> None:
        """The STOP file, a stop signal to the whole process group, and the whole
        tree killed if its output is still open after ``grace_seconds`` (in a
        thread: the GUI goes on at once)."""
        if not self.running:
            return
        self.cancelled = True
        if self.stop_file and os.path.isdir(os.path.dirname(self.stop_file)):
            with contextlib.suppress(OSError):
                open(self.stop_file, "a").close()
        _signal_group(self.process)

        def kill_later():
            for reader in self._readers:
                reader.join(grace_seconds)
            if any(reader.is_alive() for reader in self._readers) or self.process.poll() is None:
                _kill_tree(self.process)

        threading.Thread(target=kill_later, daemon=True).start()

    def stop(self, grace_seconds: float = 10.0) -> None:
        """`cancel`, and wait for the job's end (the tree killed after the grace
        period): for module cleanup and application exit, which must not leave an
        orphan training on the GPU."""
        self.cancel(grace_seconds)
        for reader in self._readers:
            reader.join(grace_seconds)
        # the output still open means part of the tree lives, even when the process
        # itself has ended (`cancel`'s own timer may have killed and reaped it)
        if self.running or any(reader.is_alive() for reader in self._readers):
            _kill_tree(self.process)
        for reader in self._readers:  # the pipes close once the killed tree is gone
            reader.join(5.0)

    def wait(self, timeout: float | None = None) -> int:
        """Block until the process ends and its output is read (tests, command line)."""
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    # ---- reader threads -------------------------------------------------------
    def _read_stdout(self):
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # not an event (a stray print): the stderr tail tells what went wrong
                continue
            self.events.put(record if isinstance(record, dict) else {"event": "output", "value": record})
        self.process.stdout.close()

    def _read_stderr(self):
        for line in self.process.stderr:
            # progress bars redraw with carriage returns: keep the last state of a line
            self.stderr_tail.append(line.rstrip("\n").split("\r")[-1])
        self.process.stderr.close()


def _job_environment(extra: dict | None) -> dict:
    """This environment, unbuffered, with the folder holding uadcore first on
    PYTHONPATH: inside Slicer the engine is bundled with the module, not installed."""
    import uadcore

    engine = os.path.dirname(os.path.dirname(os.path.abspath(uadcore.__file__)))
    given = [(extra or {}).get("PYTHONPATH", ""), os.environ.get("PYTHONPATH", "")]
    paths = [engine] + [p for value in given for p in value.split(os.pathsep) if p]
    return {**os.environ, **(extra or {}), "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(paths)}


def _own_process_group() -> dict:
    """A process group of the job's own (so a signal reaches all of it), and on
    Windows no console window, as Slicer's own launchConsoleProcess does."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def _signal_group(process: subprocess.Popen) -> None:
    """Ask the job's whole process group to stop (the engine's SIGTERM handler
    writes a checkpoint); a launcher that forwards nothing is passed by."""
    try:
        if os.name == "nt":
            process.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _kill_tree(process: subprocess.Popen) -> None:
    """Kill the process and everything it started (DataLoader or torchrun workers)."""
    try:
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True)
        else:
            os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()

