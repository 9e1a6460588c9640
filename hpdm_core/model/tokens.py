"""Pixels <-> interface tokens: RIN's linear patchify, and an overlapped variant (model.token_overlap).

Plain tokens read and write their own `tf x th x tw` pixel cube. A token's output then has a border of its
own: whatever error the network makes on a token (its mean colour, most visibly) ends in a step where the
next token starts, and samples show a mosaic of tokens (the paper names RIN's 4x4 "dead pixel" artefacts).

Overlapped tokens (not in RIN or the paper) read a window twice the token's size in height and width,
centred on the token, and write one through a tent window: each output pixel is the tent-weighted mean of
the (up to four) tokens whose windows cover it. Neighbouring tokens blend linearly into each other, so an
output can be smooth across token borders and a token's error fades out instead of ending in a step. The
tents of a row of tokens sum to one, so a constant output is exactly representable. Time keeps plain
tokens: the temporal token size is 1 in every preset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def tent(size: int) -> torch.Tensor:
    """A triangular window over 2 * size pixels whose copies shifted by `size` sum to one."""
    u = torch.arange(2 * size, dtype=torch.float32) + 0.5
    return 1 - (u - size).abs() / size


def window_shape(token: tuple[int, int, int], overlap: bool) -> tuple[int, int, int]:
    """The pixel window one token reads and writes: the token, or twice it in height and width."""
    tf, th, tw = token
    return (tf, 2 * th, 2 * tw) if overlap else (tf, th, tw)


class Tokens(torch.nn.Module):
    """Cuts a level's pixels [B, n, C, f, h, w] into token vectors [B, n, N, C * window] and writes token
    vectors back into pixels, with plain or overlapped windows (module docstring)."""

    def __init__(self, token: tuple[int, int, int], grid: tuple[int, int, int], overlap: bool):
        super().__init__()
        self.token, self.grid, self.overlap = tuple(token), tuple(grid), overlap
        if overlap:
            tf, th, tw = token
            if th % 2 or tw % 2:
                raise ValueError(f"overlapped tokens need even token heights and widths, got {token}")
            weights = torch.outer(tent(th), tent(tw))  # [2th, 2tw]
            self.register_buffer("weights", weights.flatten(), persistent=False)
            # How much window covers each pixel of a frame: 1 inside, less at the patch's border, where the
            # windows that would cover it from outside do not exist. Dividing by it keeps a constant constant.
            size = (grid[1] * th, grid[2] * tw)
            cover = self._fold(weights.flatten().expand(1, grid[1] * grid[2], -1).transpose(1, 2), size)
            self.register_buffer("cover", cover, persistent=False)

    def _geometry(self) -> dict:
        _, th, tw = self.token
        return {"kernel_size": (2 * th, 2 * tw), "stride": (th, tw), "padding": (th // 2, tw // 2)}

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
