"""The HPDM network: adaptive computation, deep context fusion, coarse-to-fine flow, caching."""

import copy

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from hpdm_core.config import Config, preset
from hpdm_core.diffusion import build_denoiser
from hpdm_core.errors import BadInputError
from hpdm_core.model import HPDM, ContextCache
from hpdm_core.model.fusion import DeepFusion
from hpdm_core.model.rin import TokenMixing
from hpdm_core.pyramid import PatchGeometry, context_grid, sample_nested_offsets

TIME_FROM_1 = "deep+token_mixing+token_mixing_frames=3+token_mixing_time_from_level=1"
FUSIONS = ["deep", "shallow", "none", "deep+token_mixing", "deep+token_mixing+token_mixing_frames=3", TIME_FROM_1,
           "deep+token_overlap", "shallow+token_overlap"]


def small_config(fusion="deep", levels_per_block=(1, 2, 3, 3), **overrides) -> Config:
    """A small 3-level model; "deep+token_mixing" is deep fusion with model.token_mixing = true (any switch;
    "key=N" sets an integer)."""
    cfg = Config()
    m = cfg.model
    fusion, *switches = fusion.split("+")
    for switch in switches:  # a bool switch on; token_overlap, in pixels, 1
        key, _, value = switch.partition("=")
        setattr(m, key, int(value) if value else True if isinstance(getattr(m, key), bool) else 1)
    m.patch, m.token, m.num_levels = [2, 8, 8], [1, 4, 4], 3
    m.interface_dim, m.latent_dim, m.num_latents, m.latent_layers, m.head_dim = 32, 32, 4, 1, 16
    m.mlp_ratio, m.fourier_features, m.num_classes = 2.0, 4, 5
    m.num_blocks, m.levels_per_block, m.fusion = len(levels_per_block), list(levels_per_block), fusion
    for key, value in overrides.items():
        setattr(m, key, value)
    return cfg.validate()


def open_context_path(model: HPDM) -> None:
    """Random fusion weights: at initialisation the context path is closed by design (identity init)."""
    g = torch.Generator().manual_seed(7)
    for fusion in getattr(model, "fusions", []):
        with torch.no_grad():
            fusion.proj.weight.copy_(torch.randn(fusion.proj.weight.shape, generator=g) * 0.2)


def make_model(cfg: Config, dtype=torch.float64) -> HPDM:
    model = HPDM(cfg.model).to(dtype)
    open_context_path(model)
    g = torch.Generator().manual_seed(8)
    for block in model.blocks:  # token mixing starts as the identity too; random weights test it
        if block.mixing is not None:
            with torch.no_grad():
                block.mixing.weight.copy_(torch.randn(block.mixing.weight.shape, generator=g) * 0.2)
                if block.mixing.time_weight is not None:
                    block.mixing.time_weight.copy_(torch.randn(block.mixing.time_weight.shape, generator=g) * 0.2)
    return model


def make_inputs(cfg: Config, batch=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    m = cfg.model
    x = torch.randn(batch, m.num_levels, m.channels, *m.patch, generator=g, dtype=dtype)
    noise_cond = torch.randn(batch, m.num_levels, generator=g, dtype=dtype)
    offsets = sample_nested_offsets(batch, PatchGeometry.from_config(m), g)
    labels = torch.randint(0, m.num_classes + 1, (batch,), generator=g)
    return x, noise_cond, offsets, labels


def reference_forward(model: HPDM, x, noise_cond, offsets, labels):
    """A plain loop, one level at a time and written out from the paper: level l skips block b when
    l >= levels_per_block[b]; otherwise its block input a_l is fused with the mean of the trilinear
    samples of every lower level's block-b input, then the block runs on level l alone."""
    cfg = model.cfg
    grid_shape = model.token_grid
    n = x.shape[1]
    block_inputs = {}  # (level, block) -> [B, N, D]
    outputs = []
    for level in range(n):
        a, z, coords = model.embed(x[:, level:level + 1], noise_cond[:, level:level + 1], offsets[:, :level + 1],
                                   labels, first_level=level)
        a, z, coords = a[:, 0], z[:, 0], coords[:, 0]
        cond = z[:, -3:].sum(1, keepdim=True)  # noise level + pyramid level + class embeddings
        for b, block in enumerate(model.blocks):
            if level >= model.levels_per_block[b]:
                continue
            block_inputs[level, b] = a
            if cfg.fusion == "deep" and level > 0:
                samples = []
                for k in range(level):
                    volume = rearrange(block_inputs[k, b], "b (f h w) d -> b d f h w", f=grid_shape[0],
                                       h=grid_shape[1], w=grid_shape[2])
                    grid = context_grid(offsets, level, k, model.geometry, model.token).to(x.dtype)
                    sampled = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=False)
                    samples.append(rearrange(sampled, "b d f h w -> b (f h w) d"))
                ctx = torch.stack(samples).mean(0)
                a = model.fusions[b].proj(torch.cat([a, ctx, coords.to(x.dtype)], -1))
            over_time = level >= cfg.token_mixing_time_from_level
            a, z = block(a, z, cond, time_from_row=0 if over_time else len(a))
        outputs.append(model.detokenize(a.unsqueeze(1))[:, 0])
    return torch.stack(outputs, 1)


@pytest.mark.parametrize("fusion", ["deep", "deep+token_mixing", "deep+token_mixing+token_mixing_frames=3",
                                    TIME_FROM_1, "deep+token_overlap"])
@pytest.mark.parametrize("levels_per_block", [(3, 3, 3, 3), (1, 2, 3, 3), (1, 1, 1, 3)])
def test_forward_equals_a_plain_loop_over_levels(levels_per_block, fusion):
    cfg = small_config(fusion, levels_per_block)
    model = make_model(cfg)
    inputs = make_inputs(cfg)
    out = model(*inputs)
    assert out.shape == inputs[0].shape
    torch.testing.assert_close(out, reference_forward(model, *inputs), atol=1e-10, rtol=1e-10)


def test_adaptive_computation_changes_only_the_skipping_levels():
    cfg_full, cfg_adaptive = small_config("deep", (3, 3, 3, 3)), small_config("deep", (1, 2, 3, 3))
    model = make_model(cfg_full)
    adaptive = HPDM(cfg_adaptive.model).double()
    adaptive.load_state_dict(model.state_dict())
    inputs = make_inputs(cfg_full)
    full, skipped = model(*inputs), adaptive(*inputs)
    # Level 0 goes through every block: equal up to float64 rounding (row counts change BLAS blocking).
    torch.testing.assert_close(full[:, 0], skipped[:, 0], atol=1e-12, rtol=0)
    assert (full[:, 2] - skipped[:, 2]).abs().max() > 1e-3


def test_token_mixing_starts_as_identity_and_reaches_only_neighbouring_tokens():
    mixing = TokenMixing(4, 6, (3, 4, 5))
    mixing.reset_parameters()
    a, cond = torch.randn(2, 60, 4), torch.randn(2, 1, 6)
    torch.testing.assert_close(mixing(a, cond), a)
    with torch.no_grad():
        mixing.weight.normal_()
        mixing.gate.weight.normal_()
    changed = a.clone()
    changed[0, 2 * 20 + 0 * 5 + 4] += 1.0  # token (f=2, h=0, w=4), a corner of the last frame
    moved = (mixing(changed, cond) - mixing(a, cond)).abs().sum(-1)[0].reshape(3, 4, 5) > 0
    expected = torch.zeros(3, 4, 5, dtype=torch.bool)
    expected[2, :2, 3:] = True  # its 3x3 neighbourhood in its own frame, cut by the grid's edges
    assert torch.equal(moved, expected)
    # The conditioning scales the branch per channel: a zero gate (1 + gate = 0) turns it off.
    with torch.no_grad():
        mixing.gate.weight.zero_()
        mixing.gate.bias.fill_(-1.0)
    torch.testing.assert_close(mixing(changed, cond), changed)


def test_token_mixing_over_time_reaches_the_same_token_in_neighbouring_frames():
    """model.token_mixing_frames = 3: the shifted-slice mixing over time equals a depthwise convolution
    with a 3x1x1 kernel, zero-padded at the patch's first and last frame."""
    grid = (4, 3, 2)
    mixing = TokenMixing(6, 5, grid, frames=3)
    mixing.reset_parameters()
    a, cond = torch.randn(2, 24, 6, dtype=torch.float64), torch.randn(2, 1, 5, dtype=torch.float64)
    mixing.double()
    torch.testing.assert_close(mixing(a, cond), a)  # zero-initialised: the block starts as without it
    with torch.no_grad():
        mixing.time_weight.normal_()
    volume = rearrange(a, "x (f h w) d -> x d f h w", f=grid[0], h=grid[1], w=grid[2])
    kernel = mixing.time_weight.t().reshape(6, 1, 3, 1, 1)
    expected = F.conv3d(volume, kernel, padding=(1, 0, 0), groups=6)
    torch.testing.assert_close(mixing._mix_time(a), rearrange(expected, "x d f h w -> x (f h w) d"),
                               atol=1e-12, rtol=0)
    changed = a.clone()
    changed[0, 1 * 6 + 4] += 1.0  # token (f=1, h=2, w=0)
    moved = (mixing._mix_time(changed) - mixing._mix_time(a)).abs().sum(-1)[0].reshape(grid) > 0
    expected_moved = torch.zeros(grid, dtype=torch.bool)
    expected_moved[0:3, 2, 0] = True  # frames 0-2, the same place
    assert torch.equal(moved, expected_moved)


def test_time_mixing_from_a_level_leaves_the_levels_below_as_without_it():
    """model.token_mixing_time_from_level = 1: level 0 is the model without time taps, bit for bit,
    while the levels above use them; the taps of a block that sees level 0 only are frozen."""
    cfg = small_config(TIME_FROM_1, (1, 2, 3, 3))
    model = make_model(cfg)
    without = HPDM(small_config("deep+token_mixing+token_mixing_frames=3", (1, 2, 3, 3)).model).double()
    without.load_state_dict(model.state_dict())
    everywhere = copy.deepcopy(without)
    for block in without.blocks:
        torch.nn.init.zeros_(block.mixing.time_weight)
    inputs = make_inputs(cfg)
    out, out_without, out_everywhere = model(*inputs), without(*inputs), everywhere(*inputs)
    # Level 0 never reaches a time tap, and deep fusion only reads lower levels: the same operations.
    torch.testing.assert_close(out[:, 0], out_without[:, 0], atol=0, rtol=0)
    assert (out[:, 0] - out_everywhere[:, 0]).abs().max() > 1e-3
    for level in (1, 2):
        assert (out[:, level] - out_without[:, level]).abs().max() > 1e-3
    trainable = [block.mixing.time_weight.requires_grad for block in model.blocks]
    assert trainable == [False, True, True, True]
    assert all(block.mixing.time_weight.requires_grad for block in everywhere.blocks)


def test_time_mixing_from_beyond_the_top_level_mixes_no_level_over_time():
    """token_mixing_time_from_level >= num_levels (a base for a deeper pyramid): every tap unused and frozen."""
    cfg = small_config(TIME_FROM_1.replace("time_from_level=1", "time_from_level=3"))
    model = make_model(cfg)
    without = HPDM(small_config("deep+token_mixing+token_mixing_frames=3").model).double()
    without.load_state_dict(model.state_dict())
    for block in without.blocks:
        torch.nn.init.zeros_(block.mixing.time_weight)
    inputs = make_inputs(cfg)
    torch.testing.assert_close(model(*inputs), without(*inputs), atol=0, rtol=0)
    assert not any(block.mixing.time_weight.requires_grad for block in model.blocks)


def test_time_mixing_from_a_level_is_checked():
    with pytest.raises(BadInputError, match="must be >= 0, got -1"):
        small_config("deep+token_mixing+token_mixing_frames=3", token_mixing_time_from_level=-1)
    # tiny mixes over time from level 1; token_mixing_frames=1 alone turns that off, with nothing to complain of.
    cfg = preset("tiny")
    cfg.model.token_mixing_frames = 1
    assert all(block.mixing.time_weight is None for block in HPDM(cfg.validate().model).blocks)


def test_fusion_starts_as_identity():
    fusion = DeepFusion(8, use_coords=True, detach_context=False)
    fusion.reset_parameters()
    a = torch.randn(2, 8, 8)
    lower = [torch.randn(2, 8, 8)]  # the block inputs of level 0, one tensor per lower level
    grid = torch.rand(2, 1, 2, 2, 2, 3) * 2 - 1
    torch.testing.assert_close(fusion(a, lower, grid, torch.rand(2, 8, 3), (2, 2, 2)), a)


def top_level_gradient(cfg):
    model = make_model(cfg)
    x, noise_cond, offsets, labels = make_inputs(cfg)
    x.requires_grad_(True)
    model(x, noise_cond, offsets, labels)[:, -1].square().sum().backward()
    return x.grad


def test_top_level_loss_reaches_level_zero_through_deep_context():
    grad = top_level_gradient(small_config("deep"))
    assert grad[:, 0].abs().max() > 1e-6
    assert grad[:, 1].abs().max() > 1e-6


@pytest.mark.parametrize("setting", [dict(fusion="deep", detach_context=True), dict(fusion="none")])
def test_no_gradient_into_lower_levels_when_detached_or_unfused(setting):
    cfg = small_config(**setting)
    grad = top_level_gradient(cfg)
    assert grad[:, -1].abs().max() > 0
    assert torch.equal(grad[:, :-1], torch.zeros_like(grad[:, :-1]))


def test_context_grad_scale_scales_only_the_gradient_into_lower_levels():
    def run(scale):
        torch.manual_seed(0)
        cfg = small_config("deep", context_grad_scale=scale)
        model = make_model(cfg)
        x, noise_cond, offsets, labels = make_inputs(cfg)
        x.requires_grad_(True)
        out = model(x, noise_cond, offsets, labels)
        out[:, -1].square().sum().backward()
        return out.detach(), x.grad

    out_full, grad_full = run(1.0)
    out_tenth, grad_tenth = run(0.1)
    torch.testing.assert_close(out_tenth, out_full)  # the forward pass is the paper's
    torch.testing.assert_close(grad_tenth[:, -1], grad_full[:, -1])  # the level's own path is untouched
    # Level 2 reaches level 1 only across one context hop: scaled 0.1. Level 0 is reached across one
    # hop (0.1) and across two through level 1 (0.01), so its gradient shrinks, not exactly tenfold.
    torch.testing.assert_close(grad_tenth[:, 1], 0.1 * grad_full[:, 1])
    assert grad_full[:, 0].abs().max() > 1e-6 and grad_tenth[:, 0].abs().max() < 0.5 * grad_full[:, 0].abs().max()


@pytest.mark.parametrize("fusion", FUSIONS)
def test_use_coords_off_still_runs(fusion):
    cfg = small_config(fusion, use_coords=False)
    model = make_model(cfg)
    assert not hasattr(model, "coord_proj")
    inputs = make_inputs(cfg)
    assert model(*inputs).shape == inputs[0].shape


@pytest.mark.parametrize("fusion", FUSIONS)
def test_coarse_to_fine_only(fusion):
    cfg = small_config(fusion)
    model = make_model(cfg, torch.float32)
    x, noise_cond, offsets, labels = make_inputs(cfg, dtype=torch.float32)
    base = model(x, noise_cond, offsets, labels)
    for level in (1, 2):
        x2, nc2, off2 = x.clone(), noise_cond.clone(), offsets.clone()
        x2[:, level:] = torch.randn_like(x2[:, level:])
        nc2[:, level:] += 1.0
        if level == 2:
            off2[:, 2] = 2 * off2[:, 1] + torch.tensor([0, 8, 3])  # another nested position
        out = model(x2, nc2, off2, labels)
        assert torch.equal(out[:, :level], base[:, :level]), f"a change above level {level - 1} leaked down"
        assert not torch.equal(out[:, level], base[:, level])


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("levels_per_block", [(1, 2, 3, 3), (3, 3, 3, 3)])
def test_cached_forward_equals_uncached(fusion, levels_per_block):
    cfg = small_config(fusion, levels_per_block)
    model = make_model(cfg, torch.float32)
    x, noise_cond, offsets, labels = make_inputs(cfg, batch=3, dtype=torch.float32)
    with torch.no_grad():
        full = model(x, noise_cond, offsets, labels)
        for level in range(3):
            cache = model.encode_context(x[:, :level], noise_cond[:, :level], offsets[:, :level], labels)
            assert isinstance(cache, ContextCache) and cache.level == level
            top = model(x[:, level:level + 1], noise_cond[:, level:level + 1], offsets[:, :level + 1], labels,
                        context=cache)
            assert top.shape == (3, 1, *x.shape[2:])
            torch.testing.assert_close(top, full[:, level:level + 1], atol=1e-5, rtol=0)
            # Shorter chains (inference builds them level by level) agree with the full one.
            chain = model(x[:, :level + 1], noise_cond[:, :level + 1], offsets[:, :level + 1], labels)
            torch.testing.assert_close(chain, full[:, :level + 1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("fusion", ["deep", "shallow"])
def test_offloaded_cache_equals_device_cache(fusion):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = small_config(fusion)
    model = make_model(cfg, torch.float32).to(device)
    x, noise_cond, offsets, labels = (t.to(device) for t in make_inputs(cfg, dtype=torch.float32))
    with torch.no_grad():
        on_device = model.encode_context(x[:, :2], noise_cond[:, :2], offsets[:, :2], labels)
        offloaded = model.encode_context(x[:, :2], noise_cond[:, :2], offsets[:, :2], labels, offload=True)
        stored = [t for t in offloaded.acts + [offloaded.pixels] if t is not None]
        assert stored and all(t.device.type == "cpu" for t in stored)
        outs = [model(x[:, 2:], noise_cond[:, 2:], offsets, labels, context=c) for c in (on_device, offloaded)]
    assert outs[0].device.type == torch.device(device).type
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)


def select_rows(cache: ContextCache, rows) -> ContextCache:
    """The cache of a subset of the batch (as a tile batch of it would be)."""
    pick = lambda t: None if t is None else t[rows]  # noqa: E731
    return ContextCache(cache.level, [pick(t) for t in cache.acts], pick(cache.pixels), cache.offload)


def cache_nbytes(cache: ContextCache) -> int:
    tensors = [t for t in cache.acts + [cache.pixels] if t is not None]
    return sum(t.numel() * t.element_size() for t in tensors)


def test_cache_keeps_only_blocks_that_process_the_level_and_selects_rows():
    cfg = small_config("deep", (1, 2, 3, 3))
    model = make_model(cfg, torch.float32)
    x, noise_cond, offsets, labels = make_inputs(cfg, batch=4, dtype=torch.float32)
    with torch.no_grad():
        cache = model.encode_context(x[:, :2], noise_cond[:, :2], offsets[:, :2], labels)
        assert [t is None for t in cache.acts] == [True, True, False, False]
        assert cache.acts[2].shape == (4, 2, 8, 32) and cache_nbytes(cache) > 0
        rows = torch.tensor([3, 1])
        sub = model(x[rows, 2:], noise_cond[rows, 2:], offsets[rows], labels[rows], context=select_rows(cache, rows))
        full = model(x[:, 2:], noise_cond[:, 2:], offsets, labels, context=cache)
    torch.testing.assert_close(sub, full[rows], atol=1e-6, rtol=0)


def test_guidance_batch_doubling_works_with_a_cache():
    cfg = small_config("deep")
    model = make_model(cfg, torch.float32)
    x, noise_cond, offsets, labels = make_inputs(cfg, dtype=torch.float32)
    null = torch.full_like(labels, cfg.model.num_classes)
    double = lambda t: torch.cat([t, t])  # noqa: E731
    with torch.no_grad():
        cache = model.encode_context(double(x[:, :2]), double(noise_cond[:, :2]), double(offsets[:, :2]),
                                     torch.cat([labels, null]))
        out = model(double(x[:, 2:]), double(noise_cond[:, 2:]), double(offsets), torch.cat([labels, null]),
                    context=cache)
        cond = model(x, noise_cond, offsets, labels)[:, 2:]
        uncond = model(x, noise_cond, offsets, null)[:, 2:]
    torch.testing.assert_close(out, torch.cat([cond, uncond]), atol=1e-5, rtol=0)
    assert (cond - uncond).abs().max() > 1e-4  # the class token matters


def test_tiny_preset_builds_and_runs():
    cfg = preset("tiny")
    denoiser = build_denoiser(cfg)
    m = cfg.model
    x = torch.randn(1, m.num_levels, m.channels, *m.patch)
    offsets = sample_nested_offsets(1, denoiser.geometry)
    with torch.no_grad():
        out = denoiser(x, torch.full((1, m.num_levels), 1.0), offsets, torch.tensor([m.num_classes]))
    assert out.shape == x.shape and torch.isfinite(out).all()
