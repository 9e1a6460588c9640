"""The HPDM network (hpdm.py) and its pieces; the preconditioned denoiser around it is in hpdm_core.diffusion."""

from __future__ import annotations

from hpdm_core.model.hpdm import HPDM, ContextCache


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["HPDM", "ContextCache", "count_parameters"]
