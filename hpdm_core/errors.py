"""Errors that carry the process exit code the CLI reports (docs/design.md, "Conventions").

0 ok, 1 failure, 2 bad usage or bad input, 3 missing weights or data.
"""


class HPDMError(Exception):
    """A failure the user can act on; the message says what to fix."""

    exit_code = 1


class BadInputError(HPDMError):
    """Bad usage, a malformed file, an invalid config value."""

    exit_code = 2


class MissingResourceError(HPDMError):
    """Pretrained weights or a dataset that is not on this machine."""

    exit_code = 3


class DiskFullError(HPDMError):
    """A write ran out of disk space; the message names the folder and the space the file needs.

    Files are written to a temporary name first, so every earlier file (checkpoint, dataset) is intact."""

    exit_code = 1


class TrainingDivergedError(HPDMError):
    """A non-finite loss; the last good checkpoint is kept."""

    exit_code = 1


def check_count(name: str, value: object, low: int, high: int | None = None) -> None:
    """BadInputError unless `value` is an integer in low..high. Library messages name the setting or
    argument in backticks; a command says its flag instead (hpdm_cli.common.flags_for)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInputError(f"`{name}` must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"in {low}..{high}"
        raise BadInputError(f"`{name}` must be {bound}, got {value}")
