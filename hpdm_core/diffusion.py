"""EDM preconditioning with v-prediction, per-level noise, the hierarchy loss, guidance (docs/design.md, "Diffusion").

D(x; sigma) = c_skip * x + c_out * F(c_in * x; c_noise) with EDM's coefficients (Karras et al. 2022).
Training F towards (x - c_skip * x_noisy) / c_out with unit weight is EDM's weighted denoising loss
(lambda = 1 / c_out**2) and, for sigma_data-scaled data, a v-prediction target. Level l draws its own
sigma around a mean shifted by l * ln(1 / level_input_scale): higher levels, whose neighbouring pixels
are more correlated, see more noise (the paper's exponentially smaller input scaling).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from hpdm_core import conditioning
from hpdm_core.conditioning import Condition
from hpdm_core.config import Config, DiffusionConfig
from hpdm_core.model.hpdm import HPDM, ContextCache


def _randn(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Normal draws from `generator` (on its own device) moved to `device`."""
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source).to(device)


def _rand(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device)


def level_sigma_scale(level: int, cfg: DiffusionConfig) -> float:
    """How much more noise level l sees than level 0: (1 / level_input_scale) ** l."""
    return (1.0 / cfg.level_input_scale) ** level


def sample_sigmas(batch: int, num_levels: int, cfg: DiffusionConfig, generator: torch.Generator | None = None,
                  device=None) -> torch.Tensor:
    """Training noise levels [batch, num_levels]: ln sigma_l ~ N(P_mean + l ln(1/s), P_std^2), independent."""
    shift = torch.tensor([math.log(level_sigma_scale(level, cfg)) for level in range(num_levels)], device=device)
    return (cfg.p_mean + shift + cfg.p_std * _randn((batch, num_levels), generator, device)).exp()


def sampling_sigmas(num_steps: int, level: int, cfg: DiffusionConfig, device=None) -> torch.Tensor:
    """EDM's rho schedule from sigma_max to sigma_min, scaled for level l, with a final 0: [num_steps + 1]."""
    i = torch.arange(num_steps, dtype=torch.float64)
    ramp = i / max(num_steps - 1, 1)
    lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
    sigmas = (hi + ramp * (lo - hi)) ** cfg.rho * level_sigma_scale(level, cfg)
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)]).to(device=device, dtype=torch.float32)


def context_sigma(level: int, cfg: DiffusionConfig) -> float:
    """Noise level given to a generated (clean) lower level when it serves as context at inference."""
    return cfg.sigma_min * level_sigma_scale(level, cfg)


def preconditioning(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """EDM's (c_skip, c_out, c_in, c_noise) for sigma of any shape."""
    sigma = sigma.float()
    total = sigma ** 2 + sigma_data ** 2
    return sigma_data ** 2 / total, sigma * sigma_data / total.sqrt(), total.rsqrt(), sigma.log() / 4


def guided(d_cond: torch.Tensor, d_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance: w = 1 is purely conditional, w = 0 unconditional."""
    return d_uncond + w * (d_cond - d_uncond)


def _per_pixel(c: torch.Tensor) -> torch.Tensor:
    """[B, n] coefficients -> [B, n, 1, 1, 1, 1] to broadcast over [B, n, C, f, h, w]."""
    return c.reshape(*c.shape, 1, 1, 1, 1)


class Denoiser(nn.Module):
    """D(x_noisy; sigma) around HPDM; sigma is per (sample, level): [B, n]. Holds the training loss too,
    since the loss is the same preconditioning read backwards (k-diffusion's Denoiser.loss)."""

    def __init__(self, model: HPDM, cfg: DiffusionConfig, num_classes: int):
        super().__init__()
        self.model, self.cfg, self.num_classes = model, cfg, num_classes
        self.geometry = model.geometry

    def forward(self, x_noisy: torch.Tensor, sigma: torch.Tensor, offsets: torch.Tensor, labels: torch.Tensor,
                context: ContextCache | None = None, clean: torch.Tensor | None = None,
                per_row: bool = False) -> torch.Tensor:
        """The denoised chain like x_noisy; given the `clean` chain (training), its per-level loss [n] instead
        (with per_row, per row and level [B, n]: a mixed batch reports its image and video rows apart).

        The loss goes through forward (nanoGPT's `forward(idx, targets)`) so that DDP, which wraps the
        denoiser, sees the training call and all-reduces its gradients.
        """
        c_skip, c_out, c_in, c_noise = preconditioning(sigma, self.cfg.sigma_data)
        c_skip, c_out, c_in = _per_pixel(c_skip), _per_pixel(c_out), _per_pixel(c_in)
        out = self.model(c_in * x_noisy, c_noise, offsets, labels, context=context).float()
        if clean is None:
            return c_skip * x_noisy + c_out * out
        # EDM's loss weight lambda = 1 / c_out^2 makes it the unit-weight MSE of F against the v-target.
        target = (clean - c_skip * x_noisy) / c_out
        return (out - target).square().mean(dim=(2, 3, 4, 5) if per_row else (0, 2, 3, 4, 5))

    def loss(self, clean: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, offsets: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:
        """Per-level loss [n] of chains [B, n, C, f, h, w] corrupted by sigma [B, n] x noise."""
        return self(clean + _per_pixel(sigma) * noise, sigma, offsets, labels, clean=clean)

    def null_condition(self, batch: int, device=None) -> Condition:
        """`batch` rows of the null condition: the null class, or the null text (an all-False mask)."""
        if self.model.text_conditioned:
            return conditioning.TextCondition(torch.zeros(batch, 1, self.model.cfg.text_dim, device=device),
                                              torch.zeros(batch, 1, dtype=torch.bool, device=device))
        return torch.full((batch,), self.num_classes, dtype=torch.long, device=device)

    def encode_context(self, x: torch.Tensor, sigma: torch.Tensor, offsets: torch.Tensor, labels: torch.Tensor,
                       offload: bool = False) -> ContextCache:
        _, _, c_in, c_noise = preconditioning(sigma, self.cfg.sigma_data)
        return self.model.encode_context(_per_pixel(c_in) * x, c_noise, offsets, labels, offload=offload)


def build_denoiser(cfg: Config) -> Denoiser:
    """The preconditioned denoiser around a fresh HPDM for cfg: the entry point of training and sampling."""
    return Denoiser(HPDM(cfg.model), cfg.diffusion, num_classes=cfg.model.num_classes)


def unwrap(denoiser: nn.Module) -> Denoiser:
    """The Denoiser inside a DDP wrapper (or the denoiser itself)."""
    return getattr(denoiser, "module", denoiser)


def drop_labels(labels: Condition, num_classes: int, p: float, generator: torch.Generator | None = None) -> Condition:
    """Replace each row's condition by the null one (class index num_classes, or the null text) with probability p."""
    drop = _rand((conditioning.batch_size(labels),), generator, labels.device) < p
    return conditioning.where_null(drop, labels, num_classes)


def draw_corruption(patches: torch.Tensor, labels: torch.Tensor, cfg: DiffusionConfig, num_classes: int,
                    generator: torch.Generator | list[torch.Generator] | None = None):
    """(sigma [B, n], noise like patches, labels after dropout) of one training batch.

    With a list of generators, one per sample, each sample's draws come from its own generator, so
    they do not depend on which rank or micro-batch the sample lands in (DDP equals one process).
    """
    if isinstance(generator, (list, tuple)):
        parts = [draw_corruption(patches[i:i + 1], labels[i:i + 1], cfg, num_classes, g)
                 for i, g in enumerate(generator)]
        sigma, noise, labels = zip(*parts)
        return torch.cat(sigma), torch.cat(noise), conditioning.concat(list(labels))
    device = patches.device
    sigma = sample_sigmas(patches.shape[0], patches.shape[1], cfg, generator, device)
    noise = _randn(patches.shape, generator, device)
    return sigma, noise, drop_labels(labels, num_classes, cfg.label_dropout, generator)


def hierarchy_loss(denoiser: nn.Module, patches: torch.Tensor, offsets: torch.Tensor, labels: torch.Tensor,
                   generator: torch.Generator | list[torch.Generator] | None = None, per_row: bool = False):
    """Joint denoising loss of a patch chain [B, n, C, f, h, w]: (mean over levels, per-level losses [n] detached),
    with per_row also the per-row, per-level losses [B, n] detached (their mean is the loss).

    `denoiser`: a Denoiser, or one behind DDP; `generator`: one for the batch, or one per sample (see
    draw_corruption).
    """
    inner = unwrap(denoiser)
    sigma, noise, labels = draw_corruption(patches, labels, inner.cfg, inner.num_classes, generator)
    # Through the (possibly DDP-wrapped) forward, not Denoiser.loss: DDP only sees forward calls.
    noisy = patches + _per_pixel(sigma) * noise
    if per_row:
        rows = denoiser(noisy, sigma, offsets, labels, clean=patches, per_row=True)
        per_level = rows.mean(0)
        return per_level.mean(), per_level.detach(), rows.detach()
    per_level = denoiser(noisy, sigma, offsets, labels, clean=patches)
    return per_level.mean(), per_level.detach()
