"""Test-only helpers: stand-ins for files and call signatures of other projects, a gather by index, and
the `hpdm` entry point run in-process."""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from hpdm_core.distributed import gather_to_main
from hpdm_core.metrics.i3d import INPUT_SIZE, InceptionI3d


class StyleGANVSignature(nn.Module):
    """Our I3D behind StyleGAN-V's TorchScript call signature (to script and save, e.g. for tests):
    x [B, 3, T, H, W] in [0, 255]; rescale maps to [-1, 1]; resize is trilinear to T x 224 x 224
    (bilinear per frame, half-pixel); return_features gives logits, otherwise class probabilities."""

    def __init__(self, net: InceptionI3d):
        super().__init__()
        self.net = net.eval()
        self.size = INPUT_SIZE

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        x = x.float()
        if rescale:
            x = x * (2.0 / 255.0) - 1.0
        if resize:
            x = F.interpolate(x, size=[x.shape[2], self.size, self.size], mode="trilinear", align_corners=False)
        logits = self.net(x)
        return logits if return_features else logits.softmax(dim=1)


def state_dict_to_chainer(state: dict[str, torch.Tensor]) -> dict:
    """Inverse of `chainer_to_state_dict` (writes TGAN's npz layout)."""
    out = {}
    for key, value in state.items():
        name, kind = key.split(".")
        out[f"{name}/{'W' if kind == 'weight' else 'b'}"] = value.detach().cpu().numpy()
    return out


def gather_by_index(items: dict[int, Any]) -> dict[int, Any] | None:
    """Merge per-rank {sample index: value} dicts on rank 0 (None elsewhere); indices must be disjoint."""
    parts = gather_to_main(items)
    if parts is None:
        return None
    merged: dict[int, Any] = {}
    for part in parts:
        overlap = merged.keys() & part.keys()
        if overlap:
            raise ValueError(f"sample indices {sorted(overlap)[:5]} were computed by more than one rank")
        merged.update(part)
    return merged


def hpdm(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the real entry point in this process: (exit code, stdout, stderr with Rich's wrapping undone)."""
    from hpdm_cli.app import main

    monkeypatch.setattr(sys, "argv", ["hpdm", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, " ".join(err.split())  # Rich wraps messages at the terminal width
