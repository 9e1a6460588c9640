"""`hpdm train-classifier`: a small video classifier on a dataset file's own labels, for eval-fvd --classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from hpdm_cli.common import INT64_MAX, PlainProgress, flag, print_json, stderr, stdout
from hpdm_core.files import check_output

PLAIN_LOG_SECONDS = 10.0  # without a terminal (CI logs), one progress line this often (a short job)


def train_classifier_command(
    data: Annotated[Path, typer.Option("--data", help="labelled dataset file from `hpdm prepare` (.h5)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="classifier checkpoint to write (.pt)")],
    frames: Annotated[int, typer.Option(min=1, max=1_000_000, help="frames per clip")] = 16,
    resolution: Annotated[Optional[int], typer.Option(min=1, max=65_536, help="square frame size it looks at (default: the file's, at most 32)")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, max=INT64_MAX, help="training steps [200; raise it for large sets such as UCF-101]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, max=INT64_MAX, help="clips per step [32]")] = None,
    width: Annotated[Optional[int], typer.Option(min=1, max=INT64_MAX, help="channels of the first stage; features have 8 x width [16]")] = None,
    lr: Annotated[Optional[float], typer.Option(min=0.0, help="AdamW learning rate [3e-3]")] = None,
    flip: Annotated[bool, flag("--flip/--no-flip", "random horizontal flips (off for classes that differ by left and right)")] = True,
    holdout: Annotated[float, typer.Option(min=0.0, max=0.99, help="share of each class's videos (whole groups) kept unseen")] = 0.1,
    seed: Annotated[int, typer.Option(min=0, max=INT64_MAX, help="seed of the split, the initialisation and the clips")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:n]")] = "auto",
    overwrite: Annotated[bool, flag("--overwrite/--no-overwrite", "replace an existing --out")] = False,
    as_json: Annotated[bool, flag("--json", "print one JSON object")] = False,
) -> None:
    """Train a small 3-D conv classifier on the labels of a dataset file.

    It keeps a held-out share of the videos unseen; `hpdm eval-fvd --classifier` then reports how often
    generated videos are recognised as their requested class and a Fréchet distance in its features
    against those held-out real videos. No download needed: works for any labelled dataset.
    """
    from hpdm_core.distributed import resolve_device
    from hpdm_core.metrics.classifier import train_classifier

    check_output(out, overwrite)
    run_device = str(resolve_device(device))
    given = {"steps": steps, "batch_size": batch_size, "width": width, "lr": lr}  # None: the library's default
    options = {key: value for key, value in given.items() if value is not None}
    stderr.print(f"[bold]hpdm train-classifier[/] {data} -> {out} on {run_device}")
    plain = not stderr.is_terminal
    lines = None  # the total is known at the first report
    columns = (MofNCompleteColumn(), BarColumn(bar_width=12), TextColumn("{task.fields[stats]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True, disable=plain) as progress:
        task = progress.add_task("train", total=None, stats="")

        def report(step: int, total: int, stats: dict) -> None:
            text = f"loss {stats['loss']:.3f} batch accuracy {stats['batch_accuracy']:.2f}"
            progress.update(task, completed=step, total=total, stats=text)
            nonlocal lines
            lines = lines or PlainProgress("steps", total, enabled=plain, every=PLAIN_LOG_SECONDS)
            if lines.due(step):
                stderr.print(f"step {step}/{total} {text}", highlight=False)

        summary = train_classifier(data, out, frames=frames, resolution=resolution, holdout=holdout, seed=seed,
                                   device=run_device, progress=report, flip=flip, **options)
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"classifier {out}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    share = (lambda value: "n/a" if value is None else f"{value:.1%}")
    table.add_row(f"held-out accuracy ({summary['heldout_videos']} videos)", share(summary["heldout_accuracy"]))
    table.add_row("train accuracy", share(summary["train_accuracy"]))
    table.add_row("classes / train videos", f"{summary['classes']} / {summary['train_videos']}")
    table.add_row("clips", f"{summary['frames']} x {summary['resolution']} x {summary['resolution']}")
    table.add_row("steps / seconds", f"{summary['steps']} / {summary['seconds']:.0f}")
    table.add_row("parameters", f"{summary['parameters']:,}")
    stdout.print(table)
