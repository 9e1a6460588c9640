"""The text encoder of text-to-video: T5's encoder (the paper used T5-11B), from a local folder only.

A folder is what `save_pretrained` writes (or a Hugging Face model repository copied by hand):
config.json with model_type "t5", the weights (model.safetensors, shards with an index, or
pytorch_model*.bin) and the tokenizer files (tokenizer.json, or spiece.model, or for byte-level
tokenizers only tokenizer_config.json). Nothing is ever downloaded: transformers is called with
local_files_only=True and HF_HUB_OFFLINE is set before it is imported.

The output for a text is the encoder's last hidden states, padded to `max_tokens` with zeros, and a
mask that is True on the real tokens (the closing </s> included). No caption ("" or only spaces)
is the null text: an all-False mask row and zeros.

The fingerprint names the encoder and what it computes, so that embeddings stored in a dataset file
and prompts encoded at sampling are known to come from the same one. It hashes (version 1):
config.json, every tokenizer file present, and the weight files transformers loads, each with its
name and size; a file up to FULL_HASH_BYTES is hashed whole, a larger one by a fixed sample: the
safetensors header when it is one (every tensor's name, dtype, shape and offset) and SAMPLE_BLOCKS
blocks of SAMPLE_BLOCK_BYTES evenly spaced from its first to its last byte (8 MiB of a 45 GB
T5-11B file: seconds, not the minutes of reading it all); and then max_tokens.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from hpdm_core.distributed import resolve_device
from hpdm_core.errors import BadInputError, HPDMError, MissingResourceError

DEFAULT_MAX_TOKENS = 64
RANDOM_FLAG = "hpdm_random_weights"  # config.json key of an encoder made by build_random_t5
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
FINGERPRINT_VERSION = 1
FULL_HASH_BYTES = 64 << 20
SAMPLE_BLOCKS = 32
SAMPLE_BLOCK_BYTES = 256 << 10
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INSTALL_HINT = 'pip install "hpdm[text]"'


def _transformers():
    """transformers, imported offline; a clear error when the `text` extra is not installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read by huggingface_hub at import: no network, ever
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise MissingResourceError(f"the text encoder needs transformers: {INSTALL_HINT}") from None
    return transformers


@contextlib.contextmanager
def _quiet(transformers) -> Iterator[None]:
    """No progress bars or load reports from transformers on our stderr (we check what it loaded)."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _can_read_spiece() -> bool:
    """Whether a tokenizer given only as spiece.model can be read (converting it needs both packages)."""
    try:
        import google.protobuf  # noqa: F401
        import sentencepiece  # noqa: F401
    except ImportError:
        return False
    return True


def weight_files(folder: Path) -> list[Path]:
    """The weight files transformers loads from `folder`: safetensors when any, else PyTorch .bin."""
    for pattern, index in (("*.safetensors", "model.safetensors.index.json"),
                           ("pytorch_model*.bin", "pytorch_model.bin.index.json")):
        files = sorted(folder.glob(pattern))
        if files:
            return files + ([folder / index] if (folder / index).is_file() else [])
    return []


def _hash_file(path: Path, digest: "hashlib._Hash") -> None:
    size = path.stat().st_size
    digest.update(f"{path.name}\0{size}\0".encode())
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
            return
        if path.suffix == ".safetensors":
            header = int.from_bytes(f.read(8), "little")
            digest.update(f.read(min(header, size - 8)))
        block = min(SAMPLE_BLOCK_BYTES, size)
        for i in range(SAMPLE_BLOCKS):  # the first block starts at byte 0, the last one ends at the last byte
            f.seek(i * (size - block) // (SAMPLE_BLOCKS - 1))
            digest.update(f.read(block))


def folder_fingerprint(folder: str | os.PathLike, max_tokens: int) -> str:
    """The fingerprint of the encoder in `folder` used with `max_tokens` (module docstring)."""
    folder = Path(folder)
    digest = hashlib.sha256(f"hpdm-text-encoder-v{FINGERPRINT_VERSION}\0".encode())
    tokenizer = [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]
    for path in [folder / "config.json", *tokenizer, *weight_files(folder)]:
        _hash_file(path, digest)
    digest.update(f"max_tokens={int(max_tokens)}".encode())
    return digest.hexdigest()[:32]


@dataclass(eq=False)
class TextEncoder:
    """A loaded T5 encoder with its tokenizer; `encode` turns texts into padded token embeddings."""

    name: str
    path: Path
    dim: int
    max_tokens: int
    fingerprint: str
    random_weights: bool
    model: Any = field(repr=False)
    tokenizer: Any = field(repr=False)
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    def describe(self) -> str:
        """One line for logs: which encoder, and whether its weights are random."""
        note = " -- RANDOM WEIGHTS (a test/demo encoder; its embeddings carry no meaning)" if self.random_weights \
            else ""
        return (f"text encoder {self.name} ({self.path}), dim {self.dim}, max {self.max_tokens} tokens, "
                f"{str(self.dtype).removeprefix('torch.')} on {self.device}, fingerprint {self.fingerprint}{note}")

    @torch.no_grad()  # not inference_mode: the outputs may meet autograd later (a sampler, a test)
    def encode(self, texts: Sequence[str], batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 [N, max_tokens, dim] (zeros at padding) and bool mask [N, max_tokens], on the CPU.

        Texts longer than max_tokens tokens are cut (the last kept token is </s>). A text that is empty
        or only spaces is no caption: zeros and an all-False mask row."""
        if isinstance(texts, str):
            raise BadInputError("encode() takes a list of texts, not one string")
        texts = list(texts)
        if any(not isinstance(text, str) for text in texts):
            raise BadInputError("every text to encode must be a string")
        if batch_size < 1:
            raise BadInputError(f"batch size must be at least 1, got {batch_size}")
        tokens = torch.zeros(len(texts), self.max_tokens, self.dim)
        mask = torch.zeros(len(texts), self.max_tokens, dtype=torch.bool)
        captioned = [i for i, text in enumerate(texts) if text.strip()]
        for start in range(0, len(captioned), batch_size):
            rows = captioned[start:start + batch_size]
            batch = self.tokenizer([texts[i] for i in rows], padding="max_length", truncation=True,
                                   max_length=self.max_tokens, return_tensors="pt")
            real = batch["attention_mask"].to(self.device).bool()
            hidden = self.model(input_ids=batch["input_ids"].to(self.device), attention_mask=real.long())
            hidden = hidden.last_hidden_state.float() * real[..., None]
            if not torch.isfinite(hidden).all():
                raise HPDMError(f"the text encoder {self.name} produced non-finite values in "
                                f"{str(self.dtype).removeprefix('torch.')} (T5 can overflow in float16); "
                                "use --dtype bfloat16 or float32")
            tokens[rows] = hidden.cpu()
            mask[rows] = real.cpu()
        return tokens, mask


def _pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on a CUDA device that has it (T5 overflows less than in fp16), else fp16 on CUDA,
    float32 on the CPU (half precision there is slow and not needed)."""
    if dtype != "auto":
        if dtype not in DTYPES:
            raise BadInputError(f"unknown dtype {dtype!r}; use auto, {', '.join(DTYPES)}")
        return DTYPES[dtype]
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _dtype_kwarg(transformers, dtype: torch.dtype) -> dict[str, Any]:
    from packaging.version import Version

    # `dtype` since 4.56; `torch_dtype` before it (and deprecated after)
    return {"dtype": dtype} if Version(transformers.__version__) >= Version("4.56") else {"torch_dtype": dtype}


def _weight_errors() -> tuple[type[BaseException], ...]:
    """What reading damaged or foreign weight files raises (safetensors' own error included)."""
    import pickle

    from safetensors import SafetensorError  # a dependency of transformers

    return (OSError, ValueError, RuntimeError, KeyError, pickle.UnpicklingError, SafetensorError)


def _read_config(transformers, folder: Path):
    if not (folder / "config.json").is_file():
        raise BadInputError(f"{folder} is not a T5 encoder folder: it has no config.json (give the folder "
                            "that save_pretrained wrote, e.g. a copy of google/t5-v1_1-xxl)")
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise BadInputError(f"{folder}/config.json is not a readable transformers config: {err}") from None
    if config.model_type != "t5":
        raise BadInputError(f"{folder} holds a {config.model_type!r} model, not T5 (model_type 't5': t5-*, "
                            "google/t5-v1_1-*, google/flan-t5-*, google/byt5-*)")
    return config


def load_text_encoder(path: str | os.PathLike, device: str | torch.device = "cpu", max_tokens: int | None = None,
                      dtype: str = "auto") -> TextEncoder:
    """The T5 encoder in the local folder `path`, on `device` (auto, cpu, cuda[:n] or a torch.device), in half
    precision on CUDA (`dtype` auto); `max_tokens` None: DEFAULT_MAX_TOKENS.

    MissingResourceError (exit 3): no such folder, no weights or tokenizer in it, transformers or
    sentencepiece not installed. BadInputError (exit 2): a folder that is not a T5 encoder."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise MissingResourceError(f"text encoder folder {folder} does not exist (copy a T5 checkpoint there, "
                                   "e.g. google/t5-v1_1-xxl, or make a random test one with "
                                   "`hpdm random-text-encoder --out DIR`)")
    if not folder.is_dir():
        raise BadInputError(f"`text_encoder` {folder} is a file; give the folder holding config.json and the weights")
    max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else int(max_tokens)
    if max_tokens < 2:
        raise BadInputError(f"max_tokens must be at least 2 (a token and </s>), got {max_tokens}")
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    torch_dtype = _pick_dtype(dtype, device)
    transformers = _transformers()
    config = _read_config(transformers, folder)
    if not weight_files(folder):
        raise MissingResourceError(f"{folder} has no weights (model.safetensors, model-*.safetensors or "
                                   "pytorch_model*.bin); copy them from the checkpoint")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise MissingResourceError(f"{folder} has no tokenizer ({', '.join(TOKENIZER_FILES[:3])}); copy the "
                                   "checkpoint's tokenizer files beside its weights")
    if (folder / "spiece.model").is_file() and not (folder / "tokenizer.json").is_file() and not _can_read_spiece():
        raise MissingResourceError(f"{folder}'s tokenizer is a spiece.model only (no tokenizer.json); reading it needs "
                                   f"sentencepiece and protobuf: {INSTALL_HINT}")
    with _quiet(transformers):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (ImportError, KeyError, OSError, TypeError, ValueError) as err:
            raise BadInputError(f"cannot load the tokenizer in {folder}: {err}") from None
        try:
            model, info = transformers.T5EncoderModel.from_pretrained(
                folder, local_files_only=True, output_loading_info=True, **_dtype_kwarg(transformers, torch_dtype))
        except _weight_errors() as err:
            raise BadInputError(f"cannot load T5 encoder weights from {folder} (damaged or not T5): {err}") from None
    missing = [key for key in info.get("missing_keys", []) if key.startswith(("encoder.", "shared."))]
    if missing:
        raise BadInputError(f"{folder}'s weights lack {len(missing)} T5 encoder tensors (e.g. {missing[0]}); "
                            "it is not a T5 checkpoint or it is incomplete")
    model = model.to(device).eval().requires_grad_(False)
    return TextEncoder(name=folder.resolve().name, path=folder, dim=int(config.d_model), max_tokens=max_tokens,
                       fingerprint=folder_fingerprint(folder, max_tokens),
                       random_weights=bool(getattr(config, RANDOM_FLAG, False)), model=model,
                       tokenizer=tokenizer, device=device, dtype=torch_dtype)


def build_random_t5(out: str | os.PathLike, seed: int = 0, d_model: int = 128, num_layers: int = 2,
                    num_heads: int = 4, d_ff: int = 256, overwrite: bool = False) -> Path:
    """A small T5 encoder (v1.1 layout: gated GELU) with seeded random weights and ByT5's byte-level
    tokenizer (no vocabulary file), saved with save_pretrained as a normal folder; its config.json
    has `hpdm_random_weights: true`. Written to a temporary folder and renamed: never half a folder."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out} is a file; give a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise BadInputError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    if d_model % num_heads:
        raise BadInputError(f"d_model {d_model} must be a multiple of num_heads {num_heads}")
    transformers = _transformers()
    tokenizer = transformers.ByT5Tokenizer()
    config = transformers.T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=d_model // num_heads, d_ff=d_ff, num_layers=num_layers,
        num_heads=num_heads, feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False,
        use_cache=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **{RANDOM_FLAG: True})
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with _quiet(transformers), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = transformers.T5EncoderModel(config).eval()
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_fingerprint(expected: str, encoder: TextEncoder, where: str) -> None:
    """BadInputError (exit 2) unless `encoder` is the one whose fingerprint `where` recorded."""
    if expected != encoder.fingerprint:
        raise BadInputError(
            f"the text encoder {encoder.path} (fingerprint {encoder.fingerprint}, max {encoder.max_tokens} tokens) "
            f"is not the one {where} was made with (fingerprint {expected}); give that encoder folder and the same "
            "max tokens, or encode the texts again with this one (`hpdm encode-text --overwrite`)")
