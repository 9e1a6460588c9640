"""Checkpoints: plain dicts of tensors and numbers, written atomically, the last N kept.

A run folder:
    RUN/config.toml                     the run's Config (written when the run starts)
    RUN/checkpoints/step_XXXXXXXX.pt    {"format": "hpdm-checkpoint", "version": 1, "config": dict,
                                         "model", "ema", "optimizer", "scheduler", "step",
                                         "samples_seen", "ema_updates", "rng"}
    RUN/metrics.jsonl                   one JSON object per logged step
Everything loads with torch.load(weights_only=True): RNG states are tensors, the config a plain dict.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from hpdm_core import config as config_lib
from hpdm_core.config import Config
from hpdm_core.errors import BadInputError, DiskFullError
from hpdm_core.files import atomic_save

FORMAT = "hpdm-checkpoint"
VERSION = 1
CONFIG_NAME = "config.toml"
_NAME = re.compile(r"^step_(\d{8,})\.pt$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary files are ignored)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


PER_TENSOR_BYTES = 320  # torch.save's zip record, 64-byte alignment and pickle entry of one tensor (measured)


def tensor_bytes(obj: Any) -> int:
    """About the size torch.save writes for a nested state: every tensor's bytes plus its per-record overhead."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size() + PER_TENSOR_BYTES
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], keep_last: int = 3) -> Path:
    """Write state to RUN/checkpoints/step_XXXXXXXX.pt via a temporary file; prune to the last N.

    A full disk raises DiskFullError with the checkpoint's size; the earlier checkpoints stay (pruning
    comes after a successful write), so the run resumes from the last one once there is space."""
    path = checkpoint_path(run_dir, int(state["step"]))
    try:
        atomic_save(path, lambda tmp: torch.save({"format": FORMAT, "version": VERSION, **state}, tmp),
                    needed=tensor_bytes(state), what="the checkpoint")
    except DiskFullError as err:
        last = latest_checkpoint(run_dir)
        kept = f"; the run resumes from {last.name}" if last is not None else ""
        raise DiskFullError(f"{err}{kept}") from None
    if keep_last > 0:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def load_error_reason(err: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, without torch's advice to retry with
    weights_only=False: that would run whatever code the file carries."""
    text = str(err)
    if "Weights only load failed" in text:
        detail = next((line.strip() for line in text.splitlines()
                       if "GLOBAL" in line or "global" in line.split("`")[0]), "")
        return ("it holds Python objects besides tensors, and hpdm never runs code from a file"
                + (f" ({detail.rstrip('.')})" if detail else ""))
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise BadInputError(f"{path} is not a readable hpdm checkpoint: the file is empty")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, foreign or pickled-object files
        raise BadInputError(f"{path} is not a readable hpdm checkpoint ({load_error_reason(err)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise BadInputError(f"{path} is not an hpdm checkpoint (no format={FORMAT!r} entry)")
    if int(state.get("version", 0)) > VERSION:
        raise BadInputError(f"{path} has checkpoint version {state['version']}; this hpdm reads up to {VERSION}")
    return state


def non_finite(state: dict[str, Any]) -> int:
    """How many float tensors of the weights (raw and EMA) hold a NaN or an infinity."""
    tensors = [t for part in ("model", "ema") for t in (state.get(part) or {}).values()]
    return sum(1 for t in tensors if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all())


def load_latest(run_dir: str | Path, map_location: str | torch.device = "cpu"
                ) -> tuple[Path, dict[str, Any], list[str]] | None:
    """(path, state, notes) of the newest checkpoint that loads and has finite weights; None without any.

    A checkpoint cut short (e.g. by a full disk) or with non-finite weights is passed over, and `notes`
    says so; BadInputError when no checkpoint is usable."""
    notes = []
    found = list_checkpoints(run_dir)
    for path in reversed(found):
        try:
            state = load_checkpoint(path, map_location)
        except BadInputError as err:
            notes.append(f"skipped {err}")
            continue
        bad = non_finite(state)
        if bad:
            notes.append(f"skipped {path}: {bad} weight tensors are not finite")
            continue
        if notes:
            notes.append(f"using {path}, the newest usable checkpoint")
        return path, state, notes
    if found:
        raise BadInputError(f"no usable checkpoint in {checkpoint_dir(run_dir)}: " + "; ".join(notes) +
                            ". Remove them to start the run again")
    return None


def resolve_checkpoint(run_dir: str | Path, checkpoint: str | Path | None = None) -> Path:
    """An explicit checkpoint path, else the run folder's latest one."""
    if checkpoint is not None:
        return Path(checkpoint)
    path = latest_checkpoint(run_dir)
    if path is None:
        raise BadInputError(f"{run_dir} holds no checkpoint (expected {checkpoint_dir(run_dir)}/step_*.pt); "
                            "train it first (`hpdm train`, or hpdm_core.train from Python)")
    return path


def load_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise BadInputError(f"{run_dir} is not a run folder: {CONFIG_NAME} is missing")
    return config_lib.load(path)


def _model_part(cfg: Config) -> dict[str, Any]:
    return {"model": cfg.to_dict()["model"], "diffusion": cfg.to_dict()["diffusion"]}


def load_for_inference(run_dir: str | Path, checkpoint: str | Path | None = None, use_ema: bool = True,
                       device: str | torch.device = "cpu") -> tuple[Config, torch.nn.Module, dict[str, Any]]:
    """(Config, Denoiser in eval mode on `device`, info) from a run folder's latest (or a given) checkpoint.

    The network is rebuilt from the checkpoint's own config; a run folder whose config.toml disagrees
    with it on the model or diffusion settings is refused rather than silently mixed.
    """
    from hpdm_core.diffusion import build_denoiser  # late: the model package is heavy and optional here

    notes: list[str] = []
    if checkpoint is None:  # the run's newest usable checkpoint
        found = load_latest(run_dir)
        if found is None:
            resolve_checkpoint(run_dir)  # raises: no checkpoint
        path, state, notes = found
    else:
        path = Path(checkpoint)
        state = load_checkpoint(path)
    try:
        cfg = config_lib.from_dict(state["config"]).validate()
    except (KeyError, TypeError) as err:
        raise BadInputError(f"{path} has no usable config: {err}") from None
    run_config = Path(run_dir) / CONFIG_NAME
    if run_config.is_file() and _model_part(config_lib.load(run_config)) != _model_part(cfg):
        raise BadInputError(f"{path} was trained with a different model/diffusion config than {run_config}; "
                            "pass a checkpoint of this run or restore its config.toml")
    denoiser = build_denoiser(cfg)
    weights = state["ema"] if use_ema and state.get("ema") else state["model"]
    try:
        denoiser.load_state_dict(weights)
    except RuntimeError as err:
        raise BadInputError(f"{path} does not match the network its config describes: {err}") from None
    denoiser.to(device).eval().requires_grad_(False)
    info = {"step": int(state["step"]), "samples_seen": int(state.get("samples_seen", 0)), "path": str(path),
            "ema": bool(use_ema and state.get("ema")), "notes": notes}
    return cfg, denoiser, info
