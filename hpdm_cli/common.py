"""What every command shares: the stderr console for progress and messages, JSON on stdout."""

import json
import sys
from typing import Any

from rich.console import Console

# Results go to stdout; progress bars and messages to stderr (DESIGN.md, Conventions).
stderr = Console(stderr=True)
stdout = Console()


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()
