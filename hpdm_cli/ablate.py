"""`hpdm ablate`: the paper's architecture (Table 2) and inference-strategy (Table 3) ablations."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hpdm_cli.common import INT64_MAX, flag, flags_for, print_json, stderr, stdout


class Suite(str, Enum):
    architecture = "architecture"
    inference = "inference"


# The library's names for what this command's flags set (missing I3D weights: give --i3d, or leave it out for the proxy).
FLAGS = {"i3d": "--i3d", "random_i3d_seed": "no --i3d", "overrides": "--set"}


def ablate(
    suite: Annotated[Suite, typer.Option("--suite", help="architecture (Table 2: train the variants) or "
                                         "inference (Table 3: overlap strategies on one checkpoint).")] = Suite.architecture,
    out: Annotated[Path, typer.Option("--out", help="Ablation folder: one run folder per variant, table.md, "
                                      "results.json. Run again to resume.")] = ...,
    data: Annotated[Optional[Path], typer.Option("--data", help="Dataset file (.h5); architecture: required; "
                                                 "inference: default the run's data.")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Base config of the variants: tiny, hpdm-s, "
                                                  "hpdm-m, hpdm-l.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file applied over the preset.")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="section.key=value for every variant "
                                                           "(repeatable).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", max=INT64_MAX, help="Training steps of every variant (equal budgets).")] = None,
    variants: Annotated[Optional[str], typer.Option("--variants", help="Comma-separated subset of default, shallow, "
                                                    "detach, no-adaptive, no-coords (default: all).")] = None,
    run: Annotated[Optional[Path], typer.Option("--run", help="Inference suite: the run folder to sample.")] = None,
    strategies: Annotated[Optional[str], typer.Option("--strategies", help="Inference suite: comma-separated subset "
                                                      "of none, w, h, hw, f, fw, fh, fhw (default: all).")] = None,
    i3d: Annotated[Optional[Path], typer.Option("--i3d", help="I3D weights for FVD (i3d_torchscript.pt or "
                                                "i3d_pretrained_400.pt); without: a labelled proxy FD with a random "
                                                "I3D.")] = None,
    num: Annotated[int, typer.Option("--num", max=INT64_MAX, help="Generated (and real) videos per distance: FVD@N.")] = 512,
    seed: Annotated[int, typer.Option("--seed", max=INT64_MAX, help="Sampling seed, the same for every variant.")] = 0,
    sample_steps: Annotated[Optional[int], typer.Option("--sample-steps", max=INT64_MAX, help="Level-0 sampling steps (default: "
                                                        "the config's).")] = None,
    overlap: Annotated[Optional[str], typer.Option("--overlap", help="Architecture suite: overlap used to sample "
                                                   "(default: the config's sample.overlap).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", max=INT64_MAX, help="Videos sampled together.")] = 4,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    json_out: Annotated[bool, flag("--json", "Print the results as JSON on stdout.")] = False,
) -> None:
    """Reproduce the paper's ablations on your data and print one table in its format."""
    from hpdm_core import ablation, report
    from hpdm_core.errors import BadInputError

    if overlap is not None and not overlap.strip():  # an unset shell variable, not a choice of "none"
        raise BadInputError("--overlap is empty: give none or letters of fhw (e.g. hw)")
    options = ablation.SuiteOptions(out=out, num=num, seed=seed, sample_steps=sample_steps, overlap=overlap,
                                    batch_size=batch_size, device=device, i3d=i3d)
    if i3d is None:
        stderr.print("[yellow]no --i3d weights: scoring with FD (random I3D), a proxy that is not FVD[/]")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as progress, flags_for(FLAGS):
        tasks: dict[str, int] = {}

        def on_train_log(name: str, m: dict) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"train {name}", total=steps, stats="")
            progress.update(tasks[name], completed=m["step"],
                            stats=f"loss {m['loss']:.4f} {m['videos_per_s']:.1f} vid/s")

        sampling = progress.add_task("sample tiles", total=None, stats="", visible=False)

        def on_tiles(rows: int) -> None:
            progress.update(sampling, advance=rows, visible=True)

        log = progress.console.print
        if suite is Suite.architecture:
            if run is not None or strategies is not None:
                raise BadInputError("--run and --strategies belong to --suite inference")
            if data is None or steps is None:
                raise BadInputError("--suite architecture needs --data FILE.h5 and --steps N (the budget of each variant)")
            from hpdm_core.config import build_config

            if preset is None and config is None:
                raise BadInputError("--suite architecture needs a base config: --preset NAME (e.g. tiny) or --config FILE")
            base = build_config(preset, config, overrides)
            base.data.path = str(data)
            names = ablation.parse_names(variants, ablation.ARCHITECTURE_VARIANTS, "variant")
            results = ablation.run_architecture_suite(base, steps, options, names, log=log,
                                                      on_train_log=on_train_log, progress=on_tiles)
        else:
            if run is None:
                raise BadInputError("--suite inference needs --run RUN_DIR (a trained run folder)")
            if preset or config or overrides or steps or variants or overlap:
                raise BadInputError("--preset/--config/--set/--steps/--variants/--overlap belong to --suite "
                                    "architecture; the inference suite samples --run as it is")
            names = ablation.parse_names(strategies, ablation.OVERLAP_STRATEGIES, "overlap strategy")
            results = ablation.run_inference_suite(run, options, names, data=data, log=log, progress=on_tiles)

    if json_out:
        print_json(results)
        return
    title, headers, rows = report.table_data(results)
    table = Table(title=title)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right")
    for cells in rows:
        table.add_row(*cells)
    stdout.print(table)
    for note in results["notes"]:
        stdout.print(f"[dim]{note}[/]")
    reused = [r["variant"] for r in results["rows"] if r.get("reused")]
    if reused:
        stderr.print(f"reused finished results: {', '.join(reused)}")
    stderr.print(f"wrote {out / 'table.md'} and {out / 'results.json'}")
