"""Canvas tiling at inference: tile chains of a level, crops out of a canvas, averaging back into it.

A level-l canvas is covered by tiles (pyramid.tile_offsets); every tile carries a chain of parents
(pyramid.parent_chain) so that its lower levels are nested exactly as in training. The denoised
predictions of all tiles are summed into the canvas and divided by the number of tiles over each
pixel (DESIGN.md, Diffusion: "a pixel's weight is the number of tiles over it").
"""

from __future__ import annotations

import torch

from hpdm_core.pyramid import PatchGeometry, crop, parent_chain, tile_coverage, tile_offsets


def tile_chains(geometry: PatchGeometry, level: int, overlap: str | tuple[bool, bool, bool]) -> torch.Tensor:
    """Offsets [T, level + 1, 3] of every tile of level `level` with its nested parents."""
    return parent_chain(tile_offsets(geometry, level, overlap), level, geometry)


def coverage(geometry: PatchGeometry, level: int, overlap: str | tuple[bool, bool, bool]) -> torch.Tensor:
    """Tiles over each pixel of the level canvas, float [*R_l]."""
    if not isinstance(overlap, str):
        overlap = "".join(axis for axis, on in zip("fhw", overlap) if on) or "none"
    return tile_coverage(geometry, level, overlap)


def crop_tiles(canvases: torch.Tensor, samples: torch.Tensor, offsets: torch.Tensor,
               size: tuple[int, int, int]) -> torch.Tensor:
    """Patches [n, C, *size]: row i is canvases[samples[i]] cropped at offsets[i]."""
    return crop(canvases[samples], offsets.to(canvases.device), size)


def add_tiles(total: torch.Tensor, samples: torch.Tensor, offsets: torch.Tensor, patches: torch.Tensor) -> None:
    """total[samples[i]] += patches[i] at offsets[i], in row order (so the sum is batching-independent)."""
    f, h, w = patches.shape[-3:]
    for i, (b, o) in enumerate(zip(samples.tolist(), offsets.tolist())):
        total[b, :, o[0]:o[0] + f, o[1]:o[1] + h, o[2]:o[2] + w] += patches[i]
