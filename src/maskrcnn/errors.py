"""The error a user's input raises, and how an error's message becomes one line.

`OptionError`: a value the user gave (an option, a path, a config key) that cannot be used. Its
message is one line, "<option> <value>: <problem>", naming the option as the command line
spells it (`--out`, `--train-images`), or the config key and where its value came from
(`data.train_images=... (from configs/shapes.yaml)`). The command line prints it as
`error: <message>` and exits with code 2 (`cli.main`); nothing else prints errors.
"""

import contextlib
import shlex


class OptionError(Exception):
    """A command-line value (or a path from a config) that cannot be used; one line.

    Not a ValueError: argparse takes a ValueError from a `type=` callable for its own kind of
    failure and prints a usage message with a message of its own instead of this one."""


def shown(option: str, value, origin: str = "") -> str:
    """An option and its value as the user gave them: `--out 'my runs'` for a command-line
    option (quoted as a shell would take it back), `data.train_images=x (from a.yaml)` for a
    config key, with where its value came from."""
    if option.startswith("-") or not option.islower():  # --out, or a metavar such as OUT.onnx
        return f"{option} {shlex.quote(str(value))}"
    return f"{option}={shlex.quote(str(value))}" + (f" (from {origin})" if origin else "")


def one_line(error: BaseException) -> str:
    """An error's message as one line. A DataLoader worker's error arrives with the worker's
    traceback in its message ("Caught ValueError in DataLoader worker process 0. Original
    Traceback ..."): its last line is the original message."""
    message = str(error)
    if "Original Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        kind, sep, rest = last.partition(": ")
        message = rest if sep and kind.replace(".", "_").isidentifier() else last
    return " ".join(message.split())


@contextlib.contextmanager
def user_errors(*kinds: type[BaseException]):
    """Within this block an error of `kinds` (what the work raises for a bad file, a model that
    does not fit, ...) is the user's to mend: an OptionError with its message as one line."""
    try:
        yield
    except kinds as error:
        raise OptionError(one_line(error)) from None
