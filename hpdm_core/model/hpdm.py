"""The HPDM network: a RIN that denoises a chain of nested patches jointly (docs/design.md, "The network").

Levels are folded into the batch: interface activations a [B, n, N, D], latents z [B, n, M+3, Dl]
(M learned latents of the level plus noise-level, pyramid-level and class tokens), kept between blocks
as one tensor per level. Block b only touches levels < levels_per_block[b] (`HPDM.processes`, adaptive
computation); before it, deep context fusion feeds each processed level l >= 1 with its lower levels'
block inputs. Information flows only upwards, so level k's output never depends on a level above k,
which is what makes inference caching exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from hpdm_core.conditioning import Condition, TextCondition
from hpdm_core.config import ModelConfig
from hpdm_core.model.fusion import DeepFusion, context_grids, shallow_context, shallow_inputs
from hpdm_core.model.layers import MLP, FourierFeatures, init_weights
from hpdm_core.model.rin import RINBlock
from hpdm_core.model.tokens import Tokens
from hpdm_core.pyramid import PatchGeometry, token_centres, token_grid

EXTRA_LATENTS = 3  # noise level, pyramid level, class (or the pooled text)


@dataclass
class ContextCache:
    """What level `level` needs from its fixed lower levels 0..level-1, computed once per chain.

    acts[b] holds the block-b inputs [B, level, N, D] of the lower levels (None for blocks that do not
    process level `level`); pixels holds level-1's network input [B, C, f, h, w] for shallow fusion.
    With offload the tensors live on the CPU and are moved to the device block by block.
    """

    level: int
    acts: list[torch.Tensor | None] = field(default_factory=list)
    pixels: torch.Tensor | None = None
    offload: bool = False

    def block(self, index: int, device: torch.device) -> list[torch.Tensor] | None:
        """Block `index`'s inputs of the lower levels, one [B, N, D] tensor per level, on `device`."""
        acts = self.acts[index]
        return None if acts is None else list(acts.to(device, non_blocking=True).unbind(1))


def _store(tensor: torch.Tensor, offload: bool) -> torch.Tensor:
    if not offload:
        return tensor
    tensor = tensor.to("cpu")
    return tensor.pin_memory() if torch.cuda.is_available() else tensor


def conditioning_of(z: torch.Tensor) -> torch.Tensor:
    """The summed conditioning embedding [..., 1, Dl] (noise level + pyramid level + class) of embed's
    latents z [..., M + 3, Dl], whose last EXTRA_LATENTS tokens are those three embeddings."""
    return z[..., -EXTRA_LATENTS:, :].sum(-2, keepdim=True)


class HPDM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.geometry = PatchGeometry.from_config(cfg)
        self.token = tuple(int(t) for t in cfg.token)
        self.token_grid = token_grid(self.geometry, self.token)
        self.levels_per_block = [int(n) for n in cfg.block_levels]
        self.fusion = cfg.fusion
        num_tokens = self.token_grid[0] * self.token_grid[1] * self.token_grid[2]
        self.tokens = Tokens(self.token, self.token_grid, cfg.token_overlap)
        pixels_per_token = self.tokens.window[0] * self.tokens.window[1] * self.tokens.window[2]
        in_channels = cfg.channels * (2 if cfg.fusion == "shallow" else 1)
        dim, latent_dim = cfg.interface_dim, cfg.latent_dim

        # Interface: pixels of a token cube -> D, plus where the token sits in its patch and in the video.
        self.tokenizer = nn.Linear(in_channels * pixels_per_token, dim)
        self.position = nn.Parameter(torch.zeros(num_tokens, dim))
        if cfg.use_coords:
            # Frequencies up to model.coord_frequency (old runs: the Nyquist rate of the finest level's
            # token grid), in cycles per video extent: the same features for the same place in the
            # video whatever the number of levels, so a fine-tuned pyramid keeps its base's coordinates.
            self.coord_features = FourierFeatures(cfg.fourier_features, 0.5, cfg.coord_frequency)
            self.coord_proj = nn.Linear(6 * cfg.fourier_features, dim)

        # Latents: one learned set per level, plus conditioning tokens.
        self.latents = nn.Parameter(torch.zeros(cfg.num_levels, cfg.num_latents, latent_dim))
        # c_noise = ln(sigma) / 4 spans about [-1.6, 1.5] from a level-0 sigma_min to a level-2 sigma_max.
        # Low frequencies only (EDM's positional embedding reaches 1 rad per unit): the sampler starts
        # far above the training sigmas and lower levels serve as context at sigma_min, and a smooth
        # embedding extrapolates there where a high-frequency one gives arbitrary features.
        self.noise_features = FourierFeatures(latent_dim // 2, 0.002, 0.3)
        self.noise_mlp = MLP(2 * (latent_dim // 2), 1.0, out_dim=latent_dim)
        self.level_embedding = nn.Embedding(cfg.num_levels, latent_dim)
        self.text_conditioned = cfg.conditioning == "text"
        if self.text_conditioned:
            # T5's hidden states, normalised (their scale varies between checkpoints), projected to the latent
            # width: tokens for every block's TextRead, and their mean where the class embedding goes.
            self.text_norm = nn.LayerNorm(cfg.text_dim, elementwise_affine=False)
            self.text_proj = nn.Linear(cfg.text_dim, latent_dim)
            self.text_pool = nn.Linear(cfg.text_dim, latent_dim)
            # The learned null text: one token every text starts with (all a null text has) and the pooled
            # embedding of a null text.
            self.text_start = nn.Parameter(torch.zeros(1, 1, latent_dim))
            self.null_text = nn.Parameter(torch.zeros(latent_dim))
        else:
            self.class_embedding = nn.Embedding(cfg.num_classes + 1, latent_dim)  # last row: the null class
        if cfg.interface_conditioning:
            self.interface_modulation = nn.Linear(latent_dim, 2 * dim)

        self.blocks = nn.ModuleList(RINBlock(dim, latent_dim, cfg.latent_layers, cfg.head_dim, cfg.mlp_ratio,
                                             self.token_grid if cfg.token_mixing else None, self.text_conditioned,
                                             cfg.token_mixing_frames)
                                    for _ in range(cfg.num_blocks))
        if cfg.fusion == "deep":
            self.fusions = nn.ModuleList(DeepFusion(dim, cfg.use_coords, cfg.detach_context, cfg.context_grad_scale)
                                         for _ in range(cfg.num_blocks))
        self.out_norm = nn.LayerNorm(dim)
        self.detokenizer = nn.Linear(dim, cfg.channels * pixels_per_token)

        self.apply(lambda module: init_weights(module, cfg.init))
        nn.init.trunc_normal_(self.position, std=0.02)
        nn.init.trunc_normal_(self.latents, std=0.02)
        if self.text_conditioned:
            nn.init.trunc_normal_(self.text_start, std=0.02)
            nn.init.trunc_normal_(self.null_text, std=0.02)
        if cfg.interface_conditioning:  # zero: the modulation starts as the identity
            nn.init.zeros_(self.interface_modulation.weight)
        for block in self.blocks:
            if block.mixing is not None:
                block.mixing.reset_parameters()
        for index, fusion in enumerate(getattr(self, "fusions", [])):
            fusion.reset_parameters()
            # A block that processes only level 0 has nothing to fuse: its projection can never run.
            # Frozen, it stays out of the optimizer and DDP's gradient all-reduce (which would otherwise
            # wait for a gradient that never comes); kept registered so checkpoints share one layout.
            if not self.processes(index, 1):
                fusion.requires_grad_(False)
        for index, block in enumerate(self.blocks):
            # Likewise the time taps of a block that sees no level mixing over time.
            if getattr(block.mixing, "time_weight", None) is not None and \
                    not self.processes(index, cfg.token_mixing_time_from_level):
                block.mixing.time_weight.requires_grad_(False)

    # ------------------------------------------------------------------ pieces

    def condition_embedding(self, cond: Condition) -> torch.Tensor:
        """[B, Dl]: the class's embedding, or the pooled text (the learned null text for null rows)."""
        if not self.text_conditioned:
            return self.class_embedding(cond)
        tokens, mask = self.text_norm(cond.tokens.to(self.latents.dtype)), cond.mask.unsqueeze(-1)
        mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.where(cond.is_null.unsqueeze(1), self.null_text, self.text_pool(mean))

    def text_context(self, cond: Condition) -> tuple[torch.Tensor, torch.Tensor] | None:
        """What the blocks' TextRead attends to: (tokens [B, 1 + T, Dl], mask [B, 1 + T]); None for classes.

        Every text starts with the learned start token, so a null text (all-False mask) still has one key."""
        if not self.text_conditioned:
            return None
        if not isinstance(cond, TextCondition):
            raise ValueError("a text-conditional model takes a TextCondition, got class labels")
        b = len(cond)
        projected = self.text_proj(self.text_norm(cond.tokens.to(self.latents.dtype)))
        tokens = torch.cat([self.text_start.expand(b, -1, -1).to(projected.dtype), projected], 1)
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=cond.mask.device), cond.mask], 1)
        return tokens, mask

    def embed(self, x: torch.Tensor, noise_cond: torch.Tensor, offsets: torch.Tensor, labels: Condition,
              first_level: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs of levels first_level.. (offsets: the chain from level 0) -> (a, z, coords [B, n, N, 3])."""
        b, n = x.shape[:2]
        a = self.tokenizer(self.tokens.cut(x))

        levels = torch.arange(first_level, first_level + n, device=x.device)
        conditioning = torch.stack([
            self.noise_mlp(self.noise_features(noise_cond.unsqueeze(-1).float())),
            self.level_embedding(levels).expand(b, n, -1),
            self.condition_embedding(labels).unsqueeze(1).expand(b, n, -1),
        ], 2)
        conditioning = conditioning.to(self.latents.dtype)
        summed = conditioning.sum(2, keepdim=True)  # [B, n, 1, Dl]: shifts the latents and modulates the interface
        if self.cfg.interface_conditioning:
            # Scale and shift every interface token by the conditioning (adaLN-Zero style, starts as
            # the identity). Without it a token learns the noise level only through attention to the
            # latents, and the tokenizer -> detokenizer path passes each token's noisy pixels through
            # at every sigma: measured on the tiny preset, level-0 samples were per-token coloured noise.
            scale, shift = self.interface_modulation(F.silu(summed)).chunk(2, -1)
            a = a * (1 + scale) + shift
        a = a + self.position
        coords = token_centres(offsets, self.geometry, self.token)[:, first_level:first_level + n]
        if self.cfg.use_coords:
            a = a + self.coord_proj(self.coord_features(coords))
        # The conditioning also shifts every latent: as extra tokens alone it reaches the interface only
        # through attention, and the network learns to use the noise level and class far more slowly.
        latents = self.latents[levels] + summed
        z = torch.cat([latents, conditioning], 2)
        return a, z, coords

    def detokenize(self, a: torch.Tensor) -> torch.Tensor:
        return self.tokens.paste(self.detokenizer(self.out_norm(a)), self.cfg.channels)

    def processes(self, block: int, level: int) -> bool:
        """Adaptive computation: block `block` processes level `level` iff level < levels_per_block[block];
        the levels above pass through it unchanged."""
        return level < self.levels_per_block[block]

    def run_block(self, index: int, a: list[torch.Tensor], z: list[torch.Tensor], cond: list[torch.Tensor],
                  text: tuple[torch.Tensor, torch.Tensor] | None = None, first_level: int = 0):
        """Block `index` on m levels folded into the batch: a, z, cond are per-level lists ([B, N, D],
        [B, M', Dl], [B, 1, Dl]: the conditioning embedding, see `conditioning_of`) of the levels
        first_level..; text is the batch's text context (`text_context`), the same for every level."""
        m = len(a)
        fold = lambda t: t[0] if m == 1 else torch.cat(t)  # noqa: E731 -- one level: no copy
        block = self.blocks[index]
        if text is not None and m > 1:
            text = (torch.cat([text[0]] * m), torch.cat([text[1]] * m))
        # The fold is level-major, so the levels that mix over time are the rows from this one on.
        time_levels_below = min(max(self.cfg.token_mixing_time_from_level - first_level, 0), m)
        a, z = block(fold(a), fold(z), fold(cond[:m]) if block.mixing is not None else None, text,
                     time_from_row=time_levels_below * a[0].shape[0])
        return list(a.chunk(m)), list(z.chunk(m))

    def _blocks(self, a: list[torch.Tensor], z: list[torch.Tensor], cond: list[torch.Tensor],
                text: tuple[torch.Tensor, torch.Tensor] | None, coords: torch.Tensor, grids: dict[int, torch.Tensor],
                first_level: int = 0, context: ContextCache | None = None, keep_context: bool = False,
                offload: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """Every block on the levels it processes, for the levels first_level.. (a, z, cond: one entry per
        level; coords [B, n, N, 3] from `embed`; grids from `context_grids`, by level). With deep fusion
        each level is fused from the block inputs of its lower levels: those in `a` and, below
        first_level, those cached in `context`.

        Returns (the last block's outputs, one [B, N, D] per level; with keep_context, per block, the
        inputs that the cache of the level above keeps, None for a block that does not process it).
        A block replaces the levels it processes and leaves the others in place (concatenating its
        output with the untouched levels copied every activation at every block).
        """
        above = first_level + len(a)  # the level whose cache keep_context fills
        kept: list[torch.Tensor | None] = []
        for index in range(len(self.blocks)):
            if keep_context:
                kept.append(_store(torch.stack(a, 1), offload) if self.processes(index, above) else None)
                if index == len(self.blocks) - 1:
                    break  # the last block's outputs are never context
            m = sum(self.processes(index, level) for level in range(first_level, above))  # the first m levels
            if m == 0:
                continue
            inputs = a[:m]
            if self.fusion == "deep":
                # Every level is fused from the block *inputs* of its lower levels (Eq. 7/9: a^{b-1}).
                cached = context.block(index, a[0].device) if first_level > 0 else []
                inputs = [a_k if first_level + k == 0 else
                          self.fusions[index](a_k, cached + inputs[:k], grids[first_level + k], coords[:, k],
                                              self.token_grid)
                          for k, a_k in enumerate(inputs)]
            a[:m], z[:m] = self.run_block(index, inputs, z[:m], cond, text, first_level)
        return a, kept

    # ------------------------------------------------------------------ full chain

    def _run(self, x, noise_cond, offsets, labels, keep_context: bool = False, offload: bool = False):
        """Levels 0..n-1 jointly -> (the last block's outputs, one [B, N, D] per level; the cache's block inputs)."""
        n = x.shape[1]
        offsets = offsets[:, :n]
        if self.fusion == "shallow":
            x = shallow_inputs(x, offsets, self.geometry)
        a, z, coords = self.embed(x, noise_cond, offsets, labels)
        cond = list(conditioning_of(z).unbind(1))
        grids = context_grids(offsets, self.geometry, self.token, range(1, n)) if self.fusion == "deep" else {}
        return self._blocks(list(a.unbind(1)), list(z.unbind(1)), cond, self.text_context(labels), coords, grids,
                            keep_context=keep_context, offload=offload)

    def forward(self, x: torch.Tensor, noise_cond: torch.Tensor, offsets: torch.Tensor, labels: torch.Tensor,
                context: ContextCache | None = None) -> torch.Tensor:
        """Raw network output F, same shape as x [B, n, C, f, h, w] (see the module docstring).

        With `context` (from encode_context over levels 0..l-1), x, noise_cond hold only level l and
        offsets the whole chain [B, l+1, 3].
        """
        if context is not None:
            return self._forward_cached(x, noise_cond, offsets, labels, context)
        if offsets.shape[1] < x.shape[1] or noise_cond.shape[:2] != x.shape[:2]:
            raise ValueError(f"x has {x.shape[1]} levels but noise_cond is {list(noise_cond.shape)} "
                             f"and offsets {list(offsets.shape)}")
        a, _ = self._run(x, noise_cond, offsets, labels)
        return self.detokenize(torch.stack(a, 1))

    # ------------------------------------------------------------------ caching

    def _empty_cache(self, offload: bool) -> ContextCache:
        return ContextCache(0, [None] * len(self.blocks), None, offload)

    def encode_context(self, x: torch.Tensor, noise_cond: torch.Tensor, offsets: torch.Tensor,
                       labels: torch.Tensor, offload: bool = False) -> ContextCache:
        """Run the fixed lower levels 0..l-1 (x [B, l, ...]) once and keep what level l needs."""
        level = x.shape[1]
        if level == 0:
            return self._empty_cache(offload)
        pixels = None
        if self.fusion == "shallow":
            pixels = _store(x[:, -1], offload)
        acts = [None] * len(self.blocks)
        if self.fusion == "deep":
            _, acts = self._run(x, noise_cond, offsets, labels, keep_context=True, offload=offload)
        return ContextCache(level, acts, pixels, offload)

    def _forward_cached(self, x, noise_cond, offsets, labels, context: ContextCache) -> torch.Tensor:
        level = context.level
        if x.shape[1] != 1 or offsets.shape[1] != level + 1:
            raise ValueError(f"a cached forward takes the top level only (x with 1 level, got {x.shape[1]}) "
                             f"and offsets of the whole chain ({level + 1} levels, got {offsets.shape[1]})")
        offsets = offsets[:, :level + 1]
        if self.fusion == "shallow":
            parent = (torch.zeros_like(x[:, 0]) if level == 0 else
                      shallow_context(context.pixels.to(x.device, non_blocking=True).to(x.dtype), offsets, level,
                                      self.geometry))
            x = torch.cat([x, parent.unsqueeze(1)], 2)
        a, z, coords = self.embed(x, noise_cond, offsets, labels, first_level=level)
        deep = self.fusion == "deep"
        grids = context_grids(offsets, self.geometry, self.token, range(level, level + 1)) if deep else {}
        a, _ = self._blocks([a[:, 0]], [z[:, 0]], [conditioning_of(z)[:, 0]], self.text_context(labels), coords, grids,
                            first_level=level, context=context)
        return self.detokenize(a[0].unsqueeze(1))
