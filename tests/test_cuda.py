"""The CUDA paths: bf16 autocast, flash attention, memory-sized tile batches, NCCL under torchrun.

CI has no GPU, so these are skipped there; on a machine with one: `python -m pytest tests/test_cuda.py`.
Each compares the GPU path with a reference that CI does check (float32, the math attention kernel,
one process), with tolerances set by bf16's 8-bit mantissa.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from hpdm_core import checkpoint as ckpt
from hpdm_core.config import SampleConfig
from hpdm_core.diffusion import build_denoiser
from hpdm_core.precision import autocast
from hpdm_core.canvas import choose_tile_batch
from hpdm_core.sampling import generate
from hpdm_core.training import Trainer
from test_model import make_inputs, open_context_path, small_config
from test_training import tiny_config, write_smooth_videos

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


def cuda_denoiser(head_dim: int = 16):
    cfg = small_config("deep", head_dim=head_dim)
    torch.manual_seed(0)
    denoiser = build_denoiser(cfg).to(CUDA).eval()
    open_context_path(denoiser.model)
    return cfg, denoiser


def test_flash_attention_runs_forward_and_backward_in_bf16():
    """Under bf16 autocast every attention of the network is one flash kernel can take: forcing that
    kernel alone must work, and agree with float32 on the math kernel."""
    cfg, denoiser = cuda_denoiser()
    x, noise_cond, offsets, labels = (t.to(CUDA) for t in make_inputs(cfg, dtype=torch.float32))
    sigma = noise_cond.exp()
    with sdpa_kernel([SDPBackend.MATH]), torch.no_grad():
        reference = denoiser(x, sigma, offsets, labels)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), autocast(CUDA):
        out = denoiser(x, sigma, offsets, labels)
        out.float().square().mean().backward()
    assert out.dtype == torch.float32  # the sampler's steps stay float32 under autocast
    assert relative_error(out, reference) < 0.03
    grads = [p.grad for p in denoiser.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_bf16_training_tracks_float32_and_resumes_on_the_cpu(tmp_path):
    data = write_smooth_videos(tmp_path / "smooth.h5")
    runs = {}
    for bf16 in (False, True):
        cfg = tiny_config(data, f"train.bf16={str(bf16).lower()}", "train.steps=4")
        trainer = Trainer(cfg, tmp_path / f"bf16-{bf16}", device="cuda", tensorboard=False)
        trainer.fit()
        assert all(p.dtype == torch.float32 for p in trainer.raw_model.parameters())  # bf16 is compute only
        runs[bf16] = [json.loads(line)["loss"] for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(runs[True]) == 4
    for a, b in zip(runs[True], runs[False]):  # the same batches and noise: the same losses, to bf16's precision
        assert abs(a - b) < 0.05 * abs(b), (runs[True], runs[False])

    # A checkpoint written on the GPU loads on a machine without one and resumes there.
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "bf16-True"))
    assert all(v.device.type == "cpu" for v in state["model"].values())
    cfg = tiny_config(data, "train.bf16=true", "train.steps=5")
    resumed = Trainer(cfg, tmp_path / "bf16-True", device="cpu", tensorboard=False)
    assert resumed.resume() == 4 and resumed.fit() == 5


def test_sampling_on_cuda_agrees_with_itself_cached_and_with_float32():
    cfg, denoiser = cuda_denoiser()
    labels = torch.tensor([0, 3])
    options = SampleConfig(steps=4, overlap="fhw", guidance=1.5, tile_batch=4)
    runs = {name: generate(denoiser, labels, seed=2, options=opts).videos for name, opts in {
        "bf16": options,
        "bf16 uncached": replace(options, cache=False),
        "bf16 offloaded": replace(options, offload_cache=True),
        "bf16 auto tile batch": replace(options, tile_batch=0),
        "float32": replace(options, bf16=False),
    }.items()}
    assert all(v.device.type == "cpu" and torch.isfinite(v).all() for v in runs.values())
    for name in ("bf16 uncached", "bf16 offloaded", "bf16 auto tile batch"):
        assert relative_error(runs[name], runs["bf16"]) < 0.02, name
    assert relative_error(runs["bf16"], runs["float32"]) < 0.05
    assert not torch.allclose(runs["bf16"][0], runs["bf16"][1])
    assert choose_tile_batch(denoiser, replace(options, tile_batch=0), CUDA) > 4  # sized from free memory


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_torchrun_with_nccl_trains_like_one_process(tmp_path, fsdp):
    """`torchrun --nproc_per_node=1 -m hpdm_cli train` joins an NCCL group, wraps the model (DDP or
    FSDP2) and trains as the same command without torchrun does."""
    data = write_smooth_videos(tmp_path / "smooth.h5")
    common = ["train", "--data", str(data), "--preset", "tiny", "--steps", "3", "--batch-size", "4",
              "--device", "cuda", "--json"]
    for item in ("model.patch=2x4x4", "model.token=1x2x2", "model.interface_dim=16", "model.latent_dim=16",
                 "model.num_latents=4", "model.head_dim=8", "model.latent_layers=1", "model.num_blocks=3",
                 "model.levels_per_block=1,2,3", "model.fourier_features=2", "model.num_classes=3",
                 "train.log_every=1", "data.num_workers=0", "train.bf16=false"):
        common += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    runs = {"single": [sys.executable, "-m", "hpdm_cli", *common, "--run-dir", str(tmp_path / "single")],
            "torchrun": [*launcher, "-m", "hpdm_cli", *common, "--run-dir", str(tmp_path / "torchrun")]
                        + (["--fsdp"] if fsdp else [])}
    for name, command in runs.items():
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
    losses = {name: [json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
              for name in runs}
    assert len(losses["single"]) == 3
    torch.testing.assert_close(torch.tensor(losses["torchrun"]), torch.tensor(losses["single"]), rtol=1e-3, atol=1e-5)
    states = {name: ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / name)) for name in runs}
    for key, value in states["single"]["model"].items():
        torch.testing.assert_close(states["torchrun"]["model"][key], value, rtol=1e-3, atol=1e-4, msg=key)
