"""Building blocks: attention on top of scaled_dot_product_attention, MLP, Fourier embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


class Attention(nn.Module):
    """Multi-head attention of `queries` over `keys` (self-attention when keys is None).

    The inner width equals the query width, so the output lands back in the query stream. SDPA picks
    flash / memory-efficient kernels on CUDA and a fused math kernel on CPU.
    """

    def __init__(self, dim: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        self.heads = dim // head_dim
        self.q = nn.Linear(dim, dim)
        # No key/value bias: a key bias shifts every logit of a query equally (softmax ignores it) and a
        # value bias passes through the convex attention weights into `out`'s bias. Both would only
        # collect rounding noise, which Adam-style steps amplify to full-size updates.
        self.kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """key_mask [b, s_keys] bool: the keys each query may attend to (None: all)."""
        keys = queries if keys is None else keys
        q = rearrange(self.q(queries), "b s (h d) -> b h s d", h=self.heads)
        k, v = rearrange(self.kv(keys), "b s (two h d) -> two b h s d", two=2, h=self.heads)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(rearrange(out, "b h s d -> b s (h d)"))


class MLP(nn.Sequential):
    def __init__(self, dim: int, ratio: float, out_dim: int | None = None):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim or dim))


class FourierFeatures(nn.Module):
    """sin/cos of coordinates at geometrically spaced fixed frequencies: [..., A] -> [..., 2 * A * n]."""

    def __init__(self, num_frequencies: int, min_freq: float, max_freq: float):
        super().__init__()
        freqs = torch.exp(torch.linspace(math.log(min_freq), math.log(max_freq), num_frequencies))
        self.register_buffer("freqs", 2 * math.pi * freqs, persistent=False)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        angles = (coords.unsqueeze(-1) * self.freqs).flatten(-2)
        return torch.cat([angles.sin(), angles.cos()], -1)


def init_weights(module: nn.Module, scheme: str = "glorot") -> None:
    """Linear weights: Glorot uniform (RIN's reference code, Keras's default) or "vit" (truncated
    normal, std 0.02); embeddings truncated normal std 0.02; zero biases.

    Why Glorot: std 0.02 is GPT-2/ViT's choice for widths near 1000. At the tiny preset's widths
    (96-128) it is 4-5x below 1/sqrt(fan_in), so attention logits start near zero (uniform attention
    that takes hundreds of LAMB steps to sharpen, since LAMB moves a matrix by lr x its norm) and the
    class barely reaches the output: measured on a level-0 model after 300 steps, the label gap at
    sigma 2-30 was 0.002-0.014 with std 0.02 and 0.040-0.052 with Glorot.
    """
    if isinstance(module, nn.Linear):
        if scheme == "glorot":
            nn.init.xavier_uniform_(module.weight)
        else:
            nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=0.02)
