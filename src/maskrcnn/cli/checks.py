"""argparse value checks (`WholeNumber`, `EvalPeriod`, `Number`, `PositiveNumbers`, `OneOf`,
`Device`): `type=` callables that name their option in their errors; `cli.build_parser` tells
each the option it checks.
They raise OptionError (`errors`), not argparse's ArgumentTypeError, so that argparse
does not turn a wrong value into a usage message.
"""

import ipaddress
import math
import re

from maskrcnn import choices
from maskrcnn.config import written_number
from maskrcnn.errors import OptionError, shown


class Check:
    """An argparse `type=` callable that names its option in its errors."""

    accepted = ""
    option = "value"

    def named(self, option: str) -> "Check":
        self.option = option
        return self

    def fail(self, text: str) -> None:
        raise OptionError(f"{shown(self.option, text)}: expected {self.accepted}")


class WholeNumber(Check):
    """An integer within [low, high] (either may be None: unbounded)."""

    def __init__(self, low: int | None = None, high: int | None = None):
        self.low, self.high = low, high
        if low is not None and high is not None:
            self.accepted = f"a whole number from {low} to {high}"
        elif low is not None:
            self.accepted = f"a whole number >= {low}"
        else:
            self.accepted = "a whole number"

    def __call__(self, text: str) -> int:
        value = written_number(text)  # 300_000_000 and 1e9 read as a person writes them
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            self.fail(text)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            self.fail(text)
        return value


class EvalPeriod(WholeNumber):
    """solver.eval_period: "auto" or a whole number >= 0."""

    def __init__(self):
        super().__init__(0)
        self.accepted = "auto or a whole number >= 0"

    def __call__(self, text: str) -> int | str:
        return "auto" if text == "auto" else super().__call__(text)


class Number(Check):
    """A finite number within [low, high]."""

    def __init__(self, low: float, high: float):
        self.low, self.high = low, high
        self.accepted = f"a number from {low:g} to {high:g}"

    def __call__(self, text: str) -> float:
        value = written_number(text)
        if isinstance(value, str):
            self.fail(text)
        if not (math.isfinite(value) and self.low <= value <= self.high):
            self.fail(text)
        return value


class PositiveNumbers(Check):
    """Comma-separated finite numbers > 0, e.g. 0.05,0.05,0.1 (a tuple of floats)."""

    accepted = "comma-separated numbers > 0, e.g. 0.05,0.05,0.1"

    def __call__(self, text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(part) for part in text.split(","))
        except ValueError:
            self.fail(text)
        if not all(math.isfinite(v) and v > 0 for v in values):
            self.fail(text)
        return values


class OneOf(Check):
    """One of a few words (argparse's `choices`, with this module's message)."""

    def __init__(self, *choices: str):
        self.choices = choices
        self.accepted = "one of " + ", ".join(choices)

    def __call__(self, text: str) -> str:
        if text not in self.choices:
            self.fail(text)
        return text


class Device(Check):
    """The values the config's `device` takes (`choices.is_device`)."""

    @property
    def accepted(self) -> str:
        return choices.DEVICES_ACCEPTED

    def __call__(self, text: str) -> str:
        if not choices.is_device(text):
            self.fail(text)
        if text == "mps":  # (an unavailable CUDA is reported when the command sets its device up)
            import torch

            if not torch.backends.mps.is_available():
                raise OptionError(
                    f"{shown(self.option, text)}: this PyTorch or machine has no MPS (Apple GPU)"
                )
        return text


class Host(Check):
    """--host: an IP address (IPv4 or IPv6) or a host name; never empty, which would mean every
    interface to the socket library without the user having said so."""

    accepted = "an IP address or a host name, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (all interfaces)"
    _name = re.compile(
        r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
    )

    def __call__(self, text: str) -> str:
        try:
            ipaddress.ip_address(text)
            return text
        except ValueError:
            pass
        if not self._name.match(text) or text.replace(".", "").isdigit():  # 300.1.2.3 is no name
            self.fail(text)
        return text
