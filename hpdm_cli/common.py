"""What every command shares: the stderr console for progress and messages, JSON on stdout."""

import json
import sys
import time
from typing import Any

from rich.console import Console

# Results go to stdout; progress bars and messages to stderr (DESIGN.md, Conventions).
stderr = Console(stderr=True)
stdout = Console()

PLAIN_LOG_SECONDS = 30.0  # without a terminal (CI logs): a plain progress line at least this often


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

    def __init__(self, label: str, total: int, enabled: bool, every: float = PLAIN_LOG_SECONDS):
        self.label, self.total, self.enabled, self.every = label, total, enabled, every
        self.done, self.start, self.last = 0, time.monotonic(), None

    def update(self, advance: int) -> None:
        self.done += advance
        now = time.monotonic()
        if not self.enabled or (self.last is not None and now - self.last < self.every
                                    and self.done < self.total):
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / max(rate, 1e-9)
        plain_line(f"{self.label} {self.done}/{self.total} {100 * self.done / max(self.total, 1):.0f}% "
                   f"{rate:.2f} {self.label}/s elapsed {(now - self.start) / 60:.1f} min eta {eta / 60:.1f} min")
