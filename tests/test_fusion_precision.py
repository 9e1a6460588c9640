"""Fusion samples with float32 coordinates under bf16 autocast (a bf16 grid misplaces samples by up to
1.6 % of a token spacing in deep fusion and 12 % of a pixel in shallow fusion at 64 px)."""

import torch
import torch.nn.functional as F

from hpdm_core.model.fusion import context_grids, sample_context, shallow_context
from hpdm_core.pyramid import PatchGeometry, sample_nested_offsets

GEOMETRY = PatchGeometry((8, 64, 64), 3)
TOKEN = (2, 4, 4)
TOKENS = (4, 16, 16)  # token grid of one patch


def ramp(batch: int) -> torch.Tensor:
    """Block inputs [B, N, 3] whose channels are each token's (w, h, f) index: trilinear sampling of a
    linear ramp is exact, so a sample's value is its position in tokens. Small integers: exact in bf16."""
    f, h, w = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in TOKENS), indexing="ij")
    return torch.stack([w, h, f], -1).reshape(1, -1, 3).expand(batch, -1, -1).contiguous()


def test_deep_fusion_samples_at_float32_positions_under_bf16_autocast():
    offsets = sample_nested_offsets(16, GEOMETRY, torch.Generator().manual_seed(0))
    grid = context_grids(offsets, GEOMETRY, TOKEN, range(2, 3))[2]  # level 2 in levels 0 and 1
    lower = [ramp(16).bfloat16(), ramp(16).bfloat16()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = sample_context(lower, grid, TOKENS)
    reference = sample_context([t.float() for t in lower], grid, TOKENS)
    assert got.dtype == torch.float32
    # float32 noise on positions below 16 tokens: a few ulps of 16
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=0)
    # The old path (grid cast to the activations' bf16) is off by far more than that tolerance.
    volume = ramp(16).reshape(16, *TOKENS, 3).permute(0, 4, 1, 2, 3)
    old = F.grid_sample(volume.bfloat16(), grid[:, 0].bfloat16(), mode="bilinear", padding_mode="border",
                        align_corners=False).float()
    new = F.grid_sample(volume, grid[:, 0], mode="bilinear", padding_mode="border", align_corners=False)
    assert (old - new).abs().max() > 1e-3


def test_shallow_fusion_samples_at_float32_positions_and_keeps_the_patch_dtype():
    offsets = sample_nested_offsets(4, GEOMETRY, torch.Generator().manual_seed(1))
    previous = torch.randn(4, 3, *GEOMETRY.patch)
    reference = shallow_context(previous, offsets, 2, GEOMETRY)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = shallow_context(previous, offsets, 2, GEOMETRY)
        low = shallow_context(previous.bfloat16(), offsets, 2, GEOMETRY)
    assert got.dtype == torch.float32 and low.dtype == torch.bfloat16
    torch.testing.assert_close(got, reference, atol=1e-6, rtol=0)
    # bf16 values in, float32 positions: only the output's bf16 rounding (2^-8 relative) remains.
    exact = shallow_context(previous.bfloat16().float(), offsets, 2, GEOMETRY)
    torch.testing.assert_close(low.float(), exact, atol=1e-6, rtol=2 ** -8)
