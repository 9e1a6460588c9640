"""Patch geometry: nesting, Eq. 8, token coordinates, extraction, inference tilings."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hpdm_core.errors import BadInputError
from hpdm_core.pyramid import (
    PatchGeometry,
    axis_positions,
    context_grid,
    extract_hierarchy,
    is_nested,
    level_video,
    parent_chain,
    parse_overlap,
    sample_nested_offsets,
    tile_coverage,
    tile_offsets,
    token_centres,
)

OVERLAPS = ["none", "f", "h", "w", "fh", "fw", "hw", "fhw"]


def nested_by_hand(chain, patch):
    """The nesting rule (docs/design.md, "Nested chains in training"), written out per level and axis."""
    for level, o in enumerate(chain):
        for axis in range(3):
            if not 0 <= o[axis] <= patch[axis] * 2 ** level - patch[axis]:
                return False
            if level and not (2 * chain[level - 1][axis] <= o[axis]
                              and o[axis] + patch[axis] <= 2 * (chain[level - 1][axis] + patch[axis])):
                return False
    return True


@settings(max_examples=60, deadline=None)
@given(patch=st.tuples(*[st.integers(1, 9)] * 3), levels=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
def test_nested_draws_obey_the_nesting_rule(patch, levels, seed):
    geometry = PatchGeometry(patch, levels)
    offsets = sample_nested_offsets(64, geometry, torch.Generator().manual_seed(seed))
    assert offsets.shape == (64, levels, 3) and offsets.dtype == torch.long
    assert (offsets[:, 0] == 0).all()
    assert is_nested(offsets, geometry).all()
    for chain in offsets[:8].tolist():
        assert nested_by_hand(chain, patch)


def test_nested_draws_cover_every_position_uniformly():
    geometry = PatchGeometry((2, 3, 4), 2)
    offsets = sample_nested_offsets(12_000, geometry, torch.Generator().manual_seed(1))
    for axis, r in enumerate(geometry.patch):
        counts = torch.bincount(offsets[:, 1, axis], minlength=r + 1).float()
        assert counts.numel() == r + 1  # o_1 in {0..r}: never outside the canvas
        assert (counts / counts.sum() - 1 / (r + 1)).abs().max() < 0.03


def test_top_level_position_is_uniform_over_its_canvas():
    # Inference denoises every top-level tile, corners included: training must draw them as often.
    # The top patch of a (4, 8, 8) x 4-level pyramid can start at 29 or 57 positions per axis; the
    # bottom-up draw (each level uniform inside its parent) gave corner positions ~(1/5)^3 of the
    # uniform rate. A chi-square test of the marginal per axis, and the corner itself.
    geometry = PatchGeometry((4, 8, 8), 4)
    n = 60_000
    offsets = sample_nested_offsets(n, geometry, torch.Generator().manual_seed(7))
    assert is_nested(offsets, geometry).all()
    top = offsets[:, -1]
    for axis in range(3):
        positions = geometry.canvas(3)[axis] - geometry.patch[axis] + 1
        counts = torch.bincount(top[:, axis], minlength=positions).double()
        assert counts.numel() == positions
        expected = n / positions
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        # dof = positions - 1 (28 or 56): the 99.9 % quantile is below 2 * dof + 20.
        assert chi2 < 2 * (positions - 1) + 20, (axis, chi2)
    corner = ((top[:, 1] == 0) & (top[:, 2] == 0)).double().mean().item()
    assert corner == pytest.approx(1 / 57 ** 2, rel=0.6)


def test_parents_are_uniform_among_the_positions_that_contain_the_child():
    geometry = PatchGeometry((4, 4, 4), 3)
    offsets = sample_nested_offsets(40_000, geometry, torch.Generator().manual_seed(2))
    # A level-2 patch at o_2 = 8 fits inside level-1 parents 2..4 (ceil((8-4)/2)..floor(8/2)).
    parents = offsets[offsets[:, 2, 0] == 8][:, 1, 0]
    counts = torch.bincount(parents, minlength=5)[2:].double()
    assert torch.bincount(parents, minlength=5)[:2].sum() == 0
    assert (counts / counts.sum() - 1 / 3).abs().max() < 0.05


def test_is_nested_rejects_a_child_outside_its_parent():
    geometry = PatchGeometry((4, 4, 4), 2)
    assert not is_nested(torch.tensor([[[0, 0, 0], [5, 0, 0]]]), geometry).any()  # leaves the canvas
    assert not is_nested(torch.tensor([[[0, 0, 0], [0, 0, -1]]]), geometry).any()
    geometry = PatchGeometry((4, 4, 4), 3)
    assert not is_nested(torch.tensor([[[0, 0, 0], [4, 0, 0], [0, 0, 0]]]), geometry).any()  # not inside parent
    assert is_nested(torch.tensor([[[0, 0, 0], [4, 0, 0], [8, 0, 0]]]), geometry).all()


@pytest.mark.parametrize("overlap", OVERLAPS)
@pytest.mark.parametrize("patch", [(4, 8, 6), (2, 4, 4)])
def test_parent_chains_are_nested_for_every_overlap_mode(overlap, patch):
    geometry = PatchGeometry(patch, 4)
    for level in range(4):
        tiles = tile_offsets(geometry, level, parse_overlap(overlap))
        chain = parent_chain(tiles, level, geometry)
        assert chain.shape == (tiles.shape[0], level + 1, 3)
        assert torch.equal(chain[:, -1], tiles)
        assert is_nested(chain, geometry).all()
        # Parents are centred over the child unless clamped at the canvas border: the child's centre
        # is never more than a quarter patch (in parent pixels) from the parent's centre.
        if level:
            child_centre = (chain[:, -1] + torch.tensor(patch) / 2) / 2
            parent_centre = chain[:, -2] + torch.tensor(patch) / 2
            assert ((child_centre - parent_centre).abs() <= torch.tensor(patch) / 4 + 0.5).all()


@pytest.mark.parametrize("overlap", OVERLAPS)
def test_tilings_cover_every_pixel_with_the_documented_tile_counts(overlap):
    geometry = PatchGeometry((2, 4, 4), 3)
    flags = parse_overlap(overlap)
    for level in range(3):
        tiles = tile_offsets(geometry, level, flags)
        per_axis = [2 * 2**level - 1 if flag else 2**level for flag in flags]
        assert tiles.shape[0] == per_axis[0] * per_axis[1] * per_axis[2]
        assert (tile_coverage(geometry, level, flags) >= 1).all()


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_shifted_tilings_cover_every_pixel_and_move_only_the_overlapped_spatial_axes(shift):
    """sample.tile_shifts: a tiling `shift` pixels on, plus a tile at each end of the canvas, nested like any other."""
    geometry = PatchGeometry((2, 8, 8), 3)
    flags = parse_overlap("fhw")
    for level in (1, 2):
        tiles = tile_offsets(geometry, level, flags, shift)
        canvas = geometry.canvas(level)
        for axis in (1, 2):
            starts = tiles[:, axis].unique().tolist()
            assert starts == sorted({0, canvas[axis] - 8, *range(shift, canvas[axis] - 8 + 1, 4)})
        assert torch.equal(tiles[:, 0].unique(), tile_offsets(geometry, level, flags)[:, 0].unique())  # frames: not shifted
        assert (tile_coverage(geometry, level, flags, shift=shift) >= 1).all()
        assert is_nested(parent_chain(tiles, level, geometry), geometry).all()
    # Level 0 is one tile, which no shift moves.
    assert torch.equal(tile_offsets(geometry, 0, flags, shift), tile_offsets(geometry, 0, flags))


def test_tile_shifts_need_an_overlapped_axis_and_a_shift_below_the_stride():
    geometry = PatchGeometry((2, 8, 8), 3)
    with pytest.raises(BadInputError, match="below its stride 4"):
        tile_offsets(geometry, 2, parse_overlap("hw"), 4)
    with pytest.raises(BadInputError, match="needs an overlapped axis"):
        axis_positions(8, 32, False, 1)
    # Only the overlapped axes move: with "w" the rows stay where the one tiling has them.
    tiles = tile_offsets(geometry, 2, parse_overlap("w"), 1)
    assert torch.equal(tiles[:, 1].unique(), tile_offsets(geometry, 2, parse_overlap("w"))[:, 1].unique())
    assert 1 in tiles[:, 2].tolist()


def test_parse_overlap_rejects_unknown_axes():
    assert parse_overlap("FHW") == (True, True, True)
    assert parse_overlap("none") == (False, False, False)
    for bad in ("x", "hh", "fhwf"):
        with pytest.raises(BadInputError):
            parse_overlap(bad)


def smooth_video(shape, seed=0):
    """A linear ramp in (t, y, x) of the full video: box filters and trilinear sampling keep it exact."""
    g = torch.Generator().manual_seed(seed)
    slope = torch.randn(3, generator=g)
    axes = [(torch.arange(n, dtype=torch.float64) + 0.5) / n for n in shape]
    t, y, x = torch.meshgrid(*axes, indexing="ij")
    return (slope[0] * t + slope[1] * y + slope[2] * x + 0.1).reshape(1, 1, *shape)


def test_eq8_grid_sample_on_the_parent_reproduces_the_child():
    geometry = PatchGeometry((4, 8, 8), 3)
    video = smooth_video(geometry.target).expand(6, 2, *geometry.target).contiguous()
    offsets = sample_nested_offsets(6, geometry, torch.Generator().manual_seed(3))
    patches = extract_hierarchy(video, offsets, geometry)
    for level in range(1, 3):
        for parent in range(level):
            grid = context_grid(offsets, level, parent, geometry, (1, 1, 1))  # one sample per pixel
            assert grid.shape == (6, 4, 8, 8, 3)
            resampled = F.grid_sample(patches[:, parent], grid.double(), mode="bilinear", padding_mode="border",
                                      align_corners=False)
            # Inside the hull of the parent's pixel centres trilinear sampling of a linear signal is exact;
            # beyond it, border padding holds the edge value (off by at most a parent half-pixel of slope).
            r = torch.tensor(geometry.patch, dtype=torch.float64).flip(0)
            interior = (grid.abs() <= 1 - 1 / r).all(-1).unsqueeze(1).expand_as(resampled)
            child = patches[:, level]
            assert interior.float().mean() > 0.3
            torch.testing.assert_close(resampled[interior], child[interior], atol=1e-6, rtol=0)
            assert (resampled - child).abs().max() < 0.5 * 2**-parent * 2


def test_token_centres_are_the_mean_pixel_position_of_each_token():
    geometry = PatchGeometry((4, 8, 8), 3)
    token = (2, 4, 4)
    offsets = sample_nested_offsets(3, geometry, torch.Generator().manual_seed(5))
    centres = token_centres(offsets, geometry, token)
    assert centres.shape == (3, 3, 2 * 2 * 2, 3) and centres.dtype == torch.float32
    for level in range(3):
        canvas = torch.tensor(geometry.canvas(level), dtype=torch.float64)
        o = offsets[:, level].double()
        # Token (0, 0, 0) spans pixels [o, o + token) of the level canvas; its centre in video units:
        expected = (o + torch.tensor(token) / 2) / canvas
        torch.testing.assert_close(centres[:, level, 0].double(), expected, atol=1e-6, rtol=0)
        assert ((centres[:, level] >= 0) & (centres[:, level] <= 1)).all()


def test_extract_hierarchy_crops_each_level_video_exactly():
    geometry = PatchGeometry((2, 4, 4), 3)
    clips = torch.randn(4, 3, *geometry.target)
    offsets = sample_nested_offsets(4, geometry, torch.Generator().manual_seed(2))
    patches = extract_hierarchy(clips, offsets, geometry)
    assert patches.shape == (4, 3, 3, 2, 4, 4)
    for b in range(4):
        for level in range(3):
            f, h, w = offsets[b, level].tolist()
            video = level_video(clips[b:b + 1], level, geometry)[0]
            assert torch.equal(patches[b, level], video[:, f:f + 2, h:h + 4, w:w + 4])
    # Level 0 is the whole clip box-downsampled by 4.
    torch.testing.assert_close(patches[:, 0], F.avg_pool3d(clips, 4))
    with pytest.raises(BadInputError):
        extract_hierarchy(clips[..., :-1], offsets, geometry)
