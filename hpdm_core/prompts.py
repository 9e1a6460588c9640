"""Prompts for a text-conditional model: from the user, from a file, or from a dataset's class names.

`class_prompts` is the zero-shot protocol of text-to-video papers on UCF-101 (the paper's Table 4):
one prompt per class, made from the class name ("ApplyEyeMakeup" -> "apply eye makeup"), and the
class index kept as the sample's label, so the samples are scored like a class-conditional model's.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from hpdm_core.conditioning import TextCondition
from hpdm_core.errors import BadInputError, MissingResourceError

MAX_PROMPT_CHARS = 10_000


def resolve_prompts(prompts: list[str], num: int) -> list[str]:
    """One prompt per sample: one given is used for all, else exactly one per sample."""
    if num < 1:
        raise BadInputError(f"the number of samples must be at least 1, got {num}")
    if not prompts:
        raise BadInputError("a text-conditional model needs prompts: give prompts (the CLI's --prompt, --prompts "
                            "FILE or --prompts-from-classes FILE.h5)")
    for prompt in prompts:
        if not prompt.strip():
            raise BadInputError("a prompt is empty; give some text (the null text is what guidance uses)")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise BadInputError(f"a prompt has {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are read")
    if len(prompts) == 1:
        return prompts * num
    if len(prompts) != num:
        raise BadInputError(f"give one prompt for all samples or one per sample ({num}), got {len(prompts)}")
    return list(prompts)


def read_prompts_file(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file, one prompt each."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingResourceError(f"prompts file {path} does not exist") from None
    except UnicodeDecodeError:
        raise BadInputError(f"prompts file {path} is not UTF-8 text") from None
    except OSError as err:
        raise BadInputError(f"cannot read prompts file {path}: {err.strerror or err}") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise BadInputError(f"prompts file {path} holds no prompt (one per line)")
    return prompts


def class_name_to_prompt(name: str) -> str:
    """'ApplyEyeMakeup' -> 'apply eye makeup', 'red_disc' -> 'red disc'."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return " ".join(words.replace("_", " ").replace("-", " ").split()).lower()


def class_prompts(data_path: str | Path, num: int) -> tuple[list[str], torch.Tensor]:
    """(prompts, labels) for `num` samples cycling through the class names of a dataset file."""
    from hpdm_core.data.h5store import VideoStore

    store = VideoStore(data_path)
    names = store.class_names
    store.close()
    if not names:
        raise BadInputError(f"{data_path} has no class names to make prompts from")
    labels = [i % len(names) for i in range(num)]
    return [class_name_to_prompt(names[k]) for k in labels], torch.tensor(labels, dtype=torch.long)


def run_text_encoder(cfg, path: str | Path | None = None, device="cpu"):
    """The text encoder a run was trained with (config.toml's data.text_encoder and its token count), or the
    folder `path` (a copy elsewhere); the fingerprint is checked when prompts are encoded."""
    from hpdm_core.text.encoder import load_text_encoder

    path = path or cfg.data.text_encoder
    if not path:
        raise MissingResourceError("the run does not record its text encoder: give its folder (text_encoder=PATH, "
                                   "the CLI's --text-encoder), the one its dataset's captions were encoded with")
    if Path(path).is_file():
        raise BadInputError(f"text_encoder {path} is a file; give the folder holding config.json and the weights "
                            "(the CLI's --text-encoder)")
    return load_text_encoder(path, device=device, max_tokens=cfg.data.text_max_tokens or None)


def encode_prompts(encoder, prompts: list[str], expected_fingerprint: str = "") -> TextCondition:
    """The prompts through the text encoder (text.encoder.TextEncoder), checked against the fingerprint of
    the encoder a model was trained with (BadInputError for another encoder)."""
    if expected_fingerprint:
        from hpdm_core.text.encoder import check_fingerprint

        check_fingerprint(expected_fingerprint, encoder, "this run")
    tokens, mask = encoder.encode(prompts)
    return TextCondition(tokens.float(), mask.bool())
