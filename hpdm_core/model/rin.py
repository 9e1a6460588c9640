"""One Recurrent Interface Network block (Jabri et al. 2023): read, process latents, write.

The interface (patch tokens) never attends to itself; all global mixing happens in the small set of
latents, which is why the cost grows only linearly with the number of tokens.
"""

from __future__ import annotations

import torch
import torch.nn as nn

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


class RINBlock(nn.Module):
    """Interface a [X, N, D] and latents z [X, M, Dl] -> updated (a, z); X = batch * levels."""

    def __init__(self, interface_dim: int, latent_dim: int, latent_layers: int, head_dim: int, mlp_ratio: float):
        super().__init__()
        self.read = CrossLayer(latent_dim, interface_dim, head_dim, mlp_ratio)
        self.process = nn.ModuleList(LatentLayer(latent_dim, head_dim, mlp_ratio) for _ in range(latent_layers))
        self.write = CrossLayer(interface_dim, latent_dim, head_dim, mlp_ratio)

    def forward(self, a: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.read(z, a)
        for layer in self.process:
            z = layer(z)
        return self.write(a, z), z
