"""`hpdm prepare ucf101|synthetic` and `hpdm info`: make a dataset file, check and summarise one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from hpdm_cli.common import INT64_MAX, Command, Group, flag, print_json, stderr, stdout
from hpdm_core.data.h5store import VideoStore
from hpdm_core.data.synthetic import make_synthetic
from hpdm_core.data.ucf101 import prepare_ucf101
from hpdm_core.files import check_free_space, check_output, lock_output, reporting_full_disk

prepare_app = typer.Typer(help="Pack videos into one HDF5 dataset file.", no_args_is_help=True, cls=Group)


def _progress() -> Progress:
    # No refresh thread (updates refresh the bar): decoding workers can then be forked safely.
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=stderr, transient=True, auto_refresh=False)


def _print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        print_json(summary)
        return
    table = Table(show_header=False, box=None)
    for key, value in summary.items():
        table.add_row(f"[bold]{key}[/]", str(value))
    stdout.print(table)


@prepare_app.command("ucf101", cls=Command)
def ucf101(
    src: Annotated[Path, typer.Argument(help="UCF-101 folder: UCF-101/<Class>/*.avi and ucfTrainTestlist/")],
    out: Annotated[Path, typer.Option("--out", "-o", help="dataset file to write (.h5)")],
    split: Annotated[str, typer.Option(help="train, test, or all (train+test: the FVD protocol)")] = "all",
    fold: Annotated[int, typer.Option(min=1, max=3, help="official split fold: 1, 2 or 3")] = 1,
    resolution: Annotated[int, typer.Option(help="shorter side resized to this, then centre-cropped square")] = 256,
    fps: Annotated[Optional[float], typer.Option(help="resample to this frame rate by frame index [native]")] = None,
    max_frames: Annotated[Optional[int], typer.Option(min=1, max=INT64_MAX, help="keep at most this many frames per video")] = None,
    workers: Annotated[int, typer.Option(min=1, max=1024, help="decoding processes")] = max(1, min(8, os.cpu_count() or 1)),
    compression: Annotated[str, typer.Option(help="HDF5 compression of the frames: none, lzf or gzip")] = "none",
    preparation: Annotated[str, typer.Option(help="area (area resize, centre crop) or styleganv (StyleGAN-V's "
                                             "frames: PIL LANCZOS, centre crop, a JPEG round trip; for "
                                             "comparable FVD)")] = "area",
    restart: Annotated[bool, flag("--restart/--no-restart", "discard an interrupted run's decoded videos")] = False,
    overwrite: Annotated[bool, flag("--overwrite/--no-overwrite", "replace an existing --out made otherwise (a finished run with the same arguments is kept)")] = False,
    as_json: Annotated[bool, flag("--json", "print the result as one JSON object")] = False,
) -> None:
    """Decode UCF-101 videos (resumable: rerun the same command after a crash)."""
    with _progress() as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task("decoding" if phase == "decode" else "packing", total=total)
            bar.update(tasks[phase], completed=done, refresh=True)

        report = prepare_ucf101(src, out, split, fold, resolution, fps, max_frames, workers,
                                compression, restart, progress, overwrite=overwrite, preparation=preparation)
    for name, reason in report.failed:
        stderr.print(f"[yellow]skipped[/] {name}: {reason}")
    if report.up_to_date:
        stderr.print(f"{out} is already complete with these arguments; nothing to do")
    stderr.print(f"[green]wrote[/] {report.out}: {report.videos} videos, {report.frames} frames; decoded "
                 f"{report.decoded}, resumed {report.reused}, skipped {len(report.failed)} unreadable "
                 f"({report.seconds:.1f} s)")
    if as_json:
        print_json(report.to_dict())


@prepare_app.command("synthetic", cls=Command)
def synthetic(
    out: Annotated[Path, typer.Option("--out", "-o", help="dataset file to write (.h5)")],
    num_videos: Annotated[int, typer.Option(min=1, max=INT64_MAX, help="number of videos")] = 256,
    frames: Annotated[int, typer.Option(min=1, max=1_000_000, help="frames per video")] = 32,
    resolution: Annotated[int, typer.Option(help="frame height and width")] = 64,
    classes: Annotated[int, typer.Option(
        help="classes (each a shape and colour pair; up to 7 have distinct colours)")] = 4,
    seed: Annotated[int, typer.Option(min=0, max=INT64_MAX, help="random seed; the same seed writes the same videos")] = 0,
    fps: Annotated[float, typer.Option(help="frame rate stored with the videos")] = 8.0,
    compression: Annotated[str, typer.Option(help="HDF5 compression of the frames: none, lzf or gzip")] = "none",
    overwrite: Annotated[bool, flag("--overwrite/--no-overwrite", "replace an existing --out")] = False,
    as_json: Annotated[bool, flag("--json", "print the file summary as one JSON object")] = False,
) -> None:
    """Write procedural videos: one moving object whose shape and colour follow the class."""
    check_output(out, overwrite)
    size = num_videos * frames * resolution ** 2 * 3  # uncompressed frames
    if compression == "none":
        check_free_space(out, size, "the dataset file")
    # One writer per --out: the others exit 2 naming it, before they create anything.
    with lock_output(out), _progress() as bar, reporting_full_disk(out, size, "the dataset file (uncompressed)"):
        check_output(out, overwrite)  # again, under the lock: a writer that just finished made it
        task = bar.add_task("generating", total=num_videos)
        path = make_synthetic(out, num_videos, frames, resolution, classes, seed, fps, compression,
                              progress=lambda done, total: bar.update(task, completed=done, refresh=True))
    stderr.print(f"[green]wrote[/] {path}")
    store = VideoStore(path)
    _print_summary(store.summary(), as_json)
    store.close()


def info(
    path: Annotated[Path, typer.Argument(help="dataset file (.h5) made by `hpdm prepare`")],
    as_json: Annotated[bool, flag("--json", "print one JSON object")] = False,
) -> None:
    """Check a dataset file and print its summary."""
    store = VideoStore(path)
    store.verify()
    _print_summary(store.summary(), as_json)
    store.close()
