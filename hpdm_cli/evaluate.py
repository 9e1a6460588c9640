"""`hpdm eval-fvd` (FVD and video IS) and `hpdm convert-i3d` (TF-Hub I3D -> state dict)."""

from __future__ import annotations

import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from hpdm_cli.common import INT64_MAX, flag, flags_for, print_json, say_flags, stderr, stdout


class ProtocolName(str, Enum):
    styleganv = "styleganv"
    tf = "tf"


# The library names its options (EvalOptions' fields); the user typed these flags.
FLAGS = {"i3d": "--i3d", "random_i3d_seed": "--random-i3d", "c3d": "--c3d", "c3d_mean": "--c3d-mean",
         "classifier": "--classifier", "protocol": "--protocol", "num": "--num", "frames": "--frames",
         "subsample": "--subsample", "resolution": "--resolution", "seed": "--seed", "batch_size": "--batch-size",
         "device": "--device", "repeat_real": "--repeat-real", "cache_dir": "--cache-dir", "use_cache": "--cache"}


def eval_fvd(
    real: Annotated[Path, typer.Option("--real", help="real videos: dataset file (.h5; UCF-101 train+test for the protocol)")],
    fake: Annotated[Path, typer.Option("--fake", help="generated videos: dataset file (.h5), folder of mp4/gif/avi, or .npz uint8 [N,F,H,W,3]")],
    i3d: Annotated[Optional[Path], typer.Option("--i3d", help="I3D weights: i3d_torchscript.pt, i3d_pretrained_400.pt, or a TF-Hub folder")] = None,
    c3d: Annotated[Optional[Path], typer.Option("--c3d", help="C3D for video IS: c3d_ucf101.pt or conv3d_deepnetA_ucf.npz")] = None,
    c3d_mean: Annotated[Optional[Path], typer.Option("--c3d-mean", help="mean2.npz for the npz C3D (default: the one beside it)")] = None,
    random_i3d: Annotated[Optional[int], typer.Option("--random-i3d", min=0, max=INT64_MAX, help="proxy FVD with a random-weight I3D of this seed (not a published metric)")] = None,
    protocol: Annotated[ProtocolName, typer.Option(help="styleganv (biased covariance) or tf (unbiased, TF1 resize)")] = ProtocolName.styleganv,
    num: Annotated[Optional[int], typer.Option(min=1, max=INT64_MAX, help="clips per side [2048]; e.g. 512 for FVD@512")] = None,
    frames: Annotated[Optional[int], typer.Option(min=1, max=1_000_000, help="frames per clip [16]")] = None,
    subsample: Annotated[int, typer.Option(min=1, max=1_000_000, help="take every n-th frame")] = 1,
    resolution: Annotated[Optional[int], typer.Option(max=65_536, help="resize clips to this square size before the networks (match the generator)")] = None,
    seed: Annotated[int, typer.Option(min=0, max=INT64_MAX, help="seed of the real clips' random start frames")] = 0,
    repeat_real: Annotated[bool, flag("--repeat-real/--no-repeat-real", "with fewer long-enough real videos than --num, take more clips per video (not a protocol: the result is not comparable)")] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=INT64_MAX, help="clips per forward pass")] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:n]")] = "auto",
    cache_dir: Annotated[Optional[Path], typer.Option(help="real-statistics cache root [$HPDM_CACHE or ~/.cache/hpdm]")] = None,
    cache: Annotated[bool, flag("--cache/--no-cache", "reuse cached real statistics (--no-cache: recompute them)")] = True,
    classifier: Annotated[Optional[Path], typer.Option("--classifier", help="a classifier from `hpdm train-classifier`: adds the accuracy of the requested classes and an FD in its features (alone, without --i3d/--random-i3d: FVD is skipped)")] = None,
    as_json: Annotated[bool, flag("--json", "print one JSON object")] = False,
) -> None:
    """FVD (I3D), with --c3d video Inception Score (C3D), with --classifier class accuracy and FD in
    the eyes of a classifier trained on your own data, of generated videos.

    Under torchrun every process embeds its share of the clips and rank 0 reports the merged result.
    """
    from hpdm_core import distributed as dist_lib
    from hpdm_core.metrics.options import EvalOptions

    distributed = dist_lib.launched()
    with dist_lib.process_group(device) as (env, run_device), flags_for(FLAGS):
        options = EvalOptions(i3d=i3d, random_i3d_seed=random_i3d, c3d=c3d, c3d_mean=c3d_mean, classifier=classifier,
                              protocol=protocol.value, num=num, frames=frames, subsample=subsample,
                              resolution=resolution, seed=seed, repeat_real=repeat_real, batch_size=batch_size,
                              device=run_device, cache_dir=cache_dir, use_cache=cache)
        result = _evaluate(real, fake, options, distributed, env.is_main)
    if result is None:  # not rank 0: its statistics were merged into rank 0's result
        return
    _report(result, as_json)


def _evaluate(real: Path, fake: Path, options, distributed: bool, is_main: bool) -> dict | None:
    from hpdm_core.metrics.fvd import evaluate

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=stderr, transient=True, disable=not is_main)
    tasks: dict[str, int] = {}

    def report(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(label, total=total or None)
        progress.update(tasks[label], completed=done)

    with progress, warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        return evaluate(real, fake, options, progress=report, distributed=distributed)


def _report(result: dict, as_json: bool) -> None:
    result["warnings"] = [say_flags(note, FLAGS) for note in result["warnings"]]
    for note in result["warnings"]:
        stderr.print(f"[yellow]warning:[/] {note}")
    for note in result.get("classifier_notes", []) + result.get("cache_notes", []):
        stderr.print(f"[yellow]note:[/] {note}")
    if as_json:
        print_json(result)
        return
    if result["fvd"] is None:  # --classifier alone
        table = Table(title="Generated videos in the classifier's eyes (FVD not computed: no --i3d or --random-i3d)")
        table.add_column("metric")
        table.add_column("value", justify="right")
        _classifier_rows(table, result)
        stdout.print(table)
        return
    name = f"FVD{'_' + str(result['frames']) if result['frames'] != 16 else ''}@{result['num']}"
    table = Table(title=f"{name} ({result['protocol']} protocol){' — PROXY, random I3D' if result['proxy'] else ''}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if "classifier_fd" in result:
        _classifier_rows(table, result)
    table.add_row(name + (" (proxy)" if result["proxy"] else ""), f"{result['fvd']:.2f}")
    if "is_mean" in result:
        table.add_row("IS (C3D, 10 splits)", f"{result['is_mean']:.2f} ± {result['is_std']:.2f}")
    table.add_row("real / generated clips", f"{result['real_clips']} / {result['fake_clips']}")
    table.add_row("detector", result["detector"])
    if result.get("detector_sha256"):
        table.add_row("detector sha256", f"{result['detector_sha256']} ({result['detector_weights']})")
    if result.get("classifier_sha256"):
        table.add_row("C3D sha256", result["classifier_sha256"])
    real = result.get("real_data")
    if real:
        table.add_row("real videos", f"{real['source'] or '?'} split {real['split'] or '?'}"
                      f"{' fold ' + str(real['fold']) if real['fold'] else ''}, {real['preparation']} frames, "
                      f"{real['videos']} videos at {'x'.join(map(str, real['resolution']))}")
    table.add_row("real statistics", "cached" if result["real_stats_cached"] else "computed")
    table.add_row("comparable", "yes" if result["comparable"] else "[yellow]no[/]")
    if result["comparable"] and result.get("comparable_with"):
        table.add_row("comparable with", result["comparable_with"])
    for reason in result["warnings"]:
        table.add_row("[yellow]not comparable[/]", reason)
    stdout.print(table)


def _classifier_rows(table: Table, result: dict) -> None:
    def share(value) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    table.add_row("classifier accuracy (requested class)", share(result["classifier_accuracy"]))
    fd = result["classifier_fd"]
    table.add_row("classifier FD (vs held-out real)", "n/a" if fd is None else f"{fd:.2f}")
    table.add_row(f"classifier accuracy, {result['classifier_real_videos']} held-out real",
                  share(result["classifier_real_accuracy"]))
    table.add_row("classifier", result["classifier_checkpoint"])


def convert_i3d(
    tfhub_dir: Annotated[Path, typer.Argument(help="unpacked TF-Hub module deepmind/i3d-kinetics-400/1")],
    out: Annotated[Path, typer.Option("--out", "-o", help="state dict to write (pytorch-i3d layout, .pt)")],
    overwrite: Annotated[bool, flag("--overwrite/--no-overwrite", "replace an existing --out")] = False,
    as_json: Annotated[bool, flag("--json", "print one JSON object")] = False,
) -> None:
    """Convert the TF-Hub I3D (needs hpdm's tfhub extra) into a state dict for --i3d."""
    import torch

    from hpdm_core.errors import MissingResourceError
    from hpdm_core.files import atomic_save, check_output
    from hpdm_core.metrics.tfhub_convert import convert_tfhub_i3d, is_tfhub_folder, tf_variable_name

    check_output(out, overwrite)
    if not is_tfhub_folder(tfhub_dir):
        raise MissingResourceError(f"{tfhub_dir} is not a TF-Hub module folder (saved_model.pb, variables/): "
                                   "download deepmind/i3d-kinetics-400/1 from tfhub.dev / Kaggle Models and unpack it")
    state = convert_tfhub_i3d(tfhub_dir)
    atomic_save(out, lambda tmp: torch.save(state, tmp))
    info = {"out": str(out), "variables": sum(tf_variable_name(k) is not None for k in state),
            "parameters": sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))}
    if as_json:
        print_json(info)
    else:
        stdout.print(f"wrote {out} ({info['variables']} TF variables, {info['parameters']:,} values)")
