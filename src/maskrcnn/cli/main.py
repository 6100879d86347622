"""The `maskrcnn` command line's entry: parse, then check and run the chosen command.

One module per command (`predict`, `train`, `evaluate`, `export`, `convert`, `serve`,
`make_shapes`, `configs`, `ablate`), each with `add(subcommands)` (its arguments), `check(args)` (what it is
given, before torch is imported) and `run(args)` (imports the work and does it); a new command
is one such module, listed in COMMANDS. A misspelt option or a missing one prints the command's
usage and one error line ("did you mean ...?"; `parser`); everything after parsing follows the
one error policy of `run.run_command`.
"""

import argparse
import sys

import maskrcnn.cli.ablate as ablate
import maskrcnn.cli.configs as configs
import maskrcnn.cli.convert as convert
import maskrcnn.cli.evaluate as evaluate
import maskrcnn.cli.export as export
import maskrcnn.cli.make_shapes as make_shapes
import maskrcnn.cli.predict as predict
import maskrcnn.cli.serve as serve
import maskrcnn.cli.train as train
from maskrcnn import __version__
from maskrcnn.cli.parser import CommandParser, UsageError, unrecognized
from maskrcnn.cli.report import report
from maskrcnn.cli.run import leave_size_limits_to_maskrcnn, run_command  # noqa: F401 (the package's API)
from maskrcnn.errors import OptionError, one_line

EXIT_USAGE = 2
# In `maskrcnn --help`'s order; a new command is one module with add/check/run, listed here.
COMMANDS = (predict, train, evaluate, export, convert, make_shapes, configs, ablate, serve)


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]) and run the chosen command; returns the exit code."""
    parser = build_parser()
    try:
        args = parse_args(argv, parser)
    except SystemExit as exit_:  # --help or --version: argparse has printed it
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except UsageError as error:
        report(error.parser.format_usage() + f"error: {error}")
        return EXIT_USAGE
    except OptionError as error:
        report(f"error: {one_line(error)}")
        return EXIT_USAGE
    return run_command(args)


def parse_args(argv: list[str] | None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """The command line as `main` reads it (argparse's, with key=value overrides also after the
    options); raises UsageError or OptionError."""
    parser = parser or build_parser()
    args, extras = parser.parse_known_args(argv)
    if not extras:
        return args
    # key=value overrides may also follow the options (argparse stops collecting them there).
    if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extras):
        args.overrides = [*args.overrides, *extras]
        return args
    raise unrecognized(parser.subcommand_parsers[args.command], extras)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="maskrcnn", description="Mask R-CNN in plain PyTorch.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.subcommand_parsers = {}
    for command in COMMANDS:
        sub = command.add(subcommands)
        sub.set_defaults(check=command.check, run=command.run)
        parser.subcommand_parsers[sub.prog.split()[-1]] = sub
    return parser


if __name__ == "__main__":
    sys.exit(main())
