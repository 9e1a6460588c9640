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



def _register() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name)


def main() -> None:
    _register()
    try:
        app()  # standalone: click reports usage errors itself, with exit code 2
    except HPDMError as err:
        stderr.print(f"[bold red]error:[/] {escape(str(err))}")
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/]")
        sys.exit(130)
