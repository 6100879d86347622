"""argparse as the `maskrcnn` commands use it.

- Errors are raised (`UsageError`, carrying the parser of the subcommand that failed), not
  printed: `cli.main` prints that subcommand's usage and one `error:` line, and a misspelt
  option gets a "did you mean ...?" (`unrecognized`).
- A value check from `cli_checks` given as `type=` learns the option it checks, so that its
  error names the option as the command line spells it.
- Options are never abbreviated: `--val` is make-shapes' own option, not a prefix of train's
  `--val-json`, and an error names what the user typed.
- `--help` shows each option's default, where it has one worth saying.
"""

import argparse
import difflib

from maskrcnn.cli.checks import Check, OneOf


class UsageError(Exception):
    """argparse could not make sense of the command line; `parser` is the (sub)command's parser."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser


class CommandParser(argparse.ArgumentParser):
    """argparse with errors raised, no abbreviated options and value checks that name their option."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(allow_abbrev=False, **kwargs)

    def add_argument(self, *names, **kwargs):
        check = kwargs.get("type")
        if isinstance(check, OneOf) and "metavar" not in kwargs:
            kwargs["metavar"] = "{" + ",".join(check.choices) + "}"
        action = super().add_argument(*names, **kwargs)
        if isinstance(check, Check):
            check.named(action.option_strings[0] if action.option_strings else action.metavar)
        return action

    def error(self, message: str):
        raise UsageError(self, message)


class HelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, when it has one worth saying (not None, not
    the False of a flag); options without one say in words what happens when they are not given,
    and an option whose help already says its default is not told twice."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        default = action.default
        if not action.option_strings or "(default" in help_text or action.required:
            return help_text
        if default is None or default is False or default is argparse.SUPPRESS:
            return help_text
        return f"{help_text} (default: %(default)s)"


def unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> UsageError:
    """The error for arguments `parser` does not know, with the closest option it does know."""
    message = f"unrecognized arguments: {' '.join(extras)}"
    unknown = next((e.partition("=")[0] for e in extras if e.startswith("-")), None)
    known = [name for action in parser._actions for name in action.option_strings]
    close = difflib.get_close_matches(unknown, known, n=1) if unknown else []
    if close:
        message += f"; did you mean {close[0]}?"
    return UsageError(parser, message)
