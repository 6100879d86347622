"""Stopping a run the way clusters and people stop it: by a signal to the whole job.

`timeout`, SLURM's `scancel` and time limit, and systemd send SIGTERM to every process of the
job, DataLoader workers included; Ctrl-C sends SIGINT to the foreground process group; SLURM's
`--signal=USR1@90` sends SIGUSR1 shortly before pre-emption. Each of them should end training
after the current iteration with a checkpoint, and end any command with one line and the exit
code a shell reports for a process a signal ended (128 + the signal's number).
"""

import contextlib
import signal

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name)
)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopRequest:
    """Within this block a stop signal sets `signum` (checked between iterations) instead
    of ending the process."""

    def __init__(self):
        self.signum: int | None = None
        self.previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "StopRequest":
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """A DataLoader `worker_init_fn`: the job's signal reaches the workers too, and a worker
    it killed would take the run down with "DataLoader worker ... killed by signal" before
    the main process could save. So a worker ignores SIGINT and SIGUSR1, and the first
    SIGTERM; the main process ends it (`shut_down_workers`), and a second SIGTERM (what
    multiprocessing sends a worker still alive when the main process exits) still ends it."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN if sig != signal.SIGTERM else _second_sigterm_ends)


def _second_sigterm_ends(signum, frame) -> None:
    signal.signal(signum, signal.SIG_DFL)


def shut_down_workers(batches) -> None:
    """End the worker processes of a DataLoader iterator now (they read a stop message and
    exit), rather than when the iterator is collected: an exception's traceback can keep it
    alive until the interpreter exits."""
    shut_down = getattr(batches, "_shutdown_workers", None)  # no workers: nothing to end
    if shut_down is not None:
        shut_down()


class Interrupted(BaseException):
    """A stop signal ended a command (a BaseException, like KeyboardInterrupt: no `except
    Exception` on the way swallows it)."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"stopped by {signal_name(signum)}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def signals_raise_interrupted():
    """Within this block SIGTERM and SIGUSR1 raise Interrupted (SIGINT raises Python's
    KeyboardInterrupt), so that a command ends through its cleanup (temporary files removed)
    with one line instead of dying mid-write or printing a traceback."""

    def handle(signum, frame):
        raise Interrupted(signum)

    previous = {}
    for sig in STOP_SIGNALS:
        if sig != signal.SIGINT:
            with contextlib.suppress(ValueError):
                previous[sig] = signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
