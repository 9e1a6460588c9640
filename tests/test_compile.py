"""train.compile / sample.compile: the compiled denoiser gives the eager results.

The tests compile with the "aot_eager" backend: the same graph capture of forward and backward as
inductor (what breaks when the network does something torch.compile cannot trace), run by the eager
kernels, so results match eager ones up to float32 rounding of the few ops AOT autograd decomposes:
compared at 1e-5 relative (a few dozen float32 roundings of 6e-8 each). Inductor's own kernels (fused,
other summation orders, their own exp/erf) take minutes of gcc on a CPU the first time; their results
are compared by benchmarks/train_speed.py --compile and benchmarks/sample_speed.py --compile.
"""

import pytest
import torch

from hpdm_core import compiling
from hpdm_core.compiling import CompiledDenoiser, cuda_graphs
from hpdm_core.config import SampleConfig, apply_overrides, preset
from hpdm_core.sampling import generate
from hpdm_core.training import Trainer


@pytest.fixture(autouse=True)
def _aot_eager(monkeypatch):
    monkeypatch.setattr(compiling, "BACKEND", "aot_eager")
    torch.compiler.reset()  # no graph compiled by an earlier test (or backend) is reused


TINY = ["model.patch=2x4x4", "model.token=1x2x2", "model.interface_dim=16", "model.latent_dim=16",
        "model.num_latents=4", "model.head_dim=8", "model.latent_layers=1", "model.num_blocks=2",
        "model.levels_per_block=2,3", "model.fourier_features=2", "model.num_classes=3",
        "train.batch_size=4", "train.warmup_steps=1", "train.steps=4", "train.ema_decay=0.9"]


def batch(cfg):
    from hpdm_core.pyramid import PatchGeometry, extract_hierarchy, sample_nested_offsets

    geometry = PatchGeometry.from_config(cfg.model)
    g = torch.Generator().manual_seed(0)
    clips = torch.rand(4, 3, *geometry.target, generator=g) * 2 - 1
    offsets = sample_nested_offsets(4, geometry, generator=g)
    return {"patches": extract_hierarchy(clips, offsets, geometry), "offsets": offsets,
            "labels": torch.tensor([0, 1, 2, 3])}


def test_compiled_training_steps_equal_eager_ones(tmp_path):
    runs = []
    for compiled in (False, True):
        cfg = apply_overrides(preset("tiny"), TINY + [f"train.compile={str(compiled).lower()}"]).validate()
        trainer = Trainer(cfg, tmp_path / str(compiled), device="cpu", tensorboard=False)
        assert (trainer.step_model is not trainer.model) == compiled
        results = [trainer.train_step(batch(cfg)) for _ in range(2)]
        runs.append((results, trainer.raw_model.state_dict()))
    (eager, eager_state), (comp, comp_state) = runs
    for a, b in zip(eager, comp):
        assert b.loss == pytest.approx(a.loss, rel=1e-5) and b.per_level == pytest.approx(a.per_level, rel=1e-5)
        assert b.grad_norm == pytest.approx(a.grad_norm, rel=1e-5)
    for key, value in eager_state.items():
        torch.testing.assert_close(comp_state[key], value, atol=1e-5, rtol=1e-5)


def test_compiled_sampling_equals_eager_sampling():
    """Levels 0 and 1 (cached context: the compiled forward takes a ContextCache), one shape each."""
    from hpdm_core.diffusion import build_denoiser

    cfg = apply_overrides(preset("tiny"), TINY).validate()
    torch.manual_seed(0)
    denoiser = build_denoiser(cfg).eval()
    options = SampleConfig(steps=4, overlap="none", s_churn=0.0, tile_batch=8)
    eager = generate(denoiser, torch.tensor([2]), seed=1, options=options, num_levels=2)
    compiled = generate(denoiser, torch.tensor([2]), seed=1, options=options.replace(compile=True), num_levels=2)
    assert compiled.tile_evaluations == eager.tile_evaluations
    torch.testing.assert_close(compiled.videos, eager.videos, atol=1e-5, rtol=0)


def test_cuda_graphs_only_on_one_gpu():
    assert cuda_graphs("cuda") and not cuda_graphs("cuda", world_size=8) and not cuda_graphs("cpu")
    wrapped = CompiledDenoiser(torch.nn.Linear(2, 2), "cpu")
    assert wrapped.in_features == 2 and not wrapped.graphs  # the denoiser's attributes pass through
