"""Context fusion between pyramid levels (docs/design.md, "Deep context fusion"; paper Eq. 7-9).

Deep: before every block, each level l >= 1 grid-samples the block-input activations of every lower
level at its own tokens' positions (Eq. 8), averages them and projects concat[a_l, ctx_l, coords_l]
back to the interface width. Shallow: a cascade-style baseline that only concatenates the previous
level's RGB patch, resampled at the current level's pixels, to the network input.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from hpdm_core.pyramid import PatchGeometry, context_grid


def context_grids(offsets: torch.Tensor, geometry: PatchGeometry, token: tuple[int, int, int],
                  levels: range) -> dict[int, torch.Tensor]:
    """For each level l in `levels` (l >= 1): grids [B, l, gf, gh, gw, 3] locating l's tokens in levels 0..l-1."""
    return {level: torch.stack([context_grid(offsets, level, k, geometry, token) for k in range(level)], 1)
            for level in levels if level >= 1}


def sample_float32(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear grid_sample of volume [B, D, f, h, w] at grid [B, gf, gh, gw, 3] in at least float32,
    autocast or not (float64 stays float64).

    Under bf16 the coordinates would carry 8 mantissa bits: up to 1.6 % of a token spacing in deep fusion
    and 12 % of a pixel in shallow fusion at 64 px. Callers cast the result back.
    """
    dtype = torch.promote_types(volume.dtype, torch.float32)
    device = volume.device.type
    with torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else nullcontext():
        # mode "bilinear" on a 5-D input is trilinear; border padding keeps edge tokens from fading to zero.
        return F.grid_sample(volume.to(dtype), grid.to(dtype), mode="bilinear", padding_mode="border",
                             align_corners=False)


def sample_context(lower: list[torch.Tensor], grid: torch.Tensor, token_grid: tuple[int, int, int]) -> torch.Tensor:
    """Mean over k of trilinear samples of lower[k] [B, N, D] at grid[:, k] [B, gf, gh, gw, 3] -> [B, N, D]
    (at least float32: the grid and the sampling stay float32 under autocast)."""
    f, h, w = token_grid
    total = None
    for k, acts in enumerate(lower):
        volume = rearrange(acts, "b (f h w) d -> b d f h w", f=f, h=h, w=w)
        sampled = sample_float32(volume, grid[:, k])
        total = sampled if total is None else total + sampled
    return rearrange(total / len(lower), "b d f h w -> b (f h w) d")


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x in the forward pass; its gradient multiplied by `scale` in the backward pass (0: detached)."""
    if scale == 1.0:
        return x
    if scale == 0.0:
        return x.detach()
    return torch.lerp(x.detach(), x, scale)  # value x, gradient scale * grad


class DeepFusion(nn.Module):
    """One per block, shared by all levels: Linear(concat[a_l, ctx_l, coords_l]) -> a_l."""

    def __init__(self, dim: int, use_coords: bool, detach_context: bool, grad_scale: float = 1.0):
        super().__init__()
        self.use_coords = use_coords
        self.grad_scale = 0.0 if detach_context else grad_scale
        self.proj = nn.Linear(2 * dim + (3 if use_coords else 0), dim)

    def reset_parameters(self) -> None:
        # Identity on a_l, zeros on ctx and coords: at initialisation fusion passes a_l through
        # unchanged, so the untrained context cannot disturb early training; the context weights
        # receive gradient from the first step on and open the path gradually.
        dim = self.proj.out_features
        with torch.no_grad():
            self.proj.weight.zero_()
            self.proj.weight[:, :dim].copy_(torch.eye(dim))
            self.proj.bias.zero_()

    def forward(self, acts: torch.Tensor, lower: list[torch.Tensor], grid: torch.Tensor, coords: torch.Tensor | None,
                token_grid: tuple[int, int, int]) -> torch.Tensor:
        """Fuse acts [B, N, D] of level l with the lower levels' block inputs (a list of l [B, N, D])."""
        lower = [scale_gradient(t, self.grad_scale) for t in lower]
        parts = [acts, sample_context(lower, grid, token_grid).to(acts.dtype)]
        if self.use_coords:
            parts.append(coords.to(acts.dtype))
        return self.proj(torch.cat(parts, -1))


def shallow_context(previous: torch.Tensor, offsets: torch.Tensor, level: int,
                    geometry: PatchGeometry) -> torch.Tensor:
    """Level l-1's patch [B, C, f, h, w] resampled at level l's pixel centres (Eq. 8): [B, C, f, h, w]."""
    grid = context_grid(offsets, level, level - 1, geometry, (1, 1, 1))
    return sample_float32(previous, grid).to(previous.dtype)


def shallow_inputs(x: torch.Tensor, offsets: torch.Tensor, geometry: PatchGeometry) -> torch.Tensor:
    """x [B, n, C, f, h, w] -> [B, n, 2C, ...]: each level with its parent's pixels (zeros for level 0)."""
    extra = [torch.zeros_like(x[:, 0])] + [shallow_context(x[:, level - 1], offsets, level, geometry)
                                            for level in range(1, x.shape[1])]
    return torch.cat([x, torch.stack(extra, 1)], 2)
