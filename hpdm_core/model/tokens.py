"""Pixels <-> interface tokens: RIN's linear patchify, and an overlapped variant (model.token_overlap).

Plain tokens read and write their own `tf x th x tw` pixel cube. A token's output then has a border of its
own: whatever error the network makes on a token (its mean colour, most visibly) ends in a step where the
next token starts, and samples show a mosaic of tokens (the paper names RIN's 4x4 "dead pixel" artefacts).

Overlapped tokens (not in RIN or the paper; model.token_overlap = m pixels) read a window that reaches m
pixels into each neighbour in height and width, and write one through a trapezoid: weight 1 on the pixels
no other window covers, ramps over the 2m pixels where two windows meet. Each output pixel is the weighted
mean of the windows that cover it, so neighbouring tokens blend into each other over 2m pixels and a
token's error fades out instead of ending in a step. The ramps of neighbours sum to one, so a constant
output is exactly representable. m = half the token is a tent (bilinear blending of token centres). Time
keeps plain tokens: the temporal token size is 1 in every preset.

A small m keeps most pixels owned by one token. A window's output is read from the interface width: with
m = 2 on 4x4 tokens each token writes 8x8x3 = 192 values from 96 dimensions in `tiny`, and per-pixel
detail (the noise the network must predict at low sigma) no longer fits through it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def trapezoid(size: int, margin: int) -> torch.Tensor:
    """A window over size + 2 * margin pixels whose copies shifted by `size` sum to one: 1 in the middle,
    linear ramps over the 2 * margin pixels at each end (margin = size / 2: a tent)."""
    u = torch.arange(size + 2 * margin, dtype=torch.float32) + 0.5
    ramp = torch.minimum(u, size + 2 * margin - u) / (2 * margin)
    return ramp.clamp(max=1.0)


def window_shape(token: tuple[int, int, int], overlap: int) -> tuple[int, int, int]:
    """The pixel window one token reads and writes: the token, `overlap` pixels wider on every side in
    height and width."""
    tf, th, tw = token
    return (tf, th + 2 * overlap, tw + 2 * overlap)


class Tokens(torch.nn.Module):
    """Cuts a level's pixels [B, n, C, f, h, w] into token vectors [B, n, N, C * window] and writes token
    vectors back into pixels, with plain or overlapped windows (module docstring; overlap in pixels)."""

    def __init__(self, token: tuple[int, int, int], grid: tuple[int, int, int], overlap: int = 0):
        super().__init__()
        self.token, self.grid, self.overlap = tuple(token), tuple(grid), int(overlap)
        self.window = window_shape(self.token, self.overlap)  # the pixels one token reads and writes
        if overlap:
            tf, th, tw = token
            if not 0 < 2 * overlap <= min(th, tw):
                raise ValueError(f"an overlap of {overlap} pixels needs tokens at least {2 * overlap} pixels high "
                                 f"and wide, got {token}")
            weights = torch.outer(trapezoid(th, overlap), trapezoid(tw, overlap))  # [th + 2m, tw + 2m]
            self.register_buffer("weights", weights.flatten(), persistent=False)
            # How much window covers each pixel of a frame: 1 inside, less at the patch's border, where the
            # windows that would cover it from outside do not exist. Dividing by it keeps a constant constant.
            size = (grid[1] * th, grid[2] * tw)
            cover = self._fold(weights.flatten().expand(1, grid[1] * grid[2], -1).transpose(1, 2), size)
            self.register_buffer("cover", cover, persistent=False)

    def _geometry(self) -> dict:
        _, th, tw = self.token
        m = self.overlap
        return {"kernel_size": (th + 2 * m, tw + 2 * m), "stride": (th, tw), "padding": (m, m)}

    def _fold(self, columns: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.fold(columns, size, **self._geometry())

    def cut(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels [B, n, C, f, h, w] -> token vectors [B, n, N, C * tf * window_h * window_w]."""
        tf, th, tw = self.token
        if not self.overlap:
            return rearrange(x, "b n c (f tf) (h th) (w tw) -> b n (f h w) (tf th tw c)", tf=tf, th=th, tw=tw)
        b, n = x.shape[:2]
        frames = rearrange(x, "b n c (f tf) h w -> (b n f) (c tf) h w", tf=tf)
        columns = F.unfold(frames, **self._geometry())  # [(b n f), (c tf) * window, h' * w']
        return rearrange(columns, "(b n f) k l -> b n (f l) k", b=b, n=n)

    def paste(self, values: torch.Tensor, channels: int) -> torch.Tensor:
        """Token vectors [B, n, N, channels * tf * window] -> pixels [B, n, channels, f, h, w]."""
        (gf, gh, gw), (tf, th, tw) = self.grid, self.token
        if not self.overlap:
            return rearrange(values, "b n (f h w) (tf th tw c) -> b n c (f tf) (h th) (w tw)",
                             f=gf, h=gh, w=gw, tf=tf, th=th, tw=tw)
        b, n = values.shape[:2]
        columns = rearrange(values, "b n (f l) (k s) -> (b n f) k s l", f=gf, s=self.weights.numel())
        columns = (columns * self.weights.to(columns.dtype).unsqueeze(-1)).flatten(1, 2)
        frames = self._fold(columns, (gh * th, gw * tw)) / self.cover.to(columns.dtype)
        return rearrange(frames, "(b n f) (c tf) h w -> b n c (f tf) h w", b=b, n=n, c=channels, tf=tf)
