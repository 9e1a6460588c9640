"""`hpdm prepare ucf101|folder|images|synthetic` and `hpdm info`: make a dataset file, check and summarise one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from hpdm_cli.common import INT64_MAX, Command, Group, flag, print_json, stderr, stdout
from hpdm_core.data.folder import DEFAULT_FRAMES_FPS, prepare_folder
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
    _run_decoding(lambda progress: prepare_ucf101(src, out, split, fold, resolution, fps, max_frames, workers,
                                                  compression, restart, progress, overwrite=overwrite,
                                                  preparation=preparation), out, as_json)


def _run_decoding(prepare, out: Path, as_json: bool) -> None:
    """Run a decoding prepare with progress bars, then report skipped files and the result."""
    with _progress() as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task("decoding" if phase == "decode" else "packing", total=total)
            bar.update(tasks[phase], completed=done, refresh=True)

        report = prepare(progress)
    for name, reason in report.failed:
        stderr.print(f"[yellow]skipped[/] {name}: {reason}")
    if report.up_to_date:
        stderr.print(f"{out} is already complete with these arguments; nothing to do")
    stderr.print(f"[green]wrote[/] {report.out}: {report.videos} videos, {report.frames} frames; decoded "
                 f"{report.decoded}, resumed {report.reused}, skipped {len(report.failed)} unreadable "
                 f"({report.seconds:.1f} s)")
    if as_json:
        print_json(report.to_dict())


_SOURCE_HELP = ("folder searched recursively: video files (mp4, avi, webm, mov, mkv, gif) or folders of numbered "
                "png/jpg frames, one per video; SRC/<class>/... gives classes")
_CAPTIONS_HELP = ("captions file: .jsonl lines {\"video\": relative path, \"caption\": text}, or a .csv "
                  "(WebVid: --path-column videoid --caption-column name) [SRC/captions.jsonl if present]; "
                  "a .txt beside a video with its base name captions it too")


# Options `prepare folder` and `prepare images` share.
OutOption = Annotated[Path, typer.Option("--out", "-o", help="dataset file to write (.h5)")]
ResolutionOption = Annotated[int, typer.Option(help="shorter side resized to this, then centre-cropped square")]
ClassesOption = Annotated[Optional[bool], flag(
    "--classes/--no-classes", "label each by its first sub-folder (default: on when every file is in one)")]
CaptionsOption = Annotated[Optional[Path], typer.Option(help=_CAPTIONS_HELP)]
PathColumnOption = Annotated[str, typer.Option(help="CSV captions: the column with the video path or id")]
CaptionColumnOption = Annotated[str, typer.Option(help="CSV captions: the column with the caption")]
WorkersOption = Annotated[int, typer.Option(help="decoding processes")]
CompressionOption = Annotated[str, typer.Option(help="HDF5 compression of the frames: none, lzf or gzip")]
RestartOption = Annotated[bool, flag("--restart/--no-restart", "discard an interrupted run's decoded files")]
OverwriteOption = Annotated[bool, flag("--overwrite/--no-overwrite", "replace an existing --out made otherwise "
                                       "(a finished run with the same arguments and captions is kept)")]
JsonOption = Annotated[bool, flag("--json", "print the result as one JSON object")]
DEFAULT_WORKERS = max(1, min(8, os.cpu_count() or 1))


def _run_folder(src: Path, out: Path, as_json: bool, images: bool, **options) -> None:
    def prepare(progress):
        report = prepare_folder(src, out, progress=progress, images=images, **options)
        for path in report.unmatched_captions:
            stderr.print(f"[yellow]caption not used[/] {path}: no such {'image' if images else 'video'} under {src}")
        shown = ", ".join(report.classes[:8]) + (", ..." if len(report.classes) > 8 else "")
        stderr.print(f"{report.captioned} of {report.videos} captioned; {len(report.classes)} classes"
                     + (f" ({shown})" if report.classes else ""))
        return report

    _run_decoding(prepare, out, as_json)


@prepare_app.command("folder", cls=Command)
def folder(
    src: Annotated[Path, typer.Argument(help=_SOURCE_HELP)],
    out: OutOption,
    resolution: ResolutionOption = 256,
    fps: Annotated[Optional[float], typer.Option(help="resample to this frame rate by frame index [native]")] = None,
    max_frames: Annotated[Optional[int], typer.Option(help="keep at most this many frames per video")] = None,
    frames_fps: Annotated[float, typer.Option(help="frame rate of the folders of frames")] = DEFAULT_FRAMES_FPS,
    classes: ClassesOption = None,
    captions: CaptionsOption = None,
    path_column: PathColumnOption = "video",
    caption_column: CaptionColumnOption = "caption",
    workers: WorkersOption = DEFAULT_WORKERS,
    compression: CompressionOption = "none",
    restart: RestartOption = False,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Decode any folder of videos, with classes and captions (resumable: rerun the same command after a crash)."""
    _run_folder(src, out, as_json, False, resolution=resolution, fps=fps, max_frames=max_frames,
                frames_fps=frames_fps, classes=classes, captions=captions, path_column=path_column,
                caption_column=caption_column, workers=workers, compression=compression, restart=restart,
                overwrite=overwrite)


@prepare_app.command("images", cls=Command)
def images(
    src: Annotated[Path, typer.Argument(help="folder searched recursively for images (png, jpg, webp); "
                                        "SRC/<class>/... gives classes")],
    out: OutOption,
    resolution: ResolutionOption = 256,
    classes: ClassesOption = None,
    captions: CaptionsOption = None,
    path_column: PathColumnOption = "video",
    caption_column: CaptionColumnOption = "caption",
    workers: WorkersOption = DEFAULT_WORKERS,
    compression: CompressionOption = "none",
    restart: RestartOption = False,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Pack a folder of images as 1-frame entries (kind=images: still videos for joint image+video training)."""
    _run_folder(src, out, as_json, True, resolution=resolution, classes=classes, captions=captions,
                path_column=path_column, caption_column=caption_column, workers=workers,
                compression=compression, restart=restart, overwrite=overwrite)


@prepare_app.command("synthetic", cls=Command)
def synthetic(
    out: Annotated[Path, typer.Option("--out", "-o", help="dataset file to write (.h5)")],
    num_videos: Annotated[int, typer.Option(min=1, max=INT64_MAX, help="number of videos")] = 256,
    frames: Annotated[int, typer.Option(min=1, max=1_000_000, help="frames per video")] = 32,
    resolution: Annotated[int, typer.Option(help="frame height and width")] = 64,
    classes: Annotated[int, typer.Option(
        help="classes (each a shape and colour pair; up to 7 have distinct colours); not with --captions")] = 4,
    seed: Annotated[int, typer.Option(min=0, max=INT64_MAX, help="random seed; the same seed writes the same videos")] = 0,
    fps: Annotated[float, typer.Option(help="frame rate stored with the videos")] = 8.0,
    compression: Annotated[str, typer.Option(help="HDF5 compression of the frames: none, lzf or gzip")] = "none",
    captions: Annotated[bool, flag("--captions/--no-captions", "colour and shape drawn independently (classes: "
                                   "every pair), a caption per video naming colour, shape and motion")] = False,
    colours: Annotated[int, typer.Option(help="--captions: use the first this many colours (up to 7)")] = 4,
    shapes: Annotated[int, typer.Option(help="--captions: use the first this many shapes (up to 6)")] = 4,
    holdout_pairs: Annotated[int, typer.Option(
        help="--captions: leave this many (colour, shape) pairs out of the file (attrs holdout_pairs)")] = 0,
    still: Annotated[bool, flag("--still/--no-still", "single frames of the same classes (kind=images), for "
                                "joint image+video training")] = False,
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
                              progress=lambda done, total: bar.update(task, completed=done, refresh=True),
                              captions=captions, colours=colours, shapes=shapes, holdout_pairs=holdout_pairs,
                              still=still)
    stderr.print(f"[green]wrote[/] {path}")
    store = VideoStore(path)
    _print_summary(store.summary(), as_json)
    store.close()


def info(
    path: Annotated[Path, typer.Argument(help="dataset file (.h5) made by `hpdm prepare`")],
    as_json: Annotated[bool, flag("--json", "print one JSON object")] = False,
) -> None:
    """Check a dataset file and print its summary."""
    from hpdm_core.text.store import has_embeddings

    store = VideoStore(path)
    store.verify()
    summary = store.summary()
    text = has_embeddings(path)
    if text:  # `hpdm encode-text` was run on it
        summary["text_encoder"] = {key: text.get(key) for key in ("encoder", "dim", "max_tokens", "fingerprint",
                                                                  "random_weights", "captioned", "truncated")}
    _print_summary(summary, as_json)
    store.close()
