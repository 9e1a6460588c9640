"""Bilinear frame resizing as the two FVD implementations do it.

`torch`: `F.interpolate(bilinear, align_corners=False)` with half-pixel centres, what StyleGAN-V's
TorchScript I3D and the PyTorch FVD ports (VideoGPT, TATS) use.
`tf`: TF1's legacy `tf.image.resize_bilinear` (align_corners=False, half_pixel_centers=False), what
the original TF FVD uses: source coordinate = destination * in / out, no half-pixel shift, no
antialiasing. torch has no such mode, so it is written out here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RESIZE_MODES = ("torch", "tf")


def _legacy_axis(size_in: int, size_out: int, device: torch.device):
    # TF computes the scale and source coordinates in float32.
    scale = torch.tensor(size_in / size_out, dtype=torch.float32)
    src = torch.arange(size_out, dtype=torch.float32) * scale
    low = src.floor()
    frac = (src - low).to(device)
    low = low.long().clamp(max=size_in - 1)
    high = (low + 1).clamp(max=size_in - 1)
    return low.to(device), high.to(device), frac


def resize_bilinear_tf_legacy(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize the last two axes of float `x` to `size` like tf.compat.v1.image.resize_bilinear."""
    h_in, w_in = x.shape[-2:]
    y0, y1, fy = _legacy_axis(h_in, size[0], x.device)
    x0, x1, fx = _legacy_axis(w_in, size[1], x.device)
    x = x.float()
    # Same operation order as TF's kernel: along x within the top and bottom rows, then along y.
    top_left, top_right = x[..., y0, :][..., x0], x[..., y0, :][..., x1]
    bottom_left, bottom_right = x[..., y1, :][..., x0], x[..., y1, :][..., x1]
    top = top_left + (top_right - top_left) * fx
    bottom = bottom_left + (bottom_right - bottom_left) * fx
    return top + (bottom - top) * fy[:, None]


def resize_frames(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize float video [B, C, F, H, W] frame by frame to `size` with `mode` in RESIZE_MODES."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x.float()
    if mode == "tf":
        return resize_bilinear_tf_legacy(x, size)
    if mode == "torch":
        b, c, f, h, w = x.shape
        frames = x.float().permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
        return frames.reshape(b, f, c, *size).permute(0, 2, 1, 3, 4)
    raise ValueError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")
