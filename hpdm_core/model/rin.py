"""One Recurrent Interface Network block (Jabri et al. 2023): read, process latents, write.

The interface (patch tokens) never attends to itself; all global mixing happens in the small set of
latents, which is why the cost grows only linearly with the number of tokens.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from hpdm_core.model.layers import MLP, Attention


class LatentLayer(nn.Module):
    """Pre-norm latent self-attention + MLP."""

    def __init__(self, dim: int, head_dim: int, mlp_ratio: float):
        super().__init__()
        self.norm_attn, self.attn = nn.LayerNorm(dim), Attention(dim, head_dim)
        self.norm_mlp, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z + self.attn(self.norm_attn(z))
        return z + self.mlp(self.norm_mlp(z))


class CrossLayer(nn.Module):
    """Pre-norm cross-attention of `x` over `source` + MLP on `x`."""

    def __init__(self, dim: int, source_dim: int, head_dim: int, mlp_ratio: float):
        super().__init__()
        self.norm_x, self.norm_source = nn.LayerNorm(dim), nn.LayerNorm(source_dim)
        self.attn = Attention(dim, head_dim, context_dim=source_dim)
        self.norm_mlp, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_x(x), self.norm_source(source))
        return x + self.mlp(self.norm_mlp(x))


class TextRead(nn.Module):
    """Pre-norm cross-attention of the latents over the text tokens (text-conditional models only).

    Text reaches the network the way everything reaches a RIN: through its latents. A cross-attention
    per block rather than text tokens appended to the latents: padded text keys need a mask, and a mask
    only here keeps the latent self-attention on the fused (flash) kernels; the latents' count stays M.
    No MLP: the latent layers that follow have theirs.
    """

    def __init__(self, dim: int, head_dim: int):
        super().__init__()
        self.norm_z, self.norm_text = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, head_dim)

    def forward(self, z: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """z [X, M, D] reads tokens [X, T, D] where mask [X, T] is True."""
        return z + self.attn(self.norm_z(z), self.norm_text(tokens), key_mask=mask)


class TokenMixing(nn.Module):
    """Not in RIN or the paper (model.token_mixing): a depthwise 3x3 convolution over each frame's grid
    of interface tokens, added to the interface. Tokens otherwise meet only through the latents, and a
    short run predicts each token from its own noisy pixels: samples come out as a mosaic of per-token
    colours. This lets a token average its neighbours.

    Averaging neighbours helps at high noise and blurs at low noise, so the conditioning (noise level,
    pyramid level, class) gates it per channel, as adaLN gates a residual branch (measured ungated: the
    mosaic went, but level 0's error at sigma 0.1 rose from 0.35 to 0.85 sigma^2).

    Spatial and zero-padded because that is the convolution a CPU runs fast: a 3x3x3 one, or replicate
    padding, cost 4-20x more time than the 2-D one in forward + backward.

    Zero-initialised, so it starts as the paper's block. Its weights are free parameters rather than a
    Conv2d: they then fall in the optimizer group without weight decay or trust ratio (optim.decay_groups).
    Under LAMB's trust ratio a tensor that starts at zero moves by lr x its own norm per step and stays
    near zero for a whole short run (measured: mean |w| 4e-4 after 600 steps).
    """

    def __init__(self, dim: int, cond_dim: int, token_grid: tuple[int, int, int], frames: int = 1):
        super().__init__()
        self.token_grid = token_grid
        self.weight = nn.Parameter(torch.zeros(dim, 1, 3, 3))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.gate = nn.Linear(cond_dim, dim)
        # Optionally the same token in the neighbouring frames too: a depthwise kernel over time, applied
        # with shifted slices (a (2+1)-D mixing; a 3x3x3 convolution costs 4-20x the 2-D one on a CPU).
        self.time_weight = nn.Parameter(torch.zeros(frames, dim)) if frames > 1 else None

    def reset_parameters(self) -> None:
        """Zero convolution (the block starts as the paper's); the gate keeps its random weights, since
        a zero matrix under LAMB's trust ratio would stay near zero, and gets a zero bias."""
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.gate.bias)
        if self.time_weight is not None:
            nn.init.zeros_(self.time_weight)

    def forward(self, a: torch.Tensor, cond: torch.Tensor, time_from_row: int = 0) -> torch.Tensor:
        """a [X, N, D] + (1 + gate(cond)) * conv(a); cond [X, 1, Dc], the summed conditioning embedding.
        Rows from `time_from_row` on also mix over time (model.token_mixing_time_from_level)."""
        f, h, w = self.token_grid
        frames = rearrange(a, "x (f h w) d -> (x f) d h w", f=f, h=h, w=w)
        mixed = F.conv2d(frames, self.weight.to(a.dtype), self.bias.to(a.dtype), padding=1, groups=a.shape[-1])
        mixed = rearrange(mixed, "(x f) d h w -> x (f h w) d", f=f)
        if self.time_weight is not None and time_from_row < len(a):
            over_time = self._mix_time(a[time_from_row:])
            mixed = (mixed + over_time if time_from_row == 0 else
                     torch.cat([mixed[:time_from_row], mixed[time_from_row:] + over_time]))
        gate = 1 + self.gate(F.silu(cond)).to(a.dtype)
        return a + gate * mixed

    def _mix_time(self, a: torch.Tensor) -> torch.Tensor:
        """sum_k time_weight[k] * (a shifted by k - K // 2 frames), zero beyond the patch's frames."""
        f = self.token_grid[0]
        grid = rearrange(a, "x (f n) d -> x f n d", f=f)
        half = self.time_weight.shape[0] // 2
        padded = F.pad(grid, (0, 0, 0, 0, half, half))
        weight = self.time_weight.to(a.dtype)
        out = sum(weight[k] * padded[:, k:k + f] for k in range(weight.shape[0]))
        return rearrange(out, "x f n d -> x (f n) d")


class RINBlock(nn.Module):
    """Interface a [X, N, D] and latents z [X, M, Dl] -> updated (a, z); X = batch * levels."""

    def __init__(self, interface_dim: int, latent_dim: int, latent_layers: int, head_dim: int, mlp_ratio: float,
                 token_grid: tuple[int, int, int] | None = None, text: bool = False, mixing_frames: int = 1):
        super().__init__()
        self.read = CrossLayer(latent_dim, interface_dim, head_dim, mlp_ratio)
        self.read_text = TextRead(latent_dim, head_dim) if text else None
        self.process = nn.ModuleList(LatentLayer(latent_dim, head_dim, mlp_ratio) for _ in range(latent_layers))
        self.write = CrossLayer(interface_dim, latent_dim, head_dim, mlp_ratio)
        self.mixing = (TokenMixing(interface_dim, latent_dim, token_grid, mixing_frames)
                       if token_grid is not None else None)

    def forward(self, a: torch.Tensor, z: torch.Tensor, cond: torch.Tensor | None = None,
                text: tuple[torch.Tensor, torch.Tensor] | None = None,
                time_from_row: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """cond [X, 1, Dl]: the conditioning embedding, needed only with token mixing; text: (tokens
        [X, T, Dl], mask [X, T]), needed only by text-conditional blocks; time_from_row: the first row whose
        token mixing reaches over time (`TokenMixing.forward`)."""
        z = self.read(z, a)
        if self.read_text is not None:
            z = self.read_text(z, *text)
        for layer in self.process:
            z = layer(z)
        a = self.write(a, z)
        return (a if self.mixing is None else self.mixing(a, cond, time_from_row)), z
