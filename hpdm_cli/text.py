"""`hpdm encode-text` and `hpdm random-text-encoder`: T5 embeddings of a dataset file's captions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from hpdm_cli.common import PlainProgress, flag, flags_for, plain_line, print_json, stderr, stdout

RANDOM_NOTE = "its weights are RANDOM: for demos and tests only, its embeddings carry no meaning"


def _print(result: dict, as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    table = Table(show_header=False, box=None)
    for key, value in result.items():
        table.add_row(f"[bold]{key}[/]", str(value))
    stdout.print(table)


def encode_text(
    data: Annotated[Path, typer.Option("--data", help="dataset file (.h5) with captions")],
    text_encoder: Annotated[Path, typer.Option("--text-encoder", help="local folder of a T5 checkpoint (config.json, weights, tokenizer)")],
    max_tokens: Annotated[int, typer.Option(min=2, help="tokens kept per caption (longer ones are cut; the rest is padding)")] = 64,
    batch_size: Annotated[int, typer.Option(min=1, help="captions encoded at once")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:n]")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bfloat16 or float16 on CUDA, float32 on CPU), float32, bfloat16 or float16")] = "auto",
    overwrite: Annotated[bool, flag("--overwrite/--no-overwrite", "replace embeddings the file already has")] = False,
    as_json: Annotated[bool, flag("--json", "print the result as one JSON object")] = False,
) -> None:
    """Encode the captions of a dataset file with T5 once, into the file (float16, with the token mask).

    The file is not written in place: a copy gets the embeddings and then replaces it (free disk space for one more copy is needed while it runs). Interrupted, run it again.
    """
    from hpdm_core.distributed import resolve_device
    from hpdm_core.text.encoder import load_text_encoder
    from hpdm_core.text.store import check_encodable, encode_file

    captions = check_encodable(data, overwrite)  # before loading the encoder: a wrong file fails in a second
    with flags_for({"text_encoder": "--text-encoder"}):
        encoder = load_text_encoder(text_encoder, resolve_device(device), max_tokens, dtype)
    stderr.print(f"[bold]hpdm encode-text[/] {data}: {len(captions)} videos, "
                 f"{sum(bool(c.strip()) for c in captions)} with a caption")
    plain_line(encoder.describe())
    plain = not stderr.is_terminal
    lines = PlainProgress("captions", len(captions), enabled=plain)
    with Progress(TextColumn("encoding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=stderr, transient=True, disable=plain) as bar:
        task = bar.add_task("encode", total=len(captions))

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done)
            lines.update(done - lines.done)

        result = encode_file(data, encoder, batch_size, overwrite, progress)
    note = f" ({RANDOM_NOTE})" if encoder.random_weights else ""
    stderr.print(f"[green]wrote[/] text embeddings of {result['captioned']} captions into {escape(str(data))}: "
                 f"{result['videos']} x {result['max_tokens']} x {result['dim']} float16, "
                 f"{result['truncated']} captions cut at {result['max_tokens']} tokens{note}")
    _print(result, as_json)


def random_text_encoder(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder to write the encoder to")],
    seed: Annotated[int, typer.Option(help="seed of the random weights; the same seed writes the same encoder")] = 0,
    dim: Annotated[int, typer.Option(min=8, help="width (d_model) of the encoder")] = 128,
    layers: Annotated[int, typer.Option(min=1, help="transformer layers")] = 2,
    overwrite: Annotated[bool, flag("--overwrite/--no-overwrite", "replace an existing --out folder")] = False,
    as_json: Annotated[bool, flag("--json", "print the result as one JSON object")] = False,
) -> None:
    """Write a small T5 encoder with RANDOM weights and a byte-level tokenizer (no download), for demos and tests.

    It is a normal transformers folder: `hpdm encode-text --text-encoder OUT` and T5EncoderModel load it. Results made with it are marked as made with random weights.
    """
    from hpdm_core.text.encoder import DEFAULT_MAX_TOKENS, build_random_t5, folder_fingerprint

    path = build_random_t5(out, seed=seed, d_model=dim, num_layers=layers, num_heads=next(h for h in (4, 2, 1) if dim % h == 0),
                           overwrite=overwrite)
    stderr.print(f"[green]wrote[/] {escape(str(path))}: a T5 encoder (width {dim}, {layers} layers, byte-level tokenizer); "
                 f"[bold yellow]{RANDOM_NOTE}[/]")
    _print({"path": str(path), "dim": dim, "layers": layers, "seed": seed, "random_weights": True,
            "max_tokens": DEFAULT_MAX_TOKENS, "fingerprint": folder_fingerprint(path, DEFAULT_MAX_TOKENS)}, as_json)
