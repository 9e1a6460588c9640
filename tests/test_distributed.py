"""hpdm_core.distributed with 2 gloo processes on the CPU: sharding, reductions, DDP and FSDP equal one process.

Each multi-process test spawns 2 workers that join a gloo group the way torchrun would (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the environment), write their results with torch.save,
and the test compares them with the same computation done here in one process.
"""

from __future__ import annotations

import copy
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from helpers import gather_by_index
from hpdm_core import distributed as dist_lib
from hpdm_core.config import preset
from hpdm_core.metrics.clips import real_clips
from hpdm_core.metrics.frechet import FeatureStats
from hpdm_core.metrics.options import EvalOptions
from hpdm_core.diffusion import build_denoiser
from hpdm_core.optim import Lamb, decay_groups
from hpdm_core.pyramid import PatchGeometry, sample_nested_offsets

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn, args) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    env, device = dist_lib.init("cpu")
    try:
        fn(env, device, *args)
    finally:
        dist_lib.destroy()


def spawn(fn, *args, world: int = WORLD) -> None:
    mp.spawn(_worker, args=(world, free_port(), fn, args), nprocs=world, join=True)


def tiny_config(levels_per_block=(1, 2)):
    cfg = preset("tiny")
    m = cfg.model
    m.patch, m.token, m.num_levels = [2, 8, 8], [1, 4, 4], 2
    m.interface_dim, m.latent_dim, m.num_latents, m.latent_layers, m.head_dim = 16, 16, 4, 1, 8
    m.mlp_ratio, m.fourier_features, m.num_classes = 2.0, 2, 3
    m.num_blocks, m.levels_per_block = len(levels_per_block), list(levels_per_block)
    return cfg.validate()


def global_batch(cfg, batch: int, step: int):
    """Deterministic inputs of one step for the whole global batch."""
    g = torch.Generator().manual_seed(100 + step)
    m = cfg.model
    geometry = PatchGeometry.from_config(m)
    x = torch.randn(batch, m.num_levels, m.channels, *m.patch, generator=g)
    sigma = torch.exp(torch.randn(batch, m.num_levels, generator=g))
    offsets = sample_nested_offsets(batch, geometry, generator=g)
    labels = torch.randint(0, m.num_classes + 1, (batch,), generator=g)
    target = torch.randn(batch, m.num_levels, m.channels, *m.patch, generator=g)
    return x, sigma, offsets, labels, target


def train_steps(model, optimizer, cfg, batch: int, steps: range, rows: slice) -> None:
    """Mean-squared error on `rows` of each step's global batch; DDP/FSDP average the gradients."""
    for step in steps:
        x, sigma, offsets, labels, target = (t[rows] for t in global_batch(cfg, batch, step))
        optimizer.zero_grad(set_to_none=True)
        loss = (model(x, sigma, offsets, labels) - target).square().mean()
        loss.backward()
        optimizer.step()


def make_optimizer(model):
    return Lamb(decay_groups(model, 0.01), lr=1e-2, weight_decay=0.01)


def make_fsdp_optimizer(model):
    # AdamW: torch's own DTensor-aware optimizer. Lamb under FSDP is covered by the Trainer test.
    return torch.optim.AdamW(decay_groups(model, 0.01), lr=1e-2, weight_decay=0.01)


def fresh(cfg):
    torch.manual_seed(0)
    model = build_denoiser(cfg)
    return model, make_optimizer(model)


# ----------------------------------------------------------------------------- pure functions

@pytest.mark.parametrize("num,world", [(0, 2), (1, 2), (7, 3), (10, 2), (5, 8)])
def test_shards_partition_the_indices(num, world):
    parts = [dist_lib.shard(num, r, world) for r in range(world)]
    assert sorted(i for p in parts for i in p) == list(range(num))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert dist_lib.shard(7, 1, 3) == [2, 3]
    assert dist_lib.shard([5, 6, 7, 8], 1, 2) == [7, 8]


def test_single_process_fallbacks(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    env, device = dist_lib.init("cpu")
    assert env == dist_lib.DistEnv(0, 1, 0) and env.is_main and env.world_size == 1 and device.type == "cpu"
    assert dist_lib.world_size() == 1 and dist_lib.is_main() and dist_lib.shard(3) == [0, 1, 2]
    t = torch.arange(3, dtype=torch.float64)
    assert torch.equal(dist_lib.all_reduce_sum(t), t)
    assert gather_by_index({1: "a"}) == {1: "a"}
    model = torch.nn.Linear(2, 2)
    assert dist_lib.wrap_ddp(model, device) is model
    with dist_lib.process_group("cpu") as (env, device):  # what every command and a library user call
        assert env == dist_lib.DistEnv(0, 1, 0) and device.type == "cpu" and not dist_lib.is_initialized()


def test_bad_torchrun_environment_is_a_clear_error(monkeypatch):
    from hpdm_core.errors import BadInputError

    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(BadInputError, match="outside WORLD_SIZE"):
        dist_lib.read_env()


@pytest.mark.parametrize("time_from_level", [None, 1])
def test_unused_fusion_projection_is_frozen(time_from_level):
    """Block 0 sees level 0 only: its fusion projection can never run, so it takes no gradient slot;
    nor do its time taps when the token mixing reaches over time from level 1 on."""
    cfg = tiny_config((1, 2))
    if time_from_level is not None:
        cfg.model.token_mixing_frames, cfg.model.token_mixing_time_from_level = 3, time_from_level
    model = build_denoiser(cfg.validate())
    assert not any(p.requires_grad for p in model.model.fusions[0].parameters())
    assert all(p.requires_grad for p in model.model.fusions[1].parameters())
    x, sigma, offsets, labels, target = global_batch(cfg, 2, 0)
    (model(x, sigma, offsets, labels) - target).square().mean().backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


# ----------------------------------------------------------------------------- collectives

def _collectives(env, device, out_dir):
    rng = np.random.default_rng(env.rank)
    features = rng.normal(size=(5 + env.rank, 4))
    stats = dist_lib.merge_feature_stats(FeatureStats(4).update(features))
    mine = {i: f"sample-{i}" for i in dist_lib.shard(7)}
    gathered = gather_by_index(mine)
    value = dist_lib.broadcast_object({"from": env.rank})
    total = dist_lib.all_reduce_sum(torch.tensor([1.0 + env.rank, 1e-17], dtype=torch.float64))
    torch.save({"env": (env.rank, env.world_size, env.local_rank), "stats": stats.to_arrays(), "gathered": gathered,
                "broadcast": value, "total": total, "main": dist_lib.is_main()}, f"{out_dir}/rank{env.rank}.pt")


def test_collectives_merge_like_one_process(tmp_path):
    spawn(_collectives, str(tmp_path))
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    single = FeatureStats(4)
    for r in range(WORLD):
        single.update(np.random.default_rng(r).normal(size=(5 + r, 4)))
    for r, res in enumerate(results):
        assert res["env"] == (r, WORLD, r) and res["main"] == (r == 0)
        merged = FeatureStats.from_arrays(res["stats"])
        assert merged.count == single.count == 11
        np.testing.assert_allclose(merged.total, single.total, rtol=1e-12)
        np.testing.assert_allclose(merged.covariance(True), single.covariance(True), rtol=1e-12)
        assert res["broadcast"] == {"from": 0}
        assert res["total"].dtype == torch.float64 and res["total"][0].item() == 3.0
        assert res["total"][1].item() == 2e-17  # float64 kept: in float32 this would be 0 next to 3
    assert results[0]["gathered"] == {i: f"sample-{i}" for i in range(7)} and results[1]["gathered"] is None


# ----------------------------------------------------------------------------- DDP and FSDP training

BATCH, STEPS = 4, 3


def _ddp_train(env, device, out_dir):
    cfg = tiny_config()
    model, optimizer = fresh(cfg)
    wrapped = dist_lib.wrap_ddp(model, device)
    rows = slice(env.rank * BATCH // env.world_size, (env.rank + 1) * BATCH // env.world_size)
    train_steps(wrapped, optimizer, cfg, BATCH, range(STEPS), rows)
    torch.save(dist_lib.full_model_state(model), f"{out_dir}/ddp{env.rank}.pt")


def test_ddp_equals_one_process_with_the_global_batch(tmp_path):
    cfg = tiny_config()
    model, optimizer = fresh(cfg)
    train_steps(model, optimizer, cfg, BATCH, range(STEPS), slice(None))
    spawn(_ddp_train, str(tmp_path))
    for r in range(WORLD):
        state = torch.load(tmp_path / f"ddp{r}.pt", weights_only=True)
        for name, value in model.state_dict().items():
            torch.testing.assert_close(state[name], value, atol=1e-5, rtol=1e-5, msg=name)


def _fsdp_train(env, device, out_dir):
    cfg = tiny_config()
    model, _ = fresh(cfg)
    dist_lib.fully_shard_blocks(model.model, model.model.blocks)
    optimizer = make_fsdp_optimizer(model)
    rows = slice(env.rank * BATCH // env.world_size, (env.rank + 1) * BATCH // env.world_size)
    train_steps(model, optimizer, cfg, BATCH, range(STEPS - 1), rows)
    model_state, optim_state = dist_lib.full_model_state(model), dist_lib.full_optimizer_state(optimizer)
    if env.is_main:
        torch.save({"model": model_state, "optimizer": optim_state}, f"{out_dir}/fsdp.pt")
    dist_lib.barrier()
    # Resume from the gathered single file into freshly sharded modules, and take the last step.
    saved = torch.load(f"{out_dir}/fsdp.pt", weights_only=True)
    model, _ = fresh(tiny_config())
    dist_lib.fully_shard_blocks(model.model, model.model.blocks)
    optimizer = make_fsdp_optimizer(model)
    dist_lib.load_full_model_state(model, saved["model"])
    dist_lib.load_full_optimizer_state(optimizer, saved["optimizer"])
    train_steps(model, optimizer, cfg, BATCH, range(STEPS - 1, STEPS), rows)
    final = dist_lib.full_model_state(model)
    if env.is_main:
        torch.save(final, f"{out_dir}/fsdp_final.pt")


def test_fsdp_checkpoint_is_a_plain_file_and_resumes_exactly(tmp_path):
    cfg = tiny_config()
    model, _ = fresh(cfg)
    optimizer = make_fsdp_optimizer(model)
    train_steps(model, optimizer, cfg, BATCH, range(STEPS - 1), slice(None))
    at_save = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    train_steps(model, optimizer, cfg, BATCH, range(STEPS - 1, STEPS), slice(None))
    spawn(_fsdp_train, str(tmp_path))

    saved = torch.load(tmp_path / "fsdp.pt", weights_only=True)
    assert set(saved["model"]) == set(at_save[0])
    for name, value in at_save[0].items():
        assert type(saved["model"][name]) is torch.Tensor
        # Sharded gradients are float32 sums in another order (reduce-scatter); measured up to 4e-5
        # on weights of 0.4 after 2 steps with token mixing on. A sharding error moves a weight by
        # about lr = 1e-2 per step.
        torch.testing.assert_close(saved["model"][name], value, atol=1e-4, rtol=1e-4, msg=name)
    # Same layout as an unsharded optimizer: it loads into a plain one (resume with 1 process).
    plain_model, _ = fresh(cfg)
    plain_optimizer = make_fsdp_optimizer(plain_model)
    plain_model.load_state_dict(saved["model"])
    plain_optimizer.load_state_dict(saved["optimizer"])
    for index, values in at_save[1]["state"].items():
        torch.testing.assert_close(saved["optimizer"]["state"][index]["exp_avg"], values["exp_avg"], atol=1e-6, rtol=1e-5)
    final = torch.load(tmp_path / "fsdp_final.pt", weights_only=True)
    for name, value in model.state_dict().items():  # the same float32 reordering as above
        torch.testing.assert_close(final[name], value, atol=1e-4, rtol=1e-4, msg=name)


# ----------------------------------------------------------------------------- sampling and evaluation

SAMPLE_OPTIONS = dict(steps=3, overlap="hw", tile_batch=3)


def sample_denoiser():
    torch.manual_seed(1)
    return build_denoiser(tiny_config()).eval()


def write_real_store(path):
    from hpdm_core.data.h5store import VideoStoreWriter

    rng = np.random.default_rng(0)
    with VideoStoreWriter(path, 32, 32) as writer:
        for i, length in enumerate([12, 14, 10, 16, 11, 13]):
            writer.append(rng.integers(0, 256, (length, 32, 32, 3), dtype=np.uint8), label=i % 3)
        writer.finish(["a", "b", "c"], fps=8.0)
    return path


def small_i3d():
    """The seeded random I3D without its 224x224 resize, so 32x32 clips stay cheap."""
    from hpdm_core.metrics import fvd as fvd_module
    from hpdm_core.metrics.i3d import I3DFeatures, random_i3d

    fvd_module.random_i3d_detector = lambda seed, resize, device: I3DFeatures(random_i3d(seed), resize=None,
                                                                              name="random_i3d")
    return fvd_module


EVAL_ARGS = dict(random_i3d_seed=0, num=5, frames=9, batch_size=2, device="cpu")


def _sample_and_evaluate(env, device, out_dir):
    import warnings

    from hpdm_core.config import SampleConfig
    from hpdm_core.sampling import generate

    result = generate(sample_denoiser(), torch.tensor([0, 1, 2, 0, 1]), seed=3,
                      options=SampleConfig(**SAMPLE_OPTIONS), batch_size=2, keep_levels=True, distributed=True)
    assert (result is None) == (not env.is_main)
    fvd_module = small_i3d()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = fvd_module.evaluate(f"{out_dir}/real.h5", f"{out_dir}/fake.npz",
                                     EvalOptions(cache_dir=f"{out_dir}/cache", **EVAL_ARGS), distributed=True)
    assert (scores is None) == (not env.is_main)
    if env.is_main:
        torch.save({"videos": result.videos, "levels": result.levels, "evaluations": result.tile_evaluations,
                    "scores": scores}, f"{out_dir}/sharded.pt")


def test_sharded_sampling_and_evaluation_equal_one_process(tmp_path):
    import warnings

    from hpdm_core.metrics.frechet import load_stats
    from hpdm_core.config import SampleConfig
    from hpdm_core.sampling import generate

    write_real_store(tmp_path / "real.h5")
    np.savez(tmp_path / "fake.npz", np.random.default_rng(1).integers(0, 256, (5, 9, 32, 32, 3), dtype=np.uint8))
    spawn(_sample_and_evaluate, str(tmp_path))
    sharded = torch.load(tmp_path / "sharded.pt", weights_only=False)

    single = generate(sample_denoiser(), torch.tensor([0, 1, 2, 0, 1]), seed=3,
                      options=SampleConfig(**SAMPLE_OPTIONS), batch_size=2, keep_levels=True)
    # Per-sample seeds: the shards (samples 0-1 and 2-4) are the very videos one process makes, up to
    # float32 kernels run at other batch sizes (measured: 3e-5 in 13 of 15360 values; a wrong seed or
    # tile differs by O(1)).
    torch.testing.assert_close(sharded["videos"], single.videos, atol=1e-4, rtol=0)
    for a, b in zip(sharded["levels"], single.levels):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert sharded["evaluations"] == single.tile_evaluations

    fvd_module = small_i3d()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: the same float32 kernels, so only the merge differs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = fvd_module.evaluate(tmp_path / "real.h5", tmp_path / "fake.npz",
                                         EvalOptions(use_cache=False, **EVAL_ARGS))
        store = fvd_module.VideoStore(tmp_path / "real.h5")
        clips, _, _ = real_clips(store, 5, 9)
        direct = fvd_module.compute_feature_stats(clips, fvd_module.random_i3d_detector(0, None, "cpu"), batch_size=2)
    finally:
        torch.set_num_threads(threads)
    merged = sharded["scores"]
    assert merged["real_clips"] == scores["real_clips"] == 5 and merged["fake_clips"] == scores["fake_clips"] == 5
    # 5 clips, 400 features: a singular covariance, whose square root amplifies float64 summation order.
    assert merged["fvd"] == pytest.approx(scores["fvd"], rel=1e-7)
    # The cache rank 0 wrote holds the statistics of all real clips, as one process computes them.
    cached, = load_stats(__import__("pathlib").Path(merged["cache_file"]))
    assert cached.count == direct.count == 5
    np.testing.assert_allclose(cached.total, direct.total, rtol=1e-12)
    np.testing.assert_allclose(cached.outer, direct.outer, rtol=1e-12)
# ----------------------------------------------------------------------------- the Trainer under DDP / FSDP

TRAIN = ["model.patch=2x4x4", "model.token=1x2x2", "model.interface_dim=16", "model.latent_dim=16",
         "model.num_latents=4", "model.head_dim=8", "model.latent_layers=1", "model.num_blocks=3",
         "model.levels_per_block=1,2,3", "model.fourier_features=2", "model.num_classes=3",
         "train.batch_size=4", "train.warmup_steps=2", "train.steps=3", "train.log_every=1",
         "train.checkpoint_every=2", "train.ema_decay=0.9", "data.num_workers=0", "data.flip=true",
         # Time taps from level 1: block 0's are frozen, which DDP (find_unused_parameters off) must accept.
         "model.token_mixing_frames=3", "model.token_mixing_time_from_level=1"]


def train_config(data):
    from hpdm_core.config import apply_overrides

    cfg = apply_overrides(preset("tiny"), TRAIN)
    cfg.data.path = str(data)
    return cfg.validate()


def write_train_store(path):
    from hpdm_core.data.h5store import VideoStoreWriter

    rng = np.random.default_rng(0)
    with VideoStoreWriter(path, 16, 16) as writer:
        for i in range(5):
            writer.append(rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8), label=i % 3)
        writer.finish(["a", "b", "c"], fps=8.0)
    return path


def _trainers(env, device, out_dir):
    from hpdm_core.training import Trainer

    cfg = train_config(f"{out_dir}/data.h5")
    for name, fsdp in (("ddp", False), ("fsdp", True)):
        trainer = Trainer(cfg, f"{out_dir}/{name}", device=device, rank=env.rank, world_size=env.world_size,
                          tensorboard=False, fsdp=fsdp)
        assert trainer.fit(stop_at=2) == 2 and trainer.local_batch == 2
        assert (trainer.last_checkpoint is not None) == env.is_main  # rank 0 alone writes


def test_ddp_and_fsdp_training_equal_one_process_and_resume_with_one(tmp_path):
    from hpdm_core import checkpoint as ckpt
    from hpdm_core.training import Trainer

    data = write_train_store(tmp_path / "data.h5")
    spawn(_trainers, str(tmp_path))
    cfg = train_config(data)
    single = Trainer(cfg, tmp_path / "single", device="cpu", tensorboard=False)
    single.fit(stop_at=2)
    reference = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "single"))
    for name in ("ddp", "fsdp"):
        state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / name))
        assert state["step"] == 2 and state["samples_seen"] == 8
        for part in ("model", "ema"):
            for key, value in reference[part].items():
                torch.testing.assert_close(state[part][key], value, atol=1e-5, rtol=1e-5, msg=f"{name} {part} {key}")
        for index, values in reference["optimizer"]["state"].items():
            torch.testing.assert_close(state["optimizer"]["state"][index]["exp_avg"], values["exp_avg"],
                                       atol=1e-6, rtol=1e-4)
    # Only rank 0 logged: one line per step.
    assert [json.loads(line)["step"] for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()] == [1, 2]

    # The run saved by 2 processes resumes in 1 and continues as the single-process run does.
    single.fit()
    resumed = Trainer(cfg, tmp_path / "ddp", device="cpu", tensorboard=False)
    assert resumed.resume() == 2 and resumed.fit() == 3
    for key, value in single.raw_model.state_dict().items():
        torch.testing.assert_close(resumed.raw_model.state_dict()[key], value, atol=1e-5, rtol=1e-5, msg=key)
