"""The `hpdm` Typer application.

Each command is a plain function in its own module; this file registers them, in the order
`hpdm --help` lists them, and turns HPDMError into a message on stderr and the documented exit code.
"""

import sys
from typing import Annotated

import typer
from rich.markup import escape

from hpdm_cli import ablate, classifier, evaluate, prepare, sample, text, train
from hpdm_cli.common import Command, Group, stderr
from hpdm_core.errors import HPDMError
from hpdm_core.files import is_disk_full

app = typer.Typer(
    name="hpdm",
    help="Hierarchical Patch Diffusion Models: prepare data, train, sample, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
)


def _show_version(value: bool) -> None:
    if value:
        from hpdm_core import __version__

        typer.echo(f"hpdm {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True, metavar="",
                                                   help="Print hpdm's version and exit.")] = False) -> None:
    """Hierarchical Patch Diffusion Models: prepare data, train, sample, evaluate."""


app.command("info", cls=Command)(prepare.info)
app.command(cls=Command)(train.train)
app.command("train-classifier", cls=Command)(classifier.train_classifier_command)
app.command(cls=Command)(sample.sample)
app.command("eval-fvd", cls=Command)(evaluate.eval_fvd)
app.command("convert-i3d", cls=Command)(evaluate.convert_i3d)
app.command(cls=Command)(ablate.ablate)
app.add_typer(prepare.prepare_app, name="prepare")
app.command("encode-text", cls=Command)(text.encode_text)
app.command("random-text-encoder", cls=Command)(text.random_text_encoder)


def _fail(err: Exception | str, code: int) -> None:
    # soft_wrap: a path in a message stays on one line, copyable from a CI log
    stderr.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
    sys.exit(code)


def main() -> None:
    try:
        app()  # standalone: click reports usage errors itself, with exit code 2
    except HPDMError as err:
        _fail(err, err.exit_code)
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/]")
        sys.exit(130)
    except (OSError, RuntimeError) as err:  # a full disk, a file that vanished: the message, not a traceback
        if is_disk_full(err):  # a writer that no `atomic_write` / `reporting_full_disk` wraps
            where = f" while writing {err.filename}" if getattr(err, "filename", None) else ""
            _fail(f"the disk is full{where}: free some space and run the command again ({err})", 1)
        if isinstance(err, RuntimeError):
            raise
        _fail(err, 1)
