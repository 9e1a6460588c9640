"""EDM preconditioning with v-prediction, per-level noise, label dropout, the hierarchy loss."""

import math

import pytest
import torch
import torch.nn as nn

from hpdm_core.config import DiffusionConfig
from hpdm_core.diffusion import (
    Denoiser,
    context_sigma,
    drop_labels,
    guided,
    hierarchy_loss,
    level_sigma_scale,
    preconditioning,
    sample_sigmas,
    sampling_sigmas,
)
from hpdm_core.pyramid import PatchGeometry


class Recorder(nn.Module):
    """Stands in for HPDM: remembers its inputs and returns a chosen output."""

    def __init__(self, output_fn=None):
        super().__init__()
        self.geometry = PatchGeometry((1, 1, 1), 2)
        self.output_fn, self.calls = output_fn, []

    def forward(self, x, noise_cond, offsets, labels, context=None):
        self.calls.append(dict(x=x, noise_cond=noise_cond, labels=labels, context=context))
        return self.output_fn(x, noise_cond) if self.output_fn else torch.zeros_like(x)

    def encode_context(self, x, noise_cond, offsets, labels, offload=False):
        return ("cache", x, noise_cond, offload)


def test_preconditioning_matches_edm_and_normalises_the_input():
    cfg = DiffusionConfig()
    sigma = torch.tensor([0.002, 0.1, 0.5, 3.0, 80.0])
    c_skip, c_out, c_in, c_noise = preconditioning(sigma, cfg.sigma_data)
    sd = cfg.sigma_data
    torch.testing.assert_close(c_skip, sd**2 / (sigma**2 + sd**2))
    torch.testing.assert_close(c_out, sigma * sd / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_in, 1 / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_noise, sigma.log() / 4)
    # Data of std sigma_data plus noise of std sigma reaches the network with unit variance.
    torch.testing.assert_close(c_in**2 * (sd**2 + sigma**2), torch.ones_like(sigma))


def test_ideal_network_output_reproduces_the_clean_signal():
    cfg = DiffusionConfig()
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(3, 2, 3, 2, 4, 4, generator=g) * 0.5
    sigma = torch.tensor([[0.01, 0.3], [1.0, 5.0], [20.0, 80.0]])
    noisy = clean + sigma[..., None, None, None, None] * torch.randn(clean.shape, generator=g)

    def ideal(x_in, noise_cond):
        # The model sees c_in * x_noisy and ln(sigma)/4; it answers with the v-target.
        s = (4 * noise_cond).exp()[..., None, None, None, None]
        c_skip, c_out, c_in, _ = preconditioning(s, cfg.sigma_data)
        torch.testing.assert_close(x_in, c_in * noisy)
        return (clean - c_skip * noisy) / c_out

    denoiser = Denoiser(Recorder(ideal), cfg, num_classes=4)
    torch.testing.assert_close(denoiser(noisy, sigma, None, torch.zeros(3, dtype=torch.long)), clean,
                               atol=1e-5, rtol=1e-5)


def test_unit_weight_v_loss_equals_edm_weighted_loss():
    cfg = DiffusionConfig()
    g = torch.Generator().manual_seed(1)
    sigma = torch.exp(torch.randn(64, generator=g))
    clean, noise, out = (torch.randn(64, generator=g) for _ in range(3))
    noisy = clean + sigma * noise
    c_skip, c_out, _, _ = preconditioning(sigma, cfg.sigma_data)
    v_loss = (out - (clean - c_skip * noisy) / c_out).square()
    weight = (sigma**2 + cfg.sigma_data**2) / (sigma * cfg.sigma_data) ** 2
    edm_loss = weight * (c_skip * noisy + c_out * out - clean).square()
    torch.testing.assert_close(v_loss, edm_loss, rtol=1e-4, atol=1e-5)


def test_per_level_sigmas_shift_by_the_level_input_scale():
    cfg = DiffusionConfig(p_mean=-1.2, p_std=1.2, level_input_scale=0.5)
    sigmas = sample_sigmas(40_000, 3, cfg, torch.Generator().manual_seed(0))
    assert sigmas.shape == (40_000, 3) and (sigmas > 0).all()
    log = sigmas.log()
    for level in range(3):
        assert abs(log[:, level].mean().item() - (cfg.p_mean + level * math.log(2))) < 0.03
        assert abs(log[:, level].std().item() - cfg.p_std) < 0.03
    assert abs(torch.corrcoef(log.T)[0, 1].item()) < 0.03  # drawn independently per level
    again = sample_sigmas(40_000, 3, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(sigmas, again)


def test_level_scales_schedules_and_context_sigma():
    cfg = DiffusionConfig(level_input_scale=0.5)
    assert level_sigma_scale(0, cfg) == 1.0 and level_sigma_scale(2, cfg) == 4.0
    assert context_sigma(2, cfg) == pytest.approx(cfg.sigma_min * 4)
    for level in range(3):
        sigmas = sampling_sigmas(16, level, cfg)
        assert sigmas.shape == (17,) and sigmas[-1] == 0
        assert (sigmas[:-1].diff() < 0).all()
        scale = level_sigma_scale(level, cfg)
        assert sigmas[0].item() == pytest.approx(cfg.sigma_max * scale, rel=1e-5)
        assert sigmas[-2].item() == pytest.approx(cfg.sigma_min * scale, rel=1e-5)
    # EDM's rho schedule: equal steps in sigma ** (1 / rho).
    steps = sampling_sigmas(8, 0, cfg)[:-1].double() ** (1 / cfg.rho)
    torch.testing.assert_close(steps.diff(), steps.diff()[:1].expand(7), rtol=1e-3, atol=0)
    one = sampling_sigmas(1, 1, cfg)
    assert one.tolist() == pytest.approx([cfg.sigma_max * 2, 0.0])


def test_label_dropout_rate_and_null_class():
    labels = torch.randint(0, 7, (50_000,), generator=torch.Generator().manual_seed(0))
    dropped = drop_labels(labels, 7, 0.1, torch.Generator().manual_seed(1))
    changed = dropped != labels
    assert abs(changed.float().mean().item() - 0.1) < 0.006
    assert (dropped[changed] == 7).all()
    assert torch.equal(drop_labels(labels, 7, 0.0), labels)


def test_hierarchy_loss_reports_each_level_and_drops_labels():
    cfg = DiffusionConfig(label_dropout=0.25)
    model = Recorder(lambda x, noise_cond: torch.zeros_like(x))
    denoiser = Denoiser(model, cfg, num_classes=3)
    patches = torch.randn(8000, 2, 1, 1, 1, 1, generator=torch.Generator().manual_seed(0)) * 0.5
    labels = torch.randint(0, 3, (8000,))
    loss, per_level = hierarchy_loss(denoiser, patches, None, labels, torch.Generator().manual_seed(1))
    assert per_level.shape == (2,) and not per_level.requires_grad
    torch.testing.assert_close(loss, per_level.mean())
    seen = model.calls[0]["labels"]
    assert abs((seen == 3).float().mean().item() - 0.25) < 0.02
    # Zero output: the loss is E[target^2] = E[((x - c_skip x_noisy) / c_out)^2] = 1 for data of std sigma_data.
    assert per_level.sub(1).abs().max() < 0.1
    # The network saw its inputs scaled by c_in: unit variance at every level.
    assert model.calls[0]["x"].std(dim=(0, 2, 3, 4, 5)).sub(1).abs().max() < 0.05
    # Same generator, same loss.
    again, _ = hierarchy_loss(denoiser, patches, None, labels, torch.Generator().manual_seed(1))
    assert torch.equal(loss, again)


def test_hierarchy_loss_trains_towards_the_v_target():
    cfg = DiffusionConfig(label_dropout=0.0)
    captured = {}

    def output(x, noise_cond):
        captured.update(x=x, noise_cond=noise_cond)
        return torch.full_like(x, 0.3)

    denoiser = Denoiser(Recorder(output), cfg, num_classes=3)
    patches = torch.randn(4, 2, 3, 1, 2, 2)
    loss, per_level = hierarchy_loss(denoiser, patches, None, torch.zeros(4, dtype=torch.long),
                                     torch.Generator().manual_seed(2))
    sigma = (4 * captured["noise_cond"]).exp()[..., None, None, None, None]
    c_skip, c_out, c_in, _ = preconditioning(sigma, cfg.sigma_data)
    noisy = captured["x"] / c_in
    target = (patches - c_skip * noisy) / c_out
    torch.testing.assert_close(per_level, (0.3 - target).square().mean(dim=(0, 2, 3, 4, 5)), rtol=1e-4, atol=1e-5)


def test_denoiser_passes_the_cache_through():
    cfg = DiffusionConfig()
    model = Recorder()
    denoiser = Denoiser(model, cfg, num_classes=3)
    x, sigma = torch.ones(2, 1, 3, 1, 1, 1), torch.full((2, 1), 2.0)
    cache = denoiser.encode_context(x, sigma, None, torch.zeros(2, dtype=torch.long), offload=True)
    assert cache[0] == "cache" and cache[3] is True
    torch.testing.assert_close(cache[1], x / math.sqrt(4 + 0.25))
    torch.testing.assert_close(cache[2], torch.full((2, 1), math.log(2.0) / 4))
    denoiser(x, sigma, None, torch.zeros(2, dtype=torch.long), context=cache)
    assert model.calls[-1]["context"] is cache


def test_guidance():
    cond, uncond = torch.tensor([2.0]), torch.tensor([1.0])
    assert guided(cond, uncond, 1.0).item() == 2.0
    assert guided(cond, uncond, 0.0).item() == 1.0
    assert guided(cond, uncond, 3.0).item() == 4.0
