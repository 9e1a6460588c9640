"""Patch geometry of the hierarchy (docs/design.md, "The patch pyramid"; normative).

Level l (0..L) is the target video box-downsampled by 2**(L-l): a canvas of r * 2**l pixels per
axis, where r = (f, h, w) is the patch resolution shared by all levels. A patch is placed by its
integer offset o_l in its level's canvas pixels. Its normalised coordinates are c_l = (s_l, delta_l)
with scale s_l = 2**-l and delta_l = o_l / R_l in full-video units, so patch l covers
[delta_l, delta_l + s_l) of the video along every axis.

Offsets are LongTensors [..., num_levels, 3] ordered (frames, height, width); entry k is level k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from hpdm_core.errors import BadInputError

AXES = "fhw"


@dataclass(frozen=True)
class PatchGeometry:
    patch: tuple[int, int, int]
    num_levels: int

    @classmethod
    def from_config(cls, model_cfg) -> "PatchGeometry":
        return cls(tuple(int(p) for p in model_cfg.patch), int(model_cfg.num_levels))

    def canvas(self, level: int) -> tuple[int, int, int]:
        """Level-l video size R_l = r * 2**l."""
        return tuple(p * 2 ** level for p in self.patch)

    @property
    def target(self) -> tuple[int, int, int]:
        return self.canvas(self.num_levels - 1)

    def scale(self, level: int) -> float:
        return 2.0 ** -level


# ----------------------------------------------------------------------------- training: nested draws

def sample_nested_offsets(batch: int, geometry: PatchGeometry, generator: torch.Generator | None = None,
                          device: torch.device | str = "cpu") -> torch.Tensor:
    """Offsets [batch, num_levels, 3] of nested chains, drawn from the top level down.

    The finest patch o_L is uniform over its canvas; then each parent o_{l-1} is uniform among the
    integer positions that contain its child and lie in their canvas (parent_range), down to o_0 = 0.
    Inference denoises every tile of the top level, borders and corners included, so training must see
    them as often: drawing each level uniformly inside its parent instead (bottom-up) concentrates the
    top patch near the centre (a corner of a 64x256x256 video: 5.6e-8 against 2.5e-4 when uniform).
    """
    r = torch.tensor(geometry.patch, dtype=torch.long)
    top = geometry.num_levels - 1
    offsets = torch.zeros(batch, geometry.num_levels, 3, dtype=torch.long)
    offsets[:, top] = _uniform_int(torch.zeros(batch, 3, dtype=torch.long),
                                   (torch.tensor(geometry.canvas(top)) - r).expand(batch, 3), generator)
    for level in range(top, 0, -1):
        lo, hi = parent_range(offsets[:, level], level, geometry)
        offsets[:, level - 1] = _uniform_int(lo, hi, generator)
    return offsets.to(device)


def _uniform_int(lo: torch.Tensor, hi: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Integers uniform in [lo, hi] elementwise (float64 draws: exact for any canvas size)."""
    u = torch.rand(lo.shape, generator=generator, dtype=torch.float64)
    return lo + (u * (hi - lo + 1).to(torch.float64)).long().clamp_max(hi - lo)


def parent_range(child: torch.Tensor, level: int, geometry: PatchGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) [..., 3]: the level-(level-1) offsets whose patch contains the level-`level` patch `child`.

    Nesting, 2*o_{l-1} <= o_l and o_l + r <= 2*(o_{l-1} + r), with the parent inside its canvas:
    max(0, ceil((o_l - r) / 2)) <= o_{l-1} <= min(R_{l-1} - r, floor(o_l / 2)); never empty.
    """
    r = torch.tensor(geometry.patch, dtype=torch.long, device=child.device)
    canvas = torch.tensor(geometry.canvas(level - 1), device=child.device)
    lo = torch.clamp_min(-torch.div(r - child, 2, rounding_mode="floor"), 0)
    hi = torch.minimum(canvas - r, torch.div(child, 2, rounding_mode="floor"))
    return lo, hi


def is_nested(offsets: torch.Tensor, geometry: PatchGeometry) -> torch.Tensor:
    """Bool [...]: every level lies in its canvas and inside the level below it."""
    r = torch.tensor(geometry.patch, device=offsets.device)
    ok = torch.ones(offsets.shape[:-2], dtype=torch.bool, device=offsets.device)
    for level in range(geometry.num_levels if offsets.shape[-2] == geometry.num_levels else offsets.shape[-2]):
        o = offsets[..., level, :]
        canvas = torch.tensor(geometry.canvas(level), device=offsets.device)
        ok &= ((o >= 0) & (o + r <= canvas)).all(-1)
        if level > 0:
            parent = offsets[..., level - 1, :]
            ok &= ((2 * parent <= o) & (o + r <= 2 * (parent + r))).all(-1)
    return ok


# ----------------------------------------------------------------------------- coordinates

def patch_coords(offsets: torch.Tensor, geometry: PatchGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale [..., n], delta [..., n, 3]) of each level's patch, in full-video units."""
    n = offsets.shape[-2]
    levels = torch.arange(n, device=offsets.device)
    canvases = torch.tensor([geometry.canvas(level) for level in range(n)], device=offsets.device, dtype=torch.float64)
    delta = offsets.to(torch.float64) / canvases
    scale = (2.0 ** -levels.to(torch.float64)).expand(offsets.shape[:-1])
    return scale, delta


def relative_coords(scale_l: torch.Tensor, delta_l: torch.Tensor, scale_k: torch.Tensor,
                    delta_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 8: coordinates of patch l inside patch k < l, c_hat = (s_l / s_k, (delta_l - delta_k) / s_k)."""
    return scale_l / scale_k, (delta_l - delta_k) / scale_k.unsqueeze(-1)


def token_grid(geometry: PatchGeometry, token: tuple[int, int, int]) -> tuple[int, int, int]:
    """Tokens per axis of one patch."""
    return tuple(p // t for p, t in zip(geometry.patch, token))


def local_token_centres(geometry: PatchGeometry, token: tuple[int, int, int],
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """[N, 3] token centres in the patch's own unit cube, raster order (f, h, w)."""
    axes = [(torch.arange(n, device=device, dtype=torch.float64) + 0.5) / n for n in token_grid(geometry, token)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def token_centres(offsets: torch.Tensor, geometry: PatchGeometry, token: tuple[int, int, int]) -> torch.Tensor:
    """Global centres (t, y, x) in [0, 1]^3 of every token: [..., n, N, 3] (float32)."""
    scale, delta = patch_coords(offsets, geometry)
    local = local_token_centres(geometry, token, offsets.device)
    return (delta.unsqueeze(-2) + scale[..., None, None] * local).float()


def context_grid(offsets: torch.Tensor, level: int, context_level: int, geometry: PatchGeometry,
                 token: tuple[int, int, int]) -> torch.Tensor:
    """grid_sample grid [..., *token_grid, 3] locating level `level`'s tokens in `context_level`'s patch.

    By Eq. 8, a point at u in patch l's unit cube sits at delta_hat + s_hat * u in patch k's; the
    result is mapped to grid_sample's [-1, 1] (align_corners=False: -1 and 1 are the outer edges of
    the border tokens) with the last axis ordered (w, h, f) as grid_sample expects.
    """
    scale, delta = patch_coords(offsets, geometry)
    s_hat, d_hat = relative_coords(scale[..., level], delta[..., level, :], scale[..., context_level],
                                   delta[..., context_level, :])
    local = local_token_centres(geometry, token, offsets.device)  # [N, 3]
    u = d_hat.unsqueeze(-2) + s_hat[..., None, None] * local  # [..., N, 3] in patch k's unit cube
    grid = (2 * u - 1).flip(-1).float()
    return grid.reshape(*grid.shape[:-2], *token_grid(geometry, token), 3)


# ----------------------------------------------------------------------------- extraction

def level_video(clips: torch.Tensor, level: int, geometry: PatchGeometry) -> torch.Tensor:
    """The level-l video [B, C, *R_l]: the target clip box-downsampled by 2**(L-l)."""
    factor = 2 ** (geometry.num_levels - 1 - level)
    return clips if factor == 1 else F.avg_pool3d(clips, kernel_size=factor, stride=factor)


def crop(videos: torch.Tensor, offsets: torch.Tensor, size: tuple[int, int, int],
         rows: torch.Tensor | None = None) -> torch.Tensor:
    """Exact crops [n, C, *size] of videos [B, C, F, H, W] at integer offsets [n, 3]: crop i is taken
    from video rows[i] (default: video i), gathered directly rather than copying whole videos first."""
    b = torch.arange(videos.shape[0], device=videos.device) if rows is None else rows
    fi, hi, wi = (offsets[:, axis, None] + torch.arange(size[axis], device=videos.device) for axis in range(3))
    out = videos.permute(0, 2, 3, 4, 1)[b[:, None, None, None], fi[:, :, None, None], hi[:, None, :, None],
                                        wi[:, None, None, :]]
    return out.permute(0, 4, 1, 2, 3)


def extract_hierarchy(clips: torch.Tensor, offsets: torch.Tensor, geometry: PatchGeometry) -> torch.Tensor:
    """Patches [B, n, C, f, h, w] of target clips [B, C, *R]: exact crops of each level's video."""
    target = tuple(clips.shape[-3:])
    if target != geometry.target:
        raise BadInputError(f"clips are {list(target)} but the hierarchy needs {list(geometry.target)}")
    return torch.stack([crop(level_video(clips, level, geometry), offsets[:, level], geometry.patch)
                        for level in range(offsets.shape[1])], 1)


# Float32 bytes of the source region one pooling call converts (extract_chain): bounds a worker's
# transient memory whatever the clip size (a 64x256x256 clip is 50 MB in float32).
CHUNK_BYTES = 8 * 2 ** 20


def extract_chain(clip: torch.Tensor, offsets: torch.Tensor, geometry: PatchGeometry,
                  values: Callable[[torch.Tensor], torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """Patches [n, C, f, h, w] of ONE target clip [C, *R] held in any dtype (uint8 pixels), at offsets
    [n, 3]: the same numbers as extract_hierarchy(values(clip)[None], offsets[None])[0].

    Level l's patch is the box filter (factor k = 2**(L-l)) of the clip's region [k o_l, k (o_l + r)),
    so only that region is converted by `values` and pooled, a few frames at a time (CHUNK_BYTES):
    each pooled value sums the same k^3 source values in the same order as pooling the whole clip, and
    no float copy of the whole clip is made. `out`: where to write them (e.g. a row of a batch).
    """
    target = tuple(clip.shape[-3:])
    if target != geometry.target:
        raise BadInputError(f"clips are {list(target)} but the hierarchy needs {list(geometry.target)}")
    n = offsets.shape[0]
    out = clip.new_empty((n, clip.shape[0], *geometry.patch), dtype=torch.float32) if out is None else out
    for level in range(n):
        k = 2 ** (geometry.num_levels - 1 - level)
        f0, h0, w0 = (int(o) * k for o in offsets[level])
        f, h, w = (p * k for p in geometry.patch)
        region = clip[:, f0:f0 + f, h0:h0 + h, w0:w0 + w]
        step = max(1, CHUNK_BYTES // (4 * clip.shape[0] * k * h * w))  # pooled frames per chunk
        for t in range(0, geometry.patch[0], step):
            chunk = values(region[:, t * k:(t + step) * k])
            out[level, :, t:t + step] = chunk if k == 1 else F.avg_pool3d(chunk[None], k, k)[0]
    return out


# ----------------------------------------------------------------------------- inference tilings

class Overlap(NamedTuple):
    """Which axes (frames, height, width) neighbouring inference tiles overlap by 50 %."""

    f: bool = False
    h: bool = False
    w: bool = False


def parse_overlap(text: str) -> Overlap:
    """--overlap / sample.overlap: 'none' or letters of 'fhw' (each at most once) -> Overlap."""
    text = text.strip().lower()
    if text in ("none", ""):
        return Overlap()
    if any(c not in AXES for c in text) or len(set(text)) != len(text):
        raise BadInputError(f"overlap {text!r}: use 'none' or letters of 'fhw' once each (e.g. hw, fhw)")
    return Overlap(*(axis in text for axis in AXES))


def axis_positions(patch: int, canvas: int, overlapped: bool, shift: int = 0) -> torch.Tensor:
    """Tile starts along one axis: stride r/2 (2 * 2**l - 1 tiles) or r (2**l tiles).

    shift > 0 (overlapped axes only, below the stride) starts the tiles `shift` pixels further on, with one
    more tile at each end of the canvas so that every pixel stays covered: a second tiling whose token
    borders and seams fall between the first one's (`sample.tile_shifts`)."""
    if overlapped and patch % 2:
        raise BadInputError(f"a 50 % overlap needs an even patch size, got {patch}")
    stride = patch // 2 if overlapped else patch
    if shift and not (overlapped and 0 < shift < stride):
        raise BadInputError(f"a tile shift of {shift} pixels needs an overlapped axis and a shift below its "
                            f"stride {stride} (half the patch)")
    if not shift or canvas == patch:
        return torch.arange(0, canvas - patch + 1, stride)
    starts = {0, canvas - patch, *range(shift, canvas - patch + 1, stride)}
    return torch.tensor(sorted(starts))


def tile_offsets(geometry: PatchGeometry, level: int, overlap: Overlap, shift: int = 0) -> torch.Tensor:
    """Offsets [T, 3] of the tiles covering the level-l canvas, raster order; `shift` moves the tiles of the
    overlapped height and width axes (`axis_positions`; frames are never shifted: tokens are one frame deep)."""
    canvas = geometry.canvas(level)
    axes = [axis_positions(geometry.patch[i], canvas[i], overlap[i], shift if i > 0 and overlap[i] else 0)
            for i in range(3)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def parent_chain(tiles: torch.Tensor, level: int, geometry: PatchGeometry) -> torch.Tensor:
    """Offsets [T, level + 1, 3]: each tile with parents centred over it, clamped to their canvas.

    The centred parent o_{l-1} = floor((2*o_l - r) / 4) is clamped to the intersection of its
    canvas and the nesting range [ceil((o_l - r) / 2), floor(o_l / 2)], which is never empty, so
    the chain obeys the training-time nesting rule exactly.
    """
    r = torch.tensor(geometry.patch, dtype=torch.long, device=tiles.device)
    chain = [tiles.long()]
    for child_level in range(level, 0, -1):
        child = chain[-1]
        centred = torch.div(2 * child - r, 4, rounding_mode="floor")
        lo, hi = parent_range(child, child_level, geometry)
        chain.append(torch.maximum(torch.minimum(centred, hi), lo))
    return torch.stack(chain[::-1], 1)


def tile_chains(geometry: PatchGeometry, level: int, overlap: Overlap, shift: int = 0) -> torch.Tensor:
    """Offsets [T, level + 1, 3] of every tile of level `level` (shifted by `shift`) with its nested parents."""
    return parent_chain(tile_offsets(geometry, level, overlap, shift), level, geometry)


def tile_weights(patch: tuple[int, int, int], overlap: Overlap, blend: str = "uniform") -> torch.Tensor:
    """What a tile's prediction weighs at each of its pixels when tiles are averaged: float [*r].

    "uniform": 1 everywhere (the paper's average). "tent": along each overlapped axis a tent
    min(i + 1/2, r - i - 1/2) / (r / 2), which never reaches 0; shifted by the stride r / 2 the tents of
    neighbouring tiles sum to a constant, so inside the canvas the average is a smooth cross-fade."""
    weights = torch.ones(patch)
    if blend == "uniform":
        return weights
    if blend != "tent":
        raise ValueError(f"unknown tile blend {blend!r}")
    for axis, (size, overlapped) in enumerate(zip(patch, overlap)):
        if overlapped:
            i = torch.arange(size, dtype=torch.float32) + 0.5
            shape = [1, 1, 1]
            shape[axis] = size
            weights = weights * (torch.minimum(i, size - i) / (size / 2)).reshape(shape)
    return weights


def tile_coverage(geometry: PatchGeometry, level: int, overlap: Overlap, blend: str = "uniform",
                  shift: int = 0) -> torch.Tensor:
    """The summed tile weights over each pixel of the level-l canvas: float [*R_l] (uniform: how many
    tiles cover it), what the tiles' weighted predictions are divided by (docs/design.md, "Sampling")."""
    counts = torch.zeros(geometry.canvas(level))
    f, h, w = geometry.patch
    weights = tile_weights(geometry.patch, overlap, blend)
    for o in tile_offsets(geometry, level, overlap, shift).tolist():
        counts[o[0]:o[0] + f, o[1]:o[1] + h, o[2]:o[2] + w] += weights
    return counts


def add_tiles(total: torch.Tensor, samples: torch.Tensor, offsets: torch.Tensor, patches: torch.Tensor) -> None:
    """total[samples[i]] += patches[i] at offsets[i], in row order (so the sum is batching-independent)."""
    f, h, w = patches.shape[-3:]
    for i, (b, o) in enumerate(zip(samples.tolist(), offsets.tolist())):
        total[b, :, o[0]:o[0] + f, o[1]:o[1] + h, o[2]:o[2] + w] += patches[i]
