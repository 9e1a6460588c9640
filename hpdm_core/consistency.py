"""Consistency of generated pyramids, measured without any pretrained network.

- Coarse agreement: each level's canvas should be (close to) the final video box-downsampled to
  its size, since that is what level l is trained on; we report the mean absolute error per level.
- Seam score: patch-wise generation without enough context shows edges along the borders of the
  tiling grid. The score is the mean absolute difference of neighbouring pixels across the borders
  of the non-overlapped grid (stride = patch size) divided by the same at the pixels near those
  borders (within a quarter patch, the border itself left out): 1.0 means the borders look like their
  surroundings; a visible seam scores above 1.

  Near, not anywhere inside the tiles: content is not spread evenly over a frame. The synthetic set
  keeps its objects away from the frame's edges, so the pixel steps there are 5x smaller than in the
  middle, where the borders lie; against every interior pixel its real videos scored 1.27 (h) and
  1.26 (w), against their neighbourhoods 1.01 and 0.98.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def coarse_agreement(final: torch.Tensor, levels: list[torch.Tensor]) -> list[float]:
    """Mean |avg_pool(final, 2**(L-l)) - level_l| for each level l < L; videos [B, C, F, H, W]."""
    top = len(levels) - 1
    errors = []
    for level, canvas in enumerate(levels[:-1]):
        factor = 2 ** (top - level)
        pooled = F.avg_pool3d(final.float(), kernel_size=factor, stride=factor)
        if pooled.shape != canvas.shape:
            raise ValueError(f"level {level} canvas is {list(canvas.shape)}, the pooled video {list(pooled.shape)}")
        errors.append(float((pooled - canvas.float()).abs().mean()))
    return errors


def seam_score(video: torch.Tensor, patch: tuple[int, int, int]) -> dict[str, float | None]:
    """Border-to-neighbourhood ratio of neighbour differences per axis ('f', 'h', 'w') and their mean ('all').

    video [B, C, F, H, W]; an axis with a single tile has no border and scores None. A border's
    neighbourhood is the pixel pairs within max(1, patch // 4) of it on either side. The axes are
    scored apart because motion and texture make their typical differences unequal.
    """
    video = video.float()
    scores: dict[str, float | None] = {}
    for axis, name in enumerate("fhw"):
        dim = 2 + axis
        size, step = video.shape[dim], patch[axis]
        diffs = (video.narrow(dim, 1, size - 1) - video.narrow(dim, 0, size - 1)).abs()
        diffs = diffs.movedim(dim, 0).reshape(size - 1, -1).mean(1)  # difference between pixel i and i+1
        border = torch.zeros(size - 1, dtype=torch.bool)
        border[step - 1::step] = True  # pixel i is the last of a tile, i+1 the first of the next
        near = torch.zeros(size - 1, dtype=torch.bool)
        for i in border.nonzero().flatten().tolist():
            near[max(0, i - max(1, step // 4)):i + max(1, step // 4) + 1] = True
        near &= ~border
        if not border.any() or not near.any():
            scores[name] = None
            continue
        a, b = diffs[border], diffs[near]
        scores[name] = float(a.mean() / b.mean().clamp_min(1e-12))
    found = [v for v in scores.values() if v is not None]
    scores["all"] = sum(found) / len(found) if found else None
    return scores


def consistency_report(final: torch.Tensor, levels: list[torch.Tensor], patch: tuple[int, int, int]) -> dict:
    """Both checks in one dict (JSON-ready): coarse_mae per lower level and the top level's seam scores."""
    return {"coarse_mae": coarse_agreement(final, levels), "seam": seam_score(final, patch)}
