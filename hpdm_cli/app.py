"""The `hpdm` Typer application.

Each command lives in its own module that adds itself to `app` on import; this file only
collects them and turns HPDMError into a message on stderr and the documented exit code.
"""

import importlib
import sys

import typer
from rich.markup import escape


from hpdm_cli.common import stderr
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
    "hpdm_cli.train",
    "hpdm_cli.classifier",
    "hpdm_cli.sample",
    "hpdm_cli.evaluate",
    "hpdm_cli.ablate",
)



def _show_version(value: bool) -> None:
    if value:
        from hpdm_core import __version__

        typer.echo(f"hpdm {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                          help="Print hpdm's version and exit.")) -> None:
    """Hierarchical Patch Diffusion Models: prepare data, train, sample, evaluate."""


def _register() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name)


def _fail(err: Exception, code: int) -> None:
    # soft_wrap: a path in a message stays on one line, copyable from a CI log
    stderr.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
    sys.exit(code)


def main() -> None:
    _register()
    try:
        app()  # standalone: click reports usage errors itself, with exit code 2
    except HPDMError as err:
        _fail(err, err.exit_code)
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/]")
        sys.exit(130)
    except OSError as err:  # a full disk, a file that vanished: the message, not a traceback
        _fail(err, 1)
