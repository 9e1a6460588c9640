"""`hpdm sample`: hierarchical, overlapped, patch-wise sampling from a run folder's checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hpdm_cli.common import INT64_MAX, PlainProgress, flag, flags_for, print_json, stderr, stdout


def _class_names(data_path: str, num_classes: int) -> list[str]:
    """The training set's class names when its file is at hand, else class_0, class_1, ..."""
    from hpdm_core.data.h5store import VideoStore

    try:
        names = VideoStore(data_path).class_names if data_path else []
    except Exception:  # the dataset file is optional for sampling
        names = []
    return names if len(names) >= num_classes else [f"class_{k}" for k in range(num_classes)]


# What the library's messages name (generate's and the text encoder's arguments), as flags.
FLAGS = {"classes": "--class", "text_encoder": "--text-encoder", "batch_size": "--batch-size", "seed": "--seed"}


def sample(
    run: Annotated[Path, typer.Option("--run", "--run-dir", help="Run folder (config.toml, checkpoints/).")],
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="A checkpoint file; default: the run's latest.")] = None,
    num: Annotated[Optional[int], typer.Option("--num", max=INT64_MAX, help="Number of videos [8, or one per prompt "
                                               "when several prompts are given].")] = None,
    classes: Annotated[Optional[list[int]], typer.Option("--class", max=INT64_MAX, help="Class of every sample (once) or of each sample "
                                                         "(once per sample); default cycles 0..K-1.")] = None,
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", help="Text-conditional runs: the prompt of every "
                                                        "sample (once) or of each sample (repeated).")] = None,
    prompts_file: Annotated[Optional[Path], typer.Option("--prompts", help="A UTF-8 file of prompts, one per line "
                                                         "(one per sample, or one for all).")] = None,
    prompts_from_classes: Annotated[Optional[Path], typer.Option(
        "--prompts-from-classes", help="One prompt per class name of this dataset file, cycling (zero-shot "
        "protocol); the samples keep the class as their label for eval-fvd.")] = None,
    text_encoder: Annotated[Optional[Path], typer.Option("--text-encoder", help="The text encoder folder "
                                                         "(default: the one the run was trained with).")] = None,
    overlap: Annotated[Optional[str], typer.Option("--overlap", help="Overlapped axes: none or letters of fhw "
                                                   "(default: the run's sample.overlap).")] = None,
    tile_blend: Annotated[Optional[str], typer.Option("--tile-blend", help="How overlapping tiles are averaged: "
                                                      "uniform (the paper's) or tent (a cross-fade; default: the "
                                                      "run's sample.tile_blend).")] = None,
    tile_shifts: Annotated[Optional[str], typer.Option("--tile-shifts", help="Tilings that take turns, one per "
                                                       "denoiser evaluation, as pixel shifts along the overlapped "
                                                       "h/w axes, e.g. 0,1,2,3; 0 = the paper's one tiling "
                                                       "(default: the run's sample.tile_shifts).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", max=INT64_MAX, help="Level-0 steps N0; level l takes max(1, N0 // 2**l).")] = None,
    guidance: Annotated[Optional[float], typer.Option("--guidance", "--cfg", help="Classifier-free guidance weight "
                                                      "(1 = off; --cfg is its old name).")] = None,
    guidance_levels: Annotated[Optional[int], typer.Option("--guidance-levels", max=INT64_MAX, help="Guide only the lowest N "
                                                           "levels (0 = every level; default: the run's "
                                                           "sample.guidance_levels).")] = None,
    seed: Annotated[int, typer.Option("--seed", max=INT64_MAX, help="Seed; sample i always gets the same noise for a seed.")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Output file.")] = Path("samples.mp4"),
    overwrite: Annotated[bool, flag("--overwrite/--no-overwrite", "Replace existing output files.")] = False,
    fmt: Annotated[Optional[str], typer.Option("--format", help="mp4, gif, h5 or npz (default: from --out's suffix).")] = None,
    save_levels: Annotated[bool, flag("--save-levels/--no-save-levels", "Also write every lower level's canvases.")] = False,
    cache: Annotated[Optional[bool], flag("--cache/--no-cache", "Reuse the lower levels' activations at every step "
                                          "(default: the run's sample.cache).")] = None,
    offload_cache: Annotated[Optional[bool], flag("--offload-cache/--no-offload-cache", "Keep the activation cache "
                                                  "on CPU (default: the run's sample.offload_cache).")] = None,
    tile_batch: Annotated[Optional[int], typer.Option("--tile-batch", max=INT64_MAX, help="Patch chains per network call "
                                                      "(0 = from free memory).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", max=INT64_MAX, help="Videos generated together.")] = 4,
    fps: Annotated[float, typer.Option("--fps", help="Frame rate written to mp4/gif/h5.")] = 8.0,
    raw: Annotated[bool, flag("--raw/--no-raw", "Use the raw weights instead of the EMA.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    json_out: Annotated[bool, flag("--json", "Print the summary as JSON on stdout.")] = False,
) -> None:
    """Generate videos level by level, tile by tile, with activation caching.

    Under torchrun every process samples its share of the videos (same per-sample seeds, so the same
    videos as one process) and rank 0 writes them.
    """
    from hpdm_core import distributed as dist_lib
    from hpdm_core.config import TILE_BLENDS, parse_tile_shifts
    from hpdm_core.errors import BadInputError
    from hpdm_core.files import check_output
    from hpdm_core.pyramid import parse_overlap
    from hpdm_core.prompts import class_prompts, read_prompts_file, resolve_prompts
    from hpdm_core.sample_files import FORMATS, output_files

    # Every argument is checked here, before the model loads or a tile is sampled.
    if num is not None and num < 1:
        raise BadInputError(f"--num must be at least 1, got {num}")
    sources = [name for name, given in (("--prompt", prompt), ("--prompts", prompts_file),
                                        ("--prompts-from-classes", prompts_from_classes)) if given]
    if len(sources) > 1:
        raise BadInputError(f"give prompts one way: {' or '.join(sources)}")
    if sources and classes:
        raise BadInputError("--class is for class-conditional runs and prompts for text-conditional ones: give one")
    prompts = list(prompt or []) or (read_prompts_file(prompts_file) if prompts_file else [])
    if num is None:
        num = len(prompts) if len(prompts) > 1 else 8
    prompt_labels = None
    if prompts_from_classes is not None:
        prompts, prompt_labels = class_prompts(prompts_from_classes, num)
    if prompts:
        prompts = resolve_prompts(prompts, num)
    fmt = (fmt or out.suffix.lstrip(".") or "mp4").lower()
    if fmt not in FORMATS:
        raise BadInputError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    for name, value, low in (("--num", num, 1), ("--batch-size", batch_size, 1), ("--seed", seed, 0),
                             ("--steps", steps, 1), ("--tile-batch", tile_batch, 0),
                             ("--guidance-levels", guidance_levels, 0)):
        if value is not None and value < low:
            raise BadInputError(f"{name} must be at least {low}, got {value}")
    if not (math.isfinite(fps) and fps > 0):
        raise BadInputError(f"--fps must be a positive number, got {fps}")
    if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
        raise BadInputError(f"--guidance/--cfg must be a finite number >= 0 (1 = no guidance), got {guidance}")
    if overlap is not None:
        if not overlap.strip():  # an unset shell variable, not a choice of "none"
            raise BadInputError("--overlap is empty: give none or letters of fhw (e.g. hw)")
        parse_overlap(overlap)
    if tile_blend is not None and tile_blend not in TILE_BLENDS:
        raise BadInputError(f"--tile-blend must be one of {', '.join(TILE_BLENDS)}, got {tile_blend!r}")
    shifts = parse_tile_shifts(tile_shifts) if tile_shifts is not None else None
    classes = classes or []
    if any(c < 0 for c in classes):
        raise BadInputError(f"--class must be >= 0, got {min(classes)}")
    if len(classes) > 1 and len(classes) != num:  # the library's `classes`, said as the flag
        raise BadInputError(f"give --class once or once per sample ({num}), got {len(classes)} classes")
    for path in output_files(out, fmt, num, prompts=bool(prompts)):
        check_output(path, overwrite)
    with dist_lib.process_group(device) as (env, run_device), flags_for(FLAGS):
        # Flags left unset (None) keep the run's sample settings.
        settings = dict(overlap=overlap, tile_blend=tile_blend, tile_shifts=shifts, steps=steps, guidance=guidance,
                        guidance_levels=guidance_levels, tile_batch=tile_batch, cache=cache,
                        offload_cache=offload_cache)
        conditions = dict(classes=classes, prompts=prompts, prompt_labels=prompt_labels, text_encoder=text_encoder)
        _sample(run, checkpoint, num, conditions, settings, seed, out, fmt, save_levels, batch_size, fps, raw,
                str(run_device), json_out, dist_lib.launched(), env, overwrite)


def _conditions(cfg, denoiser, num, classes, prompts, prompt_labels, text_encoder, device):
    """(condition batch for generate, class labels [N], prompts, note) for a class- or text-conditional run."""
    from hpdm_core.errors import BadInputError
    from hpdm_core.sampling import resolve_labels

    if cfg.model.conditioning != "text":
        if prompts:
            raise BadInputError("this run is class-conditional (model.conditioning = \"class\"): use --class, "
                                "not prompts")
        labels = resolve_labels(classes, num, denoiser.num_classes)
        return labels, labels, [], ""
    if not prompts:
        raise BadInputError("this run is text-conditional: give --prompt TEXT, --prompts FILE or "
                            "--prompts-from-classes FILE.h5")
    from hpdm_core.prompts import encode_prompts, run_text_encoder

    encoder = run_text_encoder(cfg, text_encoder, device)
    text = encode_prompts(encoder, prompts, cfg.data.text_fingerprint)
    labels = prompt_labels if prompt_labels is not None else None
    note = f"text encoder {encoder.name}" + (" (RANDOM WEIGHTS: a demo encoder, not a trained T5)"
                                             if encoder.random_weights else "")
    return text, labels, prompts, note


def _sample(run, checkpoint, num, conditions, settings, seed, out, fmt, save_levels, batch_size, fps, raw, device,
            json_out, distributed, env, overwrite) -> None:
    from hpdm_core import distributed as dist_lib
    from hpdm_core.checkpoint import load_for_inference
    from hpdm_core.config import recorded_settings
    from hpdm_core.consistency import consistency_report
    from hpdm_core.files import check_output, reporting_full_disk
    from hpdm_core.memory import check_fits, sampling_bytes
    from hpdm_core.canvas import count_tile_evaluations
    from hpdm_core.sample_files import output_files, save_samples
    from hpdm_core.sampling import generate

    cfg, denoiser, info = load_for_inference(run, checkpoint, use_ema=not raw, device=device)
    options = cfg.sample.replace(**settings).validate()
    condition, class_labels, prompts, text_note = _conditions(cfg, denoiser, num, device=device, **conditions)
    geometry = denoiser.geometry
    rows = min(batch_size, num)
    check_fits(sampling_bytes(geometry.target, rows), device, f"sampling {rows} videos of "
               f"{'x'.join(map(str, geometry.target))} together", "lower --batch-size")
    for path in output_files(out, fmt, num, geometry.num_levels, save_levels, prompts=bool(prompts)):
        check_output(path, overwrite)
    # The bar follows rank 0's share; the other ranks stay silent.
    total = count_tile_evaluations(geometry, options, len(dist_lib.shard(num)) if distributed else num)
    if env.is_main:
        for note in info["notes"]:
            stderr.print(f"[yellow]warning:[/] {note}")
        stderr.print(f"[bold]hpdm sample[/] {info['path']} (step {info['step']}{', EMA' if info['ema'] else ''}): "
                     f"{num} x {'x'.join(map(str, geometry.target))} from {geometry.num_levels} levels, "
                     f"overlap {options.overlap}, {options.steps} steps, {_guidance_text(options)}, "
                     f"cache {'on' if options.cache else 'off'}{' (CPU)' if options.offload_cache else ''}"
                     f"{'; ' + text_note if text_note else ''}")

    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
    plain = not stderr.is_terminal  # CI logs: plain lines, since a live bar only shows up at the end
    lines = PlainProgress("tiles", total, enabled=env.is_main and plain)
    with Progress(*columns, console=stderr, disable=plain or not env.is_main) as progress:
        task = progress.add_task("tiles", total=total, rate="")

        def advance(rows: int) -> None:
            progress.advance(task, rows)
            speed = progress.tasks[task].speed
            progress.update(task, rate=f"{speed:.1f} tiles/s" if speed else "")
            lines.update(rows)

        result = generate(denoiser, condition, seed=seed, options=options, batch_size=batch_size,
                          device=_model_device(denoiser), keep_levels=True, progress=advance,
                          distributed=distributed)
    if result is None:  # not rank 0: its videos went to rank 0, which writes them
        return
    result.prompts = list(prompts)
    if class_labels is not None:
        result.labels = class_labels

    with reporting_full_disk(out):  # a full disk: a message naming the folder; no partial file is left
        files = save_samples(result, out, fmt, fps=fps,
                             class_names=_class_names(cfg.data.path, denoiser.num_classes), save_levels=save_levels,
                             attrs={"seed": seed, **recorded_settings(options), "checkpoint_step": info["step"]})
    report = consistency_report(result.videos, result.levels, geometry.patch)
    summary = {"files": [str(f) for f in files], "num": num, "labels": result.labels.tolist(), "seed": seed,
               **({"prompts": result.prompts, "text_encoder": text_note} if result.prompts else {}),
               "steps": options.steps, "overlap": options.overlap, "tile_blend": options.tile_blend,
               "tile_shifts": options.tile_shifts,
               "cfg": options.guidance, "guidance_levels": options.guidance_levels, "cache": options.cache,
               "tile_batch": result.tile_batch, "batch_size": batch_size, "seconds": round(result.seconds, 3),
               "tile_evaluations": result.tile_evaluations,
               "tiles_per_s": round(result.tile_evaluations / max(result.seconds, 1e-9), 2),
               "checkpoint": info["path"], "step": info["step"], "consistency": report}
    if json_out:
        print_json(summary)
        return
    coarse = ", ".join(f"L{level} {mae:.4f}" for level, mae in enumerate(report["coarse_mae"])) or "-"
    seam = report["seam"]["all"]
    stdout.print(f"wrote {len(files)} file(s): {files[0]}{' ...' if len(files) > 1 else ''}")
    stdout.print(f"{num} videos in {result.seconds:.1f} s ({summary['tiles_per_s']} tiles/s, tile batch "
                 f"{result.tile_batch})")
    stdout.print(f"consistency: coarse MAE vs downsampled final {coarse}; seam score "
                 f"{'-' if seam is None else f'{seam:.3f}'} (1.0 = seamless)")


def _guidance_text(options) -> str:
    if options.guidance == 1.0:
        return "no guidance"
    where = "every level" if options.guidance_levels == 0 else f"levels < {options.guidance_levels}"
    return f"guidance {options.guidance:g} on {where}"


def _model_device(denoiser):
    return next(denoiser.parameters()).device
