"""How the command line speaks to the person at the terminal: one line per error on stderr,
said once under torchrun, and warnings as plain lines."""

import contextlib
import os
import sys
import warnings

from tqdm import tqdm


def report(message: str) -> None:
    """Print on stderr, once: under torchrun only the first process says it."""
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr)


@contextlib.contextmanager
def plain_warnings():
    """Warnings as `warning: <message>` lines of their own on stderr, for a person reading a
    terminal or a log: no source line of the call, and never glued to a progress bar."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        tqdm.write(f"warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous
