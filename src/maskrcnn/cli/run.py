"""A parsed command checked and run under the command line's one error policy.

What the user gives is checked before any work: option values as argparse reads them
(`checks`), then the command's `check(args)` (paths, configs; torch-free), so that a wrong one is
one line `error: <option> <value>: <problem>` and exit code 2, never a traceback, and never
after minutes of set-up. What the work raises for the user to mend (`OptionError`,
`ConfigError`, and what a command turns into them with `errors.user_errors`) is the same one
line and exit code 2; a stop signal is one line and 128 + its number; anything else is a bug:
one line asking for a report (the traceback with MASKRCNN_TRACEBACK=1) and exit code 1. Under
torchrun only rank 0 prints.
"""

import argparse
import os
import signal

from maskrcnn.cli.report import plain_warnings, report
from maskrcnn.config import ConfigError
from maskrcnn.engine.stop import Interrupted, signals_raise_interrupted
from maskrcnn.errors import OptionError, one_line
from maskrcnn.fast_path_switch import check_environment
from maskrcnn.precision import strict_precision

EXIT_USAGE = 2


def run_command(args: argparse.Namespace) -> int:
    """A parsed command (args.check, args.run and its options): checked, then run, under the
    command line's error policy; returns the exit code."""
    try:
        check_environment()
        args.check(args)
    except (OptionError, ConfigError, ValueError) as error:  # ValueError: MASKRCNN_FAST_PATHS
        report(f"error: {one_line(error)}")
        return EXIT_USAGE
    with plain_warnings(), strict_precision(getattr(args, "strict", False)), signals_raise_interrupted():
        try:
            leave_size_limits_to_maskrcnn()  # every read of this program checks its own limit
            return args.run(args)
        except (OptionError, ConfigError) as error:
            report(f"error: {one_line(error)}")
            return EXIT_USAGE
        except (KeyboardInterrupt, Interrupted) as stop:
            # Output files are written whole or not at all (files.atomic_output): one line is all.
            stop = stop if isinstance(stop, Interrupted) else Interrupted(signal.SIGINT)
            report(str(stop))
            return stop.exit_code
        except Exception as error:  # a bug: one line, unless asked for the traceback
            if os.environ.get("MASKRCNN_TRACEBACK"):
                raise
            report(
                f"error: {type(error).__name__}: {one_line(error)} (unexpected: please report it; "
                "MASKRCNN_TRACEBACK=1 shows where it happened)"
            )
            return 1


def leave_size_limits_to_maskrcnn() -> None:
    """PIL's process-wide decompression-bomb guard switched off, once, at the start of this
    program, before any thread runs: every image it reads is checked against its own limit
    (`data.max_image_pixels`, `--max-image-pixels`) from the header before anything is decoded
    (`data.images`), and PIL's fixed limit (about 89 megapixels, an error at twice that) would
    refuse genuine aerial and microscopy images under it. Library calls never change it: it is
    the calling program's setting."""
    from PIL import Image  # PIL, not torch: the command line still answers at once

    Image.MAX_IMAGE_PIXELS = None
