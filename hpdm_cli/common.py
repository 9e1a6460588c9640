"""What every command shares: the stderr console for progress and messages, JSON on stdout."""

import contextlib
import json
import sys
import time
from typing import Any, Iterator

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from hpdm_core.errors import HPDMError

# Results go to stdout; progress bars and messages to stderr (docs/design.md, "Conventions").
stderr = Console(stderr=True)
stdout = Console()

INT64_MAX = 2 ** 63 - 1  # TOML's integers and torch's seeds hold no more: the cap of every count and seed option

PLAIN_LOG_SECONDS = 30.0  # without a terminal (CI logs): a plain progress line at least this often


def flag(names: str, help: str) -> Any:
    """A boolean option shown in --help as the flag it is (`--x/--no-x`), without a `<bool>` value column."""
    return typer.Option(names, help=help, metavar="")


def _help_as_flag(option: Any) -> Any:
    if option is not None:
        option.metavar = ""  # as flag() does for our own switches: no `<bool>` value column
    return option


class Command(TyperCommand):
    """A command whose --help shows as the flag it is (Click adds that option itself, typed as a bool)."""

    def get_help_option(self, ctx: Any) -> Any:
        return _help_as_flag(super().get_help_option(ctx))


class Group(TyperGroup):
    """A command group whose --help shows as the flag it is."""

    def get_help_option(self, ctx: Any) -> Any:
        return _help_as_flag(super().get_help_option(ctx))


def say_flags(text: str, flags: dict[str, str]) -> str:
    """The library's words for the command's user: each setting or argument it names in backticks
    (`num`, `data.path`) that a flag of this command sets becomes that flag (--num)."""
    for name, option in flags.items():
        text = text.replace(f"`{name}`", option)
    return text


@contextlib.contextmanager
def flags_for(flags: dict[str, str]) -> Iterator[None]:
    """Library errors raised inside, with the settings and arguments they name said as this command's flags."""
    try:
        yield
    except HPDMError as error:
        message = say_flags(str(error), flags)
        if message == str(error):
            raise
        raise type(error)(message) from error


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def plain_line(text: str) -> None:
    """One whole line on stderr: never wrapped or cut at the console width, no markup or colour guessing."""
    stderr.print(text, soft_wrap=True, highlight=False, markup=False)


class PlainProgress:
    """Progress as plain lines (`tiles 120/480 25% 3.20 tiles/s ... eta 1.9 min`), for logs where a live bar
    shows up only at the end: the first update, then every PLAIN_LOG_SECONDS, and the last one.
    Disabled, it prints nothing (a terminal shows the Rich bar instead)."""

    def __init__(self, label: str, total: int, enabled: bool, every: float = PLAIN_LOG_SECONDS, done: int = 0):
        self.label, self.total, self.enabled, self.every = label, total, enabled, every
        self.done, self.start, self.last = done, time.monotonic(), None

    def due(self, done: int, force: bool = False) -> bool:
        """Record progress `done`; whether a line is due now (always when forced)."""
        self.done = done
        now = time.monotonic()
        if not self.enabled or not (force or self.last is None or now - self.last >= self.every
                                    or self.done >= self.total):
            return False
        self.last = now
        return True

    def update(self, advance: int) -> None:
        if not self.due(self.done + advance):
            return
        now = time.monotonic()
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / max(rate, 1e-9)
        plain_line(f"{self.label} {self.done}/{self.total} {100 * self.done / max(self.total, 1):.0f}% "
                   f"{rate:.2f} {self.label}/s elapsed {(now - self.start) / 60:.1f} min eta {eta / 60:.1f} min")
