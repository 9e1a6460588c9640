"""The HPDM network; `build_denoiser(cfg)` is the entry point for training and sampling."""

from __future__ import annotations

from hpdm_core.config import Config
from hpdm_core.model.hpdm import HPDM, ContextCache


def build_denoiser(cfg: Config):
    """The preconditioned denoiser (hpdm_core.diffusion.Denoiser) around a fresh HPDM for cfg."""
    from hpdm_core.diffusion import Denoiser  # late import: diffusion imports this package

    return Denoiser(HPDM(cfg.model), cfg.diffusion, num_classes=cfg.model.num_classes)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["HPDM", "ContextCache", "build_denoiser", "count_parameters"]
