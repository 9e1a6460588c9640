"""Mixed precision: bf16 autocast on CUDA, full precision elsewhere (docs/design.md, "Conventions").

The one switch that training, sampling and the classifier share; on CPU it does nothing, so results
there are float32 and do not depend on the CPU's bf16 support.
"""

from __future__ import annotations

import contextlib

import torch


def autocast(device: torch.device | str, enabled: bool = True):
    """bf16 autocast when `enabled` and `device` is a GPU, else a no-op context."""
    if enabled and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
