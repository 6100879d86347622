"""Training progress for a person: a bar on a terminal, plain lines in a log file."""

import sys
import time

from tqdm import tqdm


class TrainingProgress:
    """Shows the run's progress on stderr.

    On a terminal: a tqdm bar with the latest loss and learning rate. Elsewhere (a log file,
    a pipe, a batch scheduler's output): a bar's redraws would fill the file with carriage
    returns, so each `log` call prints one line with the iteration, the losses, the speed
    and the time left instead.
    """

    def __init__(self, total: int, initial: int, enabled: bool, stream=None):
        self.total = total
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = enabled and self.stream.isatty()
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc="train",
            dynamic_ncols=True,
            file=self.stream,
            disable=not self.interactive,
        )
        self.start_iteration, self.start_time = initial, time.perf_counter()

    def step(self) -> None:
        self.bar.update(1)

    def set_total(self, total: int) -> None:
        """A run fitted to a time budget learns its length as it goes."""
        self.total = total
        self.bar.total = total
        self.bar.refresh()

    def log(
        self,
        iteration: int,
        losses: dict[str, float],
        lr: float,
        budget_left: float | None = None,
        end_seconds: float | None = None,
    ) -> None:
        """losses: the logged terms; "loss" is their sum. budget_left: seconds of a time budget
        left; end_seconds: what of them the end of the run is expected to take."""
        budget = ""
        if budget_left is not None:
            budget = f"  budget left {_clock(max(budget_left, 0))}"
            if end_seconds is not None:
                budget += f" (end ~{end_seconds:.0f} s)"
        if self.interactive:
            extra = {"left": _clock(max(budget_left, 0))} if budget_left is not None else {}
            self.bar.set_postfix(loss=f"{losses['loss']:.3f}", lr=f"{lr:.2e}", **extra)
            return
        if not self.enabled:
            return
        done = iteration - self.start_iteration
        seconds_per_iter = (time.perf_counter() - self.start_time) / max(done, 1)
        remaining = seconds_per_iter * (self.total - iteration)
        terms = " ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in losses.items() if k != "loss")
        print(
            f"iteration {iteration}/{self.total}  loss {losses['loss']:.3f} ({terms})  lr {lr:.2e}  "
            f"{seconds_per_iter:.2f} s/it  ETA {_clock(remaining)}{budget}",
            file=self.stream,
            flush=True,
        )

    def write(self, message: str | None) -> None:
        """A line of its own (between bar redraws on a terminal); None writes nothing."""
        if self.enabled and message:
            tqdm.write(message, file=self.stream)

    def close(self) -> None:
        self.bar.close()


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def item_progress(items, desc: str, unit: str, enabled: bool = True, lines: int = 10, stream=None):
    """Iterates `items` (a sized collection) showing progress on stderr.

    On a terminal: a tqdm bar. Elsewhere: `lines` plain lines over the run, e.g.
    `eval: 40/100 images  0.52 s/image  ETA 0:00:31`, at evenly spaced counts (none for
    lines=0, for a caller that prints a line per item itself).
    """
    stream = stream if stream is not None else sys.stderr
    if enabled and stream.isatty():
        yield from tqdm(items, desc=desc, unit=unit, file=stream, dynamic_ncols=True)
        return
    total = len(items)
    every = max(1, -(-total // lines)) if lines else 0
    start = time.perf_counter()
    for done, item in enumerate(items, start=1):
        yield item
        if enabled and every and (done % every == 0 or done == total):
            per_item = (time.perf_counter() - start) / done
            eta = _clock(per_item * (total - done))
            print(
                f"{desc}: {done}/{total} {unit}s  {per_item:.2f} s/{unit}  ETA {eta}",
                file=stream,
                flush=True,
            )
