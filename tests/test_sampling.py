"""The hierarchical overlapped sampler: oracle reconstruction, caching, tilings, batching independence."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from hpdm_core import diffusion
from hpdm_core.config import SampleConfig, preset
from hpdm_core.consistency import coarse_agreement, consistency_report, seam_score
from hpdm_core.pyramid import (PatchGeometry, add_tiles, crop, is_nested, level_video, parse_overlap, tile_chains,
                               tile_coverage, tile_offsets, tile_weights)
from hpdm_core.canvas import count_tile_evaluations
from hpdm_core.heun import heun_sample, level_steps
from hpdm_core.model import ContextCache
from hpdm_core.sampling import generate, resolve_labels
from hpdm_core.seeding import sample_seed
from hpdm_core.errors import BadInputError

MODES = ["none", "f", "h", "w", "fh", "fw", "hw", "fhw"]


class OracleDenoiser(torch.nn.Module):
    """Stands in for the network: returns the ground-truth patches of one known video.

    It also checks what the sampler hands it: nested chains, lower levels equal to the truth
    (the already generated canvases) at sigma = context_sigma, and caches built for the same chains.
    """

    def __init__(self, video: torch.Tensor, geometry: PatchGeometry, num_classes: int = 4):
        super().__init__()
        self.geometry, self.num_classes = geometry, num_classes
        self.cfg = preset("tiny").diffusion
        self.levels = [level_video(video, level, geometry) for level in range(geometry.num_levels)]
        self.calls = {"forward": 0, "encode": 0}

    def truth(self, offsets: torch.Tensor, level: int) -> torch.Tensor:
        canvas = self.levels[level].expand(offsets.shape[0], -1, -1, -1, -1)
        return crop(canvas, offsets[:, level], self.geometry.patch)

    def _check_context(self, x, sigma, offsets):
        for k in range(x.shape[1]):
            torch.testing.assert_close(x[:, k], self.truth(offsets, k), atol=1e-4, rtol=0)
            assert torch.allclose(sigma[:, k], torch.full_like(sigma[:, k], diffusion.context_sigma(k, self.cfg)))

    def encode_context(self, x, sigma, offsets, labels, offload=False):
        self.calls["encode"] += 1
        assert is_nested(offsets, self.geometry).all()
        self._check_context(x, sigma, offsets)
        # A cache whose rows say which chain and label they were built for: the sampler gathers rows of the
        # caches of distinct parent chains for each tile batch, and a wrong row would show in forward.
        return ContextCache(offsets.shape[1], [offsets.clone()], labels.clone())

    def forward(self, x, sigma, offsets, labels, context=None):
        self.calls["forward"] += 1
        assert is_nested(offsets, self.geometry).all()
        top = offsets.shape[1] - 1
        if context is None:
            assert x.shape[1] == top + 1
            self._check_context(x[:, :top], sigma[:, :top], offsets)
            return torch.stack([self.truth(offsets, k) for k in range(top + 1)], 1)
        assert x.shape[1] == 1
        assert torch.equal(context.acts[0], offsets[:, :top]) and torch.equal(context.pixels, labels)
        return self.truth(offsets, top).unsqueeze(1)


def _oracle(geometry=PatchGeometry((2, 4, 4), 3)):
    video = torch.rand(1, 3, *geometry.target, generator=torch.Generator().manual_seed(1)) * 1.8 - 0.9
    return video, OracleDenoiser(video, geometry)


@pytest.mark.parametrize("mode", MODES)
def test_oracle_reproduces_every_level(mode):
    video, oracle = _oracle()
    options = SampleConfig(steps=4, overlap=mode, s_churn=40.0, tile_batch=10)
    result = generate(oracle, torch.tensor([0, 3]), seed=5, options=options, batch_size=2, keep_levels=True)
    for level, canvas in enumerate(result.levels):
        truth = oracle.levels[level].expand(2, -1, -1, -1, -1)
        torch.testing.assert_close(canvas, truth, atol=1e-4, rtol=0)
    torch.testing.assert_close(result.videos, video.expand(2, -1, -1, -1, -1), atol=1e-4, rtol=0)
    assert oracle.calls["encode"] > 0  # caching is on by default


@pytest.mark.parametrize("mode", ["w", "fhw"])
def test_oracle_reproduces_every_level_with_tent_blending(mode):
    """Tiles that agree average to what they say under any weights: a tile weight that the patches and the
    coverage apply differently would show here."""
    video, oracle = _oracle()
    options = SampleConfig(steps=4, overlap=mode, tile_blend="tent", tile_batch=10)
    result = generate(oracle, torch.tensor([0, 3]), seed=5, options=options, batch_size=2, keep_levels=True)
    for level, canvas in enumerate(result.levels):
        torch.testing.assert_close(canvas, oracle.levels[level].expand(2, -1, -1, -1, -1), atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode,blend", [("hw", "uniform"), ("fhw", "tent")])
def test_oracle_reproduces_every_level_with_shifted_tilings_in_turn(mode, blend):
    """sample.tile_shifts: every tiling's weights and coverage must agree, and each tile must get the cache of its
    own parent chain, or the known video would not come back."""
    video, oracle = _oracle(PatchGeometry((2, 8, 8), 3))
    options = SampleConfig(steps=4, overlap=mode, tile_blend=blend, tile_shifts=[0, 1, 2, 3], guidance=2.0,
                           tile_batch=10)
    result = generate(oracle, torch.tensor([0, 3]), seed=5, options=options, batch_size=2, keep_levels=True)
    for level, canvas in enumerate(result.levels):
        torch.testing.assert_close(canvas, oracle.levels[level].expand(2, -1, -1, -1, -1), atol=1e-4, rtol=0)


def test_shifted_tilings_take_turns_one_per_evaluation():
    geometry = PatchGeometry((2, 8, 8), 3)
    _, oracle = _oracle(geometry)
    seen = []
    forward = oracle.forward
    oracle.forward = lambda x, sigma, offsets, *a, **k: seen.append(offsets[:, -1].clone()) or forward(
        x, sigma, offsets, *a, **k)
    shifts = [0, 2, 3]
    options = SampleConfig(steps=16, overlap="hw", tile_shifts=shifts, tile_batch=1000)  # one call per evaluation
    generate(oracle, torch.tensor([1]), options=options, num_levels=3)
    top = [tiles for tiles in seen if len(tiles) > 1 and tiles.max() > geometry.canvas(1)[1]]  # level-2 calls
    assert len(top) == 7  # 4 Heun steps: 7 evaluations
    for evaluation, tiles in enumerate(top):
        expected = tile_offsets(geometry, 2, parse_overlap("hw"), shifts[evaluation % 3])
        assert torch.equal(tiles, expected)


def test_tiles_that_share_their_parents_share_one_cache():
    """The lower levels' activations depend on the chain below a tile only: at level 1 every tile of a sample has
    the whole level-0 canvas as its parent, so it is encoded once per sample."""
    _, oracle = _oracle(PatchGeometry((2, 8, 8), 3))
    encoded = []
    encode = oracle.encode_context
    oracle.encode_context = lambda x, sigma, offsets, *a, **k: encoded.append(offsets.shape) or encode(
        x, sigma, offsets, *a, **k)
    options = SampleConfig(steps=4, overlap="hw", tile_shifts=[0, 1], tile_batch=1000)
    generate(oracle, torch.tensor([0, 1, 2]), options=options, batch_size=3)
    geometry = oracle.geometry
    chains = [tile_chains(geometry, 2, parse_overlap("hw"), shift) for shift in (0, 1)]
    parents = {tuple(chain[:2].flatten().tolist()) for tiling in chains for chain in tiling}
    assert [shape[:2] for shape in encoded] == [(3, 1), (3 * len(parents), 2)]
    assert len(parents) < sum(len(tiling) for tiling in chains)  # shared


def test_shifted_tilings_need_valid_shifts():
    _, oracle = _oracle()
    for shifts, message in (([], "distinct shifts"), ([0, 0], "distinct shifts"), ([-1], ">= 0")):
        with pytest.raises(BadInputError, match=message):
            generate(oracle, torch.tensor([0]), options=SampleConfig(steps=2, tile_shifts=shifts))
    # With neither h nor w overlapped no shift moves a tile: one tiling, as with [0] (a run's shifts and --overlap f).
    for overlap in ("none", "f"):
        shifted, plain = (SampleConfig(steps=2, overlap=overlap, tile_shifts=shifts) for shifts in ([0, 1], [0]))
        assert count_tile_evaluations(oracle.geometry, shifted, 1) == count_tile_evaluations(oracle.geometry, plain, 1)
        torch.testing.assert_close(generate(oracle, torch.tensor([0]), options=shifted).videos,
                                   generate(oracle, torch.tensor([0]), options=plain).videos, atol=0, rtol=0)
    with pytest.raises(BadInputError, match="below its stride 2"):
        generate(oracle, torch.tensor([0]), options=SampleConfig(steps=2, overlap="hw", tile_shifts=[0, 2]))


@pytest.mark.parametrize("guidance,cache", [(2.5, False), (2.5, True), (1.0, False)])
def test_oracle_with_guidance_and_without_cache(guidance, cache):
    video, oracle = _oracle()
    options = SampleConfig(steps=4, overlap="hw", guidance=guidance, cache=cache, tile_batch=7)
    result = generate(oracle, torch.tensor([1]), seed=0, options=options)
    torch.testing.assert_close(result.videos, video, atol=1e-4, rtol=0)
    assert (oracle.calls["encode"] > 0) == cache


def test_progress_counts_every_network_row():
    _, oracle = _oracle()
    options = SampleConfig(steps=4, overlap="fw", guidance=2.0, tile_batch=9)
    seen = []
    result = generate(oracle, torch.tensor([0, 1, 2]), options=options, batch_size=2, progress=seen.append)
    expected = count_tile_evaluations(oracle.geometry, options, 3)
    assert sum(seen) == result.tile_evaluations == expected
    # 3 samples x 2 passes x (7 evaluations x 1 tile + 3 x (3*2*3) tiles + 1 x (7*4*7) tiles)
    assert expected == 3 * 2 * (7 * 1 + 3 * 18 + 1 * 196)


def test_guidance_levels_guides_only_the_lowest_levels():
    """guidance_levels=1: level 0 evaluates null-class copies, the upper levels only the requested class."""
    video, oracle = _oracle()
    null_rows = {}
    forward = oracle.forward

    def spy(x, sigma, offsets, labels, context=None):
        level = offsets.shape[1] - 1
        null_rows[level] = null_rows.get(level, 0) + int((labels == oracle.num_classes).sum())
        return forward(x, sigma, offsets, labels, context)

    oracle.forward = spy
    options = SampleConfig(steps=4, overlap="hw", guidance=3.0, guidance_levels=1, tile_batch=8)
    seen = []
    result = generate(oracle, torch.tensor([0, 2]), options=options, batch_size=2, progress=seen.append)
    torch.testing.assert_close(result.videos, video.expand(2, -1, -1, -1, -1), atol=1e-4, rtol=0)
    assert null_rows[0] > 0 and null_rows[1] == null_rows[2] == 0
    assert [options.guidance_at(level) for level in range(3)] == [3.0, 1.0, 1.0]
    assert sum(seen) == result.tile_evaluations == count_tile_evaluations(oracle.geometry, options, 2)
    every_level = replace(options, guidance_levels=0)
    assert count_tile_evaluations(oracle.geometry, every_level, 2) > result.tile_evaluations
    assert [every_level.guidance_at(level) for level in range(3)] == [3.0, 3.0, 3.0]


@pytest.mark.parametrize("mode", MODES)
def test_tile_counts_and_coverage(mode):
    geometry = PatchGeometry((4, 4, 8), 3)
    overlap = parse_overlap(mode)
    for level in range(3):
        chains = tile_chains(geometry, level, overlap)
        per_axis = [2 * 2 ** level - 1 if axis in mode else 2 ** level for axis in "fhw"]
        assert chains.shape == (math.prod(per_axis), level + 1, 3)
        assert is_nested(chains, geometry).all()
        assert (tile_coverage(geometry, level, overlap) >= 1).all()
        assert torch.equal(chains[:, -1], tile_offsets(geometry, level, overlap))


def test_tent_weights_sum_to_one_where_two_tiles_meet():
    geometry = PatchGeometry((4, 8, 8), 3)
    overlap = parse_overlap("hw")
    weights = tile_weights(geometry.patch, overlap, "tent")
    assert torch.equal(weights[0], weights[-1])  # time is not overlapped: no ramp along f
    assert weights.min() > 0 and weights.max() <= 1
    torch.testing.assert_close(tile_weights(geometry.patch, overlap, "uniform"), torch.ones(geometry.patch))
    coverage = tile_coverage(geometry, 2, overlap, "tent")
    half = 4  # r / 2: from here on every pixel lies under two tiles per overlapped axis
    torch.testing.assert_close(coverage[:, half:-half, half:-half], torch.ones_like(coverage[:, half:-half, half:-half]))
    assert (coverage > 0).all()


def test_tent_blending_fades_disagreeing_tiles_into_each_other():
    """Tiles that each add their own constant error: the uniform average steps by up to half the difference
    of two neighbours' errors where a tile starts, the tent cross-fades over r/2 pixels."""
    geometry = PatchGeometry((2, 8, 8), 3)
    overlap = parse_overlap("hw")
    offsets = tile_offsets(geometry, 2, overlap)
    errors = torch.rand(len(offsets), generator=torch.Generator().manual_seed(0)) * 2 - 1
    steps = {}
    for blend in ("uniform", "tent"):
        total = torch.zeros(1, 1, *geometry.canvas(2))
        patches = errors.view(-1, 1, 1, 1, 1) * tile_weights(geometry.patch, overlap, blend)
        add_tiles(total, torch.zeros(len(offsets), dtype=torch.long), offsets, patches.expand(-1, 1, -1, -1, -1))
        canvas = total / tile_coverage(geometry, 2, overlap, blend)
        steps[blend] = canvas.diff(dim=-1).abs().max().item()
    # Errors lie in [-1, 1]. Uniform: where a tile starts, the pixel's mean swaps one tile for another, a step
    # of half their difference (0.92 with this seed). Tent: every tile's weight changes by at most 1 / (r / 2)
    # per pixel and the weights sum to one, so no step exceeds 2 / (r / 2) = 0.5.
    assert steps["uniform"] > 0.7
    assert steps["tent"] <= 2 / 4 + 1e-6


def test_heun_lands_on_a_constant_denoiser_and_churn_is_used():
    target = torch.full((1, 3, 2, 2, 2), 0.25)
    sigmas = torch.tensor([80.0, 10.0, 1.0, 0.1, 0.0])
    noise = torch.randn(1, 3, 2, 2, 2)
    draws = []

    def churn():
        draws.append(1)
        return torch.randn(1, 3, 2, 2, 2)

    out = heun_sample(lambda x, s: target, noise, sigmas, churn_noise=churn, s_churn=40, s_tmin=0.05, s_tmax=50)
    torch.testing.assert_close(out, target)
    assert len(draws) == 3  # churn only where s_tmin <= sigma <= s_tmax (10, 1, 0.1)


def _tiny_denoiser(num_levels=3):
    from hpdm_core.diffusion import build_denoiser

    cfg = preset("tiny")
    m = cfg.model
    m.patch, m.token, m.num_levels = [2, 8, 8], [1, 4, 4], num_levels
    m.interface_dim, m.latent_dim, m.num_latents, m.head_dim = 16, 16, 4, 8
    m.num_blocks, m.latent_layers, m.levels_per_block, m.fourier_features = 2, 1, [num_levels - 1, num_levels], 2
    m.num_classes = 3
    cfg.validate()
    torch.manual_seed(0)
    return build_denoiser(cfg).eval()


@pytest.mark.parametrize("overlap,shifts", [("none", [0]), ("hw", [0, 1, 2, 3])])
def test_cached_equals_uncached_with_a_real_network(overlap, shifts):
    """With shifted tilings the cache holds each distinct parent chain once and every tile reads its own rows."""
    denoiser = _tiny_denoiser()
    labels = torch.tensor([2, 0])
    encodes = []
    encode = denoiser.encode_context
    denoiser.encode_context = lambda *args, **kwargs: encodes.append(args[0].shape[1]) or encode(*args, **kwargs)
    options = SampleConfig(steps=8, overlap=overlap, tile_shifts=shifts, guidance=1.5,
                           tile_batch=32)  # levels 1, 2: 4 and 2 steps
    results = [generate(denoiser, labels, seed=3, options=replace(options, cache=cache), batch_size=2)
               for cache in (True, False)]
    assert sorted(set(encodes)) == [1, 2]  # both upper levels used a cache of their lower levels
    # Cached and uncached forwards batch the lower levels differently: float32 rounding of a canvas that starts
    # at sigma_max * z (|z| < 5), as in test_same_videos_whatever_batch_size_and_tile_batch.
    atol = 4 * torch.finfo(torch.float32).eps * denoiser.cfg.sigma_max * 5
    torch.testing.assert_close(results[0].videos, results[1].videos, atol=atol, rtol=0)
    offloaded = generate(denoiser, labels, seed=3, options=replace(options, offload_cache=True), batch_size=2)
    torch.testing.assert_close(offloaded.videos, results[1].videos, atol=atol, rtol=0)


def test_same_videos_whatever_batch_size_and_tile_batch():
    denoiser = _tiny_denoiser(num_levels=2)
    labels = torch.tensor([0, 1, 2])
    runs = [generate(denoiser, labels, seed=11, options=SampleConfig(steps=2, overlap="fw", tile_batch=tb),
                     batch_size=bs) for bs, tb in ((3, 64), (1, 2), (2, 5))]
    # Other batch shapes take other float32 matmul blockings (and thread splits), so the network's outputs differ
    # in their last bits. The canvas starts at sigma_max * z (|z| < 5 over these ~10^4 values) and ends near 1:
    # a rounding of that first canvas survives the cancellation whole, so the videos agree to a few ulps of
    # sigma_max * 5, not of 1 (one thread: 2^-16 apart; a batching bug moves them by ~0.1).
    atol = 4 * torch.finfo(torch.float32).eps * denoiser.cfg.sigma_max * 5
    for run in runs[1:]:
        torch.testing.assert_close(run.videos, runs[0].videos, atol=atol, rtol=0)
    assert not torch.allclose(runs[0].videos[0], runs[0].videos[1])  # each sample has its own noise
    other_seed = generate(denoiser, labels[:1], seed=12, options=SampleConfig(steps=2, overlap="fw"))
    assert not torch.allclose(other_seed.videos[0], runs[0].videos[0])


def test_sample_seeds_and_steps():
    keys = [(0, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0), (2 ** 32, 0, 0), (7, 3, 2)]
    assert len({sample_seed(*key) for key in keys}) == len(keys)  # every key its own seed, high bits too
    # Pinned: a seed must give the same videos in every version (README, Sampling).
    assert sample_seed(7, 3, 2) == 5990081960762803484
    assert [level_steps(128, level) for level in range(4)] == [128, 64, 32, 16]
    assert level_steps(3, 5) == 1


def test_labels_default_cycle_and_bad_classes():
    assert resolve_labels(None, 5, 3).tolist() == [0, 1, 2, 0, 1]
    assert resolve_labels([2], 3, 3).tolist() == [2, 2, 2]
    assert resolve_labels([2, 0], 2, 3).tolist() == [2, 0]
    with pytest.raises(BadInputError, match="out of range"):
        resolve_labels([3], 2, 3)
    with pytest.raises(BadInputError, match="once per sample"):
        resolve_labels([0, 1], 3, 3)
    with pytest.raises(BadInputError, match="overlap"):
        SampleConfig(overlap="fx").validate()


# ----------------------------------------------------------------------------- consistency report

def test_seam_score_flags_an_artificial_seam():
    f, h, w = 4, 16, 16
    grid = torch.meshgrid(*(torch.linspace(0, 1, n) for n in (f, h, w)), indexing="ij")
    smooth = (0.3 * grid[0] - 0.5 * grid[1] + 0.8 * grid[2]).expand(1, 3, f, h, w).clone()  # a smooth ramp
    assert all(v == pytest.approx(1.0, abs=1e-3) for v in seam_score(smooth, (2, 8, 8)).values())
    noisy = torch.rand(2, 3, f, h, w, generator=torch.Generator().manual_seed(0))
    assert seam_score(noisy, (2, 8, 8))["all"] == pytest.approx(1.0, abs=0.1)
    seamed = smooth.clone()
    seamed[..., 8:] += 0.3  # a step exactly at the tile border along w
    scores = seam_score(seamed, (2, 8, 8))
    assert scores["w"] > 3 and scores["all"] > 1.2


def test_seam_score_of_real_videos_is_one_where_content_is_uneven():
    """The synthetic set keeps its objects off the frame's edges, so pixel steps are largest in the middle,
    where the tile borders lie. Its real videos have no seam and must score about 1 (against every pixel
    inside the tiles, rather than those near the borders, they scored 1.27 on h)."""
    from hpdm_core.data.synthetic import synthetic_video

    videos = np.stack([synthetic_video(i, frames=32, resolution=64, classes=4)[0] for i in range(32)])
    video = torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    scores = seam_score(video, (8, 16, 16))
    assert all(0.9 < scores[axis] < 1.1 for axis in "fhw"), scores


def test_coarse_agreement_is_zero_for_a_true_pyramid():
    geometry = PatchGeometry((2, 4, 4), 3)
    video = torch.rand(2, 3, *geometry.target) * 2 - 1
    levels = [level_video(video, level, geometry) for level in range(3)]
    assert coarse_agreement(video, levels) == pytest.approx([0.0, 0.0], abs=1e-6)
    levels[0] = levels[0] + 0.5
    report = consistency_report(video, levels, geometry.patch)
    assert report["coarse_mae"][0] == pytest.approx(0.5, abs=1e-5) and report["coarse_mae"][1] < 1e-6
