"""The `hpdm` Typer application.

Each command lives in its own module that adds itself to `app` on import; this file only
collects them and turns HPDMError into a message on stderr and the documented exit code.
"""

import importlib
import sys

import typer


from hpdm_core.errors import HPDMError

app = typer.Typer(
    name="hpdm",
    help="Hierarchical Patch Diffusion Models: prepare data, train, sample, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules, in the order `hpdm --help` lists them.
_COMMAND_MODULES = (
    "hpdm_cli.prepare",
)

from hpdm_cli.common import stderr


def _register() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name)


def main() -> None:
    _register()
    try:
        app(standalone_mode=False)
    except HPDMError as err:
        stderr.print(f"[bold red]error:[/] {err}")
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/]")
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        stderr.print("[yellow]aborted[/]")
        sys.exit(1)
    except Exception as err:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(2 if isinstance(err, click.exceptions.UsageError) else err.exit_code)
        raise
