"""Start a run from another run's EMA weights (`hpdm train --init-from`): the paper's scale-up path.

The paper trained its large model's lowest stage alone at low resolution and then fine-tuned the full
pyramid from it for 3 % of the base's steps. Here a new run may differ from its source in the number of
levels, the target size (it follows from the levels) and the patch size; everything else that shapes a
weight must match (`check_compatible`). Tensor by tensor (`carry_over`):

- copied: same role and shape (the RIN blocks, tokenizer, embeddings of noise level and class, ...);
- resampled: the learned `position` table [num_tokens, D] when the patch size changes the token grid,
  trilinear over the grid (a token's position is a place inside its patch);
- per level: latents [num_levels, M, Dl] and the level embedding copy the levels the source has; new
  levels start as a copy of the source's top level ("top", train.init_new_levels) or as in a fresh run
  ("fresh");
- new: tensors the source lacks or never trained (a deep-fusion projection of a block that processed
  only level 0 there is frozen at its initial value): initialised as a fresh run would.
The optimizer and the EMA restart from the result. The coordinate features do not depend on the target
(model.coord_max_frequency), so base and child see the same features for the same place in the video.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hpdm_core import checkpoint as ckpt
from hpdm_core import config as config_lib
from hpdm_core.config import Config
from hpdm_core.errors import BadInputError, MissingResourceError
from hpdm_core.files import atomic_write_text
from hpdm_core.pyramid import PatchGeometry, token_grid

REPORT_NAME = "init_from.json"

# Settings that shape weights (or what the weights mean) and must match between source and new run.
# num_levels, patch (and so the target) and levels_per_block may change.
MUST_MATCH = ("channels", "token", "interface_dim", "latent_dim", "num_latents", "num_blocks", "latent_layers",
              "head_dim", "mlp_ratio", "fourier_features", "fusion", "use_coords", "interface_conditioning",
              "token_mixing", "token_mixing_frames", "token_overlap", "num_classes", "conditioning",
              "text_dim", "text_tokens")

PER_LEVEL = ("model.latents", "model.level_embedding.weight")  # first axis: pyramid level
POSITION = "model.position"  # [num_tokens, D] over the token grid of a patch


@dataclass
class Source:
    """The run a new one starts from: its checkpoint, config and EMA weights."""

    path: Path
    cfg: Config
    weights: dict[str, torch.Tensor]
    step: int


@dataclass
class Row:
    """One tensor of the new network and where its initial value came from."""

    name: str
    shape: list[int]
    status: str  # copied | resampled | levels | new
    detail: str = ""


def resolve_checkpoint(where: str | Path) -> Path:
    """A checkpoint file, or a run folder's newest usable checkpoint."""
    where = Path(where)
    if where.is_dir():
        found = ckpt.load_latest(where)
        if found is None:
            raise MissingResourceError(f"`train.init_from` {where}: the run folder holds no checkpoint yet "
                                       f"(expected {ckpt.checkpoint_dir(where)}/step_*.pt)")
        return found[0].resolve()
    if not where.exists():
        raise MissingResourceError(f"`train.init_from` {where} does not exist: give a run folder or a checkpoint file")
    return where.resolve()


def load_source(where: str | Path) -> Source:
    path = resolve_checkpoint(where)
    state = ckpt.load_checkpoint(path)
    try:
        cfg = config_lib.from_dict(state["config"]).validate()
    except (KeyError, TypeError) as err:
        raise BadInputError(f"`train.init_from` {path} has no usable config: {err}") from None
    weights = state.get("ema") or state["model"]  # the EMA weights, as sampling uses them
    return Source(path, cfg, weights, int(state.get("step", 0)))


def check_compatible(source: Config, cfg: Config, where: str | Path = "the source") -> None:
    """BadInputError naming every model setting whose weights cannot carry over from `source` to `cfg`."""
    a, b = source.model, cfg.model
    bad = [f"model.{key} = {getattr(a, key)!r} there, {getattr(b, key)!r} here"
           for key in MUST_MATCH if hasattr(a, key) and not config_lib._same(getattr(a, key), getattr(b, key, None))]
    if a.use_coords and b.use_coords and a.coord_frequency != b.coord_frequency:
        bad.append(f"model.coord_max_frequency: the coordinate features reach {a.coord_frequency:g} there and "
                   f"{b.coord_frequency:g} here (set model.coord_max_frequency={a.coord_frequency:g})")
    if bad:
        raise BadInputError(f"`train.init_from` {where}: these settings differ and their weights cannot carry over: "
                            + "; ".join(bad) + ". Only model.num_levels, model.patch and model.levels_per_block "
                            "may change; use the source's values for the others")


def _untrained(cfg: Config) -> set[str]:
    """Prefixes of tensors a network of cfg never trains: the fusion of a block that processes level 0 only."""
    levels = cfg.model.block_levels
    return {f"model.fusions.{i}." for i in range(cfg.model.num_blocks) if levels[i] <= 1} \
        if cfg.model.fusion == "deep" else set()


def resample_position(table: torch.Tensor, old_grid: tuple[int, ...], new_grid: tuple[int, ...]) -> torch.Tensor:
    """[prod(old_grid), D] -> [prod(new_grid), D], trilinear over the (f, h, w) token grid."""
    dim = table.shape[-1]
    volume = table.float().T.reshape(1, dim, *old_grid)
    resized = F.interpolate(volume, size=tuple(new_grid), mode="trilinear", align_corners=False)
    return resized.reshape(dim, -1).T.to(table.dtype).contiguous()


@torch.no_grad()
def carry_over(denoiser: torch.nn.Module, cfg: Config, source: Source, new_levels: str | None = None) -> list[Row]:
    """Copy, resample or keep each tensor of `denoiser` (built for cfg, freshly initialised) from `source`;
    returns one Row per tensor, in state-dict order."""
    check_compatible(source.cfg, cfg, source.path)
    new_levels = new_levels or cfg.train.init_new_levels
    old_grid = token_grid(PatchGeometry.from_config(source.cfg.model), tuple(source.cfg.model.token))
    new_grid = token_grid(PatchGeometry.from_config(cfg.model), tuple(cfg.model.token))
    untrained = _untrained(source.cfg)
    have = source.cfg.model.num_levels
    state = denoiser.state_dict()
    rows, out = [], {}
    for name, fresh in state.items():
        old = source.weights.get(name)
        shape = list(fresh.shape)
        if old is None or any(name.startswith(p) for p in untrained):
            why = "not in the source" if old is None else "untrained in the source (no level above 0 there)"
            rows.append(Row(name, shape, "new", why))
            continue
        if name == POSITION and tuple(old_grid) != tuple(new_grid):
            out[name] = resample_position(old, old_grid, new_grid)
            rows.append(Row(name, shape, "resampled", f"token grid {'x'.join(map(str, old_grid))} -> "
                                                      f"{'x'.join(map(str, new_grid))}, trilinear"))
            continue
        if name in PER_LEVEL and old.shape[0] != fresh.shape[0]:
            value = fresh.clone()
            kept = min(have, fresh.shape[0])
            value[:kept] = old[:kept]
            detail = f"level{'s 0-' if kept > 1 else ' '}{kept - 1} copied"
            if fresh.shape[0] > have:
                added = f"s {have}-{fresh.shape[0] - 1}" if fresh.shape[0] - 1 > have else f" {have}"
                if new_levels == "top":
                    value[have:] = old[have - 1]
                    detail += f", level{added} from its top level"
                else:
                    detail += f", level{added} new"
            else:
                detail += f" of the source's {have}"
            out[name] = value
            rows.append(Row(name, shape, "levels", detail))
            continue
        if list(old.shape) != shape:
            raise BadInputError(f"`train.init_from` {source.path}: tensor {name} has shape {list(old.shape)} there and "
                                f"{shape} here, and no rule carries it over")
        out[name] = old
        rows.append(Row(name, shape, "copied"))
    for name, value in out.items():
        state[name].copy_(value.to(state[name].dtype))
    return rows


def initialise(denoiser: torch.nn.Module, cfg: Config) -> dict[str, Any]:
    """Carry cfg.train.init_from's EMA weights into `denoiser`; the report init_from.json stores."""
    source = load_source(cfg.train.init_from)
    rows = carry_over(denoiser, cfg, source)
    return {"source": str(source.path), "source_step": source.step, "source_levels": source.cfg.model.num_levels,
            "source_patch": list(source.cfg.model.patch), "levels": cfg.model.num_levels,
            "patch": list(cfg.model.patch), "new_levels": cfg.train.init_new_levels,
            "tensors": [asdict(r) for r in rows]}


def write_report(run_dir: str | Path, report: dict[str, Any]) -> Path:
    path = Path(run_dir) / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    return path


def summary_rows(report: dict[str, Any]) -> list[tuple[str, int, int, str]]:
    """The report folded for printing: (tensors, count, parameters, what happened). Tensors of one module
    (the first two parts of the name, e.g. model.blocks.3) that all fared alike share a row."""
    groups: dict[str, list[dict]] = {}
    for row in report["tensors"]:
        parts = row["name"].split(".")
        key = ".".join(parts[:3] if parts[1] in ("blocks", "fusions") else parts[:2])
        groups.setdefault(key, []).append(row)
    out = []
    for key, rows in groups.items():
        kinds = {(r["status"], r["detail"]) for r in rows}
        members = [(key + ".*" if len(rows) > 1 else rows[0]["name"], rows)] if len(kinds) == 1 else \
            [(r["name"], [r]) for r in rows]
        for label, group in members:
            size = sum(int(torch.Size(r["shape"]).numel()) for r in group)
            status = group[0]["status"] + (f" ({group[0]['detail']})" if group[0]["detail"] else "")
            out.append((label, len(group), size, status))
    return out
