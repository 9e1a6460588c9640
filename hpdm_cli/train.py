"""`hpdm train`: patch-hierarchy training, one process or under torchrun (DDP / FSDP); resumes from the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hpdm_cli.common import INT64_MAX, PlainProgress, flag, flags_for, plain_line, print_json, stderr, stdout
from hpdm_core.errors import BadInputError


# What the library's messages name (setup_run's and build_config's arguments, config settings), as flags.
FLAGS = {"data": "--data", "run_dir": "--run-dir", "steps": "--steps", "images": "--images",
         "train.init_from": "--init-from", "config": "--preset/--config/--set", "overrides": "--set",
         "batch_size": "--batch-size", "preset_name": "--preset NAME", "config_file": "--config FILE"}


def train(
    data: Annotated[Optional[Path], typer.Option("--data", help="Dataset file from `hpdm prepare` (required for a new run).")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="tiny, hpdm-s, hpdm-m or hpdm-l.")] = None,
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Run folder: config, checkpoints, metrics. Resumed if it exists.")] = ...,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, max=INT64_MAX, help="Total steps of the run (a resumed run stops there too).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file applied over the preset.")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="section.key=value, e.g. model.fusion=shallow (repeatable).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, max=INT64_MAX, help="Shortcut for --set train.batch_size=N.")] = None,
    init_from: Annotated[Optional[Path], typer.Option("--init-from", help="Start a NEW run from this run folder's (or checkpoint's) EMA weights: more levels, another patch size; the other settings as there.")] = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="Image file (`hpdm prepare images`) mixed into every step as still videos: train.image_batch_size rows.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda (under torchrun: cuda:LOCAL_RANK).")] = "auto",
    fsdp: Annotated[bool, flag("--fsdp/--no-fsdp", "Under torchrun: shard every RIN block with FSDP2 instead of DDP.")] = False,
    json_out: Annotated[bool, flag("--json", "Print the final summary as JSON on stdout.")] = False,
) -> None:
    """Train HPDM on nested patch hierarchies (LAMB, warm-up + cosine, EMA).

    Launched by torchrun (`torchrun --nproc_per_node=N -m hpdm_cli train ...`) it trains with DDP (or
    FSDP with --fsdp) on the global batch train.batch_size split over the N processes.
    """
    from hpdm_core import distributed as dist_lib
    from hpdm_core.files import unlock_run_dir

    if fsdp and not dist_lib.launched():
        raise BadInputError("--fsdp shards the model over processes: launch with torchrun --nproc_per_node=N")
    try:
        with dist_lib.process_group(device) as (env, run_device):
            with flags_for(FLAGS):
                _train(data, preset, run_dir, steps, config, overrides, batch_size, run_device, fsdp, json_out, env,
                       init_from, images)
    finally:
        unlock_run_dir(run_dir)  # taken by setup_run on rank 0; the OS drops it anyway when the process ends


def _train(data, preset, run_dir, steps, config, overrides, batch_size, device, fsdp, json_out, env,
           init_from=None, images=None) -> None:
    from hpdm_core.config import build_config
    from hpdm_core.training import Trainer, setup_run

    from hpdm_core.memory import check_fits, training_step_bytes

    if init_from is not None:
        if preset is None and config is None:
            raise BadInputError("--init-from starts a new run: give its config with --preset NAME or --config FILE "
                                "(e.g. the source's preset, with more levels)")
        overrides = [*(overrides or []), f"train.init_from={init_from}"]
    asked = preset is not None or config is not None or overrides or batch_size is not None
    requested = build_config(preset, config, overrides, batch_size) if asked else None  # None: resume as saved
    if requested is not None:  # a new or changed batch: refused before the run folder is touched
        check_fits(training_step_bytes(requested, env.world_size), device, f"a training step of batch "
                   f"{requested.train.batch_size}", "lower --batch-size or raise train.accumulation")
    cfg, resumed = setup_run(run_dir, requested, data=data, steps=steps, images=images)
    trainer = Trainer(cfg, run_dir, device=device, rank=env.rank, world_size=env.world_size, fsdp=fsdp)
    start = trainer.resume()
    if not env.is_main:  # the other ranks train silently
        trainer.fit()
        return
    t = cfg.train
    parallel = f" x {env.world_size} processes ({'FSDP' if fsdp else 'DDP'})" if env.world_size > 1 else ""
    stderr.print(f"[bold]hpdm train[/] {run_dir}: {trainer.num_parameters:,} parameters on {trainer.device}{parallel}, "
                 f"batch {t.batch_size}, target {'x'.join(map(str, cfg.model.target))} from "
                 f"{cfg.model.num_levels} levels of {'x'.join(map(str, cfg.model.patch))} patches")
    clips = trainer.open_data()
    skipped = f" ({clips.skipped} too short for a clip, left out)" if clips.skipped else ""
    stderr.print(f"data {cfg.data.path}: {len(clips)} videos{skipped}")
    if cfg.model.conditioning == "text":
        from hpdm_core.text.store import has_embeddings

        text = has_embeddings(cfg.data.path) or {}
        random = " [bold yellow](RANDOM WEIGHTS: a demo encoder, not a trained T5)[/]" if text.get("random_weights") else ""
        stderr.print(f"text: {text.get('captioned', '?')} captions encoded by {text.get('encoder', '?')} "
                     f"(width {text.get('dim', '?')}, {text.get('max_tokens', '?')} tokens){random}")
    if t.image_batch_size:
        stderr.print(f"images {cfg.data.image_path}: {len(trainer.open_image_data())} still images, "
                     f"{t.image_batch_size} rows per step beside {t.batch_size} video rows")
    if trainer.init_report is not None:
        _print_init_report(trainer.init_report, run_dir)
    if cfg.model.conditioning == "class" and len(clips) and (clips.labels < 0).all():
        stderr.print(f"[yellow]warning:[/] every video in {cfg.data.path} is unlabelled (label -1): the model learns "
                     "the null class only, so --class and --guidance at sampling mean nothing; prepare labelled "
                     "videos for a class-conditional model")
    for note in trainer.resume_notes:
        stderr.print(f"[yellow]warning:[/] {note}")
    if resumed and start:
        stderr.print(f"resuming from {trainer.last_checkpoint} (step {start})")
    if start >= t.steps:
        stderr.print(f"nothing to do: the run is at step {start} of {t.steps} (raise --steps to continue)")

    columns = (MofNCompleteColumn(), BarColumn(bar_width=12), TextColumn("{task.fields[stats]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    plain = not stderr.is_terminal  # CI logs: plain lines, since a live bar only shows up at the end
    lines = PlainProgress("steps", t.steps, enabled=plain, done=start)
    gap = {"text": ""}
    with Progress(*columns, console=stderr, transient=False, disable=plain) as progress:
        task = progress.add_task("train", total=t.steps, completed=start, stats="")

        def on_log(m: dict) -> None:
            levels = "/".join(f"{m[f'loss_level_{i}']:.3f}" for i in range(cfg.model.num_levels))
            if "label_gap_sigma_8" in m:
                gap["text"] = f" label gap@8 {m['label_gap_sigma_8']:+.4f}"
            stats = (f"loss {m['loss']:.4f} (levels {levels}){gap['text']} "
                     f"{m['steps_per_s']:.2f} step/s {m['videos_per_s']:.1f} vid/s")
            progress.update(task, completed=m["step"], stats=stats)
            if lines.due(m["step"], force="label_gap_sigma_8" in m):
                left = (t.steps - m["step"]) / max(m["steps_per_s"], 1e-9)
                plain_line(f"step {m['step']}/{t.steps} {stats} eta {left / 60:.1f} min")

        final = trainer.fit(on_log=on_log)
        progress.update(task, completed=final)

    summary = {"run_dir": str(run_dir), "step": final, "steps": t.steps, "samples_seen": trainer.samples_seen,
               "checkpoint": str(trainer.last_checkpoint) if trainer.last_checkpoint else None,
               "parameters": trainer.num_parameters}
    if json_out:
        print_json(summary)
    else:
        stdout.print(f"trained to step {final}/{t.steps}; checkpoint {summary['checkpoint']}")


def _print_init_report(report: dict, run_dir: Path) -> None:
    """Where each tensor of the new run came from (init_from.json in the run folder has every tensor)."""
    from rich.table import Table

    from hpdm_core.init_from import REPORT_NAME, summary_rows

    stderr.print(f"init from {report['source']} (step {report['source_step']}, {report['source_levels']} level(s) of "
                 f"{'x'.join(map(str, report['source_patch']))} patches) -> {report['levels']} level(s) of "
                 f"{'x'.join(map(str, report['patch']))} patches; optimizer and EMA restart")
    table = Table("tensors", "count", "parameters", "initial value", box=None, pad_edge=False)
    for label, count, size, status in summary_rows(report):
        table.add_row(label, str(count), f"{size:,}", status)
    stderr.print(table)
    stderr.print(f"(every tensor: {Path(run_dir) / REPORT_NAME})")
