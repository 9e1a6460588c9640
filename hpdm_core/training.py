"""Patch-hierarchy training: one `Trainer` that builds, steps, saves and resumes.

The network never sees a full-resolution video: each step reads target-resolution clips, cuts one
nested chain of patches per clip (pyramid.extract_chain) and trains every level jointly
(diffusion.hierarchy_loss). LAMB, linear warm-up + cosine decay, EMA, global-norm gradient clipping,
gradient accumulation, bf16 autocast on CUDA.

Determinism (docs/design.md, "Conventions"): every random draw of row j of the global batch of step s
comes from generators keyed by (seed, s, j): the data stream picks the clip, its start frame, flip
and patch offsets; the noise stream draws the per-level sigmas, the label dropout and the noise.
Rank k of W trains rows [k B/W, (k+1) B/W), so it draws exactly what one process draws for those
rows: DDP on W ranks takes the same steps as one process with the same global batch. Batches are
built by a map-style dataset indexed by the step, so DataLoader workers (any number) produce exactly
the batch the main process would, and a run resumed at step s continues exactly as if it had never
stopped, with any number of processes.

Distributed training (torchrun): DDP around the denoiser, or FSDP2 (`fsdp=True`) sharding each
RIN block; checkpoints hold gathered full tensors (hpdm_core.distributed), written by rank 0 only.

Elsewhere: composing a config from a preset, a file and --set (config.build_config), the data file's
checks and the step batches (data/batches.py), the metrics log (train_log.py).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from hpdm_core import checkpoint as ckpt
from hpdm_core import conditioning
from hpdm_core import distributed as dist_lib
from hpdm_core import config as config_lib
from hpdm_core import files
from hpdm_core import init_from as init_from_lib
from hpdm_core.compiling import compile_module
from hpdm_core.config import Config, config_conflicts
from hpdm_core.data.batches import StepBatches, check_data, check_images, open_clips, open_images
from hpdm_core.data.h5store import VideoStore, fingerprint_matches
from hpdm_core.diffusion import build_denoiser, hierarchy_loss
from hpdm_core.errors import BadInputError, HPDMError, TrainingDivergedError
from hpdm_core.learning import ProbeBatch, UpdateSizes, label_gap, make_probe_batch
from hpdm_core.optim import EMA, Lamb, WarmupCosine, decay_groups
from hpdm_core.precision import autocast
from hpdm_core.pyramid import PatchGeometry
from hpdm_core.seeding import NOISE_STREAM, PROBE_STREAM, derive_seed, generator
from hpdm_core.train_log import MetricsLog

PROBE_ROWS = 32  # real chains in the fixed label-gap batch


# ----------------------------------------------------------------------------- run folder

def setup_run(run_dir: str | Path, config: Config | None, data: str | Path | None = None,
              steps: int | None = None, images: str | Path | None = None) -> tuple[Config, bool]:
    """Create or reopen a run folder; returns (config, resumed).

    A new run saves `config` as RUN/config.toml. An existing one uses its saved config (`config` None: as
    it is); a `config` that differs from it on anything but runtime settings is refused. `steps` (the
    run's total), `data` and `images` (data.image_path) may change on resume.

    A new run with train.init_from (`hpdm train --init-from`) records the source's checkpoint file there
    and is checked against it before anything is written; a run folder that already has a checkpoint
    refuses train.init_from (its weights come from that checkpoint).

    Errors name these arguments and the config's settings in backticks (`data`, `train.init_from`);
    `hpdm train` says its flags instead.

    Under torchrun every rank calls it: rank 0 alone reads and writes the folder (and holds its lock),
    the others receive its outcome, or its error.
    """
    outcome = None
    if dist_lib.is_main():
        try:
            outcome = _setup_run(run_dir, config, data, steps, images)
        except HPDMError as err:
            outcome = err
    outcome = dist_lib.broadcast_object(outcome)
    if isinstance(outcome, HPDMError):
        raise outcome
    return outcome


def _setup_run(run_dir, requested, data, steps, images=None) -> tuple[Config, bool]:
    run_dir = files.check_folder(run_dir)
    if steps is not None and steps < 1:
        raise BadInputError("`steps` must be at least 1 (it is the run's total step count)")
    if run_dir.exists():  # before reading it: another process may be writing it
        files.lock_run_dir(run_dir)
    config_path = run_dir / ckpt.CONFIG_NAME
    # A folder without a checkpoint has trained nothing yet: a new request simply replaces its config.
    resumed = config_path.is_file() and (requested is None or ckpt.latest_checkpoint(run_dir) is not None)
    if resumed:
        cfg = ckpt.load_run_config(run_dir)
        if requested is not None and requested.train.init_from:
            raise BadInputError(f"{run_dir} already holds a run with a checkpoint, whose weights it resumes from: "
                                "drop `train.init_from` to resume it, or start the fine-tune in a new `run_dir`")
        if requested is not None:
            requested = copy.deepcopy(requested)  # a resume need not repeat where the run started from
            requested.train.init_from, requested.train.init_new_levels = cfg.train.init_from, cfg.train.init_new_levels
            if config_conflicts(cfg, requested):
                raise BadInputError(f"{run_dir} already holds a run with a different config: "
                                    f"{config_lib.describe_conflicts(cfg, requested)}. "
                                    "Resume with the same `config` (or none), or use a new `run_dir`")
    else:
        if requested is None:
            raise BadInputError(f"{run_dir} holds no run yet: start one with `config` (a preset or a file)")
        cfg = copy.deepcopy(requested)
        cfg.data.fingerprint = cfg.data.image_fingerprint = ""
        if cfg.train.init_from:  # refuse an incompatible source before the folder is written
            source = init_from_lib.load_source(cfg.train.init_from)
            init_from_lib.check_compatible(source.cfg, cfg, source.path)
            cfg.train.init_from = str(source.path)
    if data is not None:
        cfg.data.path = str(data)
    if images is not None:
        cfg.data.image_path = str(images)
    if steps is not None:
        cfg.train.steps = int(steps)
    if not cfg.data.path:
        raise BadInputError("no dataset: give `data`, a file made by `hpdm prepare`")
    cfg.validate()
    config_lib.validate_images(cfg)
    fingerprint = check_data(cfg)
    # A run folder from before content fingerprints holds the structural one: accepted, then upgraded.
    if cfg.data.fingerprint and not fingerprint_matches(cfg.data.fingerprint, VideoStore(cfg.data.path),
                                                        current=fingerprint):
        raise BadInputError(f"{cfg.data.path} is not the data {run_dir} was trained on (its frames, videos, labels "
                            "or names differ); give the original file as `data` (it may be moved or renamed), or "
                            "start a new `run_dir`")
    cfg.data.fingerprint = fingerprint
    if cfg.model.conditioning == "text":
        _record_text_encoder(cfg, run_dir)
    if cfg.data.image_path:
        image_fingerprint = check_images(cfg)
        if cfg.data.image_fingerprint and image_fingerprint != cfg.data.image_fingerprint:
            raise BadInputError(f"{cfg.data.image_path} is not the image file {run_dir} was trained with; pass the "
                                "original file as `images`, or start a new `run_dir`")
        cfg.data.image_fingerprint = image_fingerprint
    files.lock_run_dir(run_dir)  # creates the folder; only now, when everything checked out
    config_lib.save(cfg, config_path)
    return cfg, resumed


def _record_text_encoder(cfg: Config, run_dir: Path) -> None:
    """Record which encoder made the file's text embeddings: sampling must encode prompts with the same one."""
    from hpdm_core.data.batches import check_text

    info = check_text(cfg)
    if cfg.data.text_fingerprint and info["fingerprint"] != cfg.data.text_fingerprint:
        raise BadInputError(f"the text embeddings in {cfg.data.path} were made by another text encoder than the one "
                            f"{run_dir} was trained with (fingerprint {info['fingerprint']}, the run's "
                            f"{cfg.data.text_fingerprint}); encode the captions with the run's encoder "
                            f"({cfg.data.text_encoder or 'see its config.toml'}) or start a new `run_dir`")
    cfg.data.text_fingerprint = str(info["fingerprint"])
    cfg.data.text_encoder = str(info.get("encoder_path") or cfg.data.text_encoder or info.get("encoder", ""))
    cfg.data.text_max_tokens = int(info["max_tokens"])


# ----------------------------------------------------------------------------- trainer

@dataclass
class StepResult:
    loss: float
    per_level: list[float]
    grad_norm: float
    lr: float
    updates: dict[str, float] = field(default_factory=dict)
    kinds: dict[str, float] = field(default_factory=dict)  # loss_videos, loss_images (mixed runs)


class Trainer:
    def __init__(self, cfg: Config, run_dir: str | Path, device: str | torch.device = "auto", rank: int = 0,
                 world_size: int = 1, tensorboard: bool = True, fsdp: bool = False):
        cfg.validate()
        config_lib.validate_images(cfg)
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.device = dist_lib.resolve_device(device) if isinstance(device, str) else device
        self.rank, self.world_size, self.fsdp = rank, world_size, fsdp
        if world_size > 1 and dist_lib.world_size() != world_size:
            raise BadInputError(f"world_size {world_size} needs a process group of that size: launch with torchrun")
        self.tensorboard = tensorboard
        t = cfg.train
        if t.batch_size % (world_size * t.accumulation):
            raise BadInputError(f"train.batch_size {t.batch_size} must be a multiple of world size x "
                                f"train.accumulation = {world_size * t.accumulation}")
        self.local_batch = t.batch_size // world_size
        if t.image_batch_size % (world_size * t.accumulation):
            raise BadInputError(f"train.image_batch_size {t.image_batch_size} must be a multiple of world size x "
                                f"train.accumulation = {world_size * t.accumulation}")
        self.local_images = t.image_batch_size // world_size
        self.geometry = PatchGeometry.from_config(cfg.model)

        torch.manual_seed(derive_seed(t.seed, 0, -1))  # same initial weights on every rank
        self.raw_model = build_denoiser(cfg)
        # A new run with train.init_from starts from that checkpoint's EMA weights (every rank alike);
        # a resumed one takes its weights from its own checkpoint.
        self.init_report = None
        if t.init_from and ckpt.latest_checkpoint(self.run_dir) is None:
            self.init_report = init_from_lib.initialise(self.raw_model, cfg)
            if rank == 0:
                init_from_lib.write_report(self.run_dir, self.init_report)
        self.raw_model.to(self.device)
        self.ema = EMA(self.raw_model, t.ema_decay)  # before wrapping: a plain copy
        self.model = self.wrap_model(self.raw_model)
        # What the loss calls: the (wrapped) denoiser, compiled when train.compile (hpdm_core/compiling.py)
        self.step_model = compile_module(self.model, self.device, world_size) if t.compile else self.model
        groups = decay_groups(self.raw_model, t.weight_decay, adapt_all=t.trust_ratio == "all")
        self.optimizer = Lamb(groups, lr=t.lr, betas=tuple(t.betas),
                              weight_decay=t.weight_decay)
        self.schedule = WarmupCosine(self.optimizer, t.lr, t.warmup_steps, t.steps)
        self.step, self.samples_seen = 0, 0
        self.last_checkpoint: Path | None = None
        self.resume_notes: list[str] = []
        self.clips = self.images = None  # opened lazily: building a Trainer for a checkpoint needs no data file
        self._probe: ProbeBatch | None | bool = False  # False: not drawn yet; None: the data has no labels

    # -- distributed training
    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The denoiser that training calls: plain, behind DDP, or FSDP-sharded (in place, so its
        state-dict keys stay those of the plain denoiser)."""
        if self.fsdp:
            # Block by block; the EMA copy is sharded alike so its update stays shard-local.
            dist_lib.fully_shard_blocks(model, model.model.blocks)
            dist_lib.fully_shard_blocks(self.ema.model, self.ema.model.model.blocks)
            return model
        if self.world_size > 1:
            return dist_lib.wrap_ddp(model, self.device)
        return model

    def accumulation_context(self, last_micro_batch: bool):
        """Gradients are all-reduced once per step, after the last micro-batch."""
        if self.fsdp:
            self.raw_model.set_requires_gradient_sync(last_micro_batch)
        elif self.model is not self.raw_model and not last_micro_batch:
            return self.model.no_sync()
        return contextlib.nullcontext()

    @property
    def rows(self) -> range:
        """This rank's video rows of the global batch."""
        return range(self.rank * self.local_batch, (self.rank + 1) * self.local_batch)

    @property
    def image_rows(self) -> range:
        """This rank's still-image rows: the global batch numbers them after its train.batch_size video
        rows, so each keeps its (seed, step, row) draws whatever the number of ranks."""
        first = self.cfg.train.batch_size + self.rank * self.local_images
        return range(first, first + self.local_images)

    # -- sizes
    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.raw_model.parameters())

    # -- state
    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        # Full tensors on the CPU, also under FSDP (a collective there: every rank calls state_dict).
        return {"config": self.cfg.to_dict(), "model": dist_lib.full_model_state(self.raw_model),
                "ema": dist_lib.full_model_state(self.ema.model),
                "optimizer": dist_lib.full_optimizer_state(self.optimizer), "scheduler": self.schedule.state_dict(),
                "step": self.step, "samples_seen": self.samples_seen, "ema_updates": self.ema.num_updates,
                "rng": rng}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dist_lib.load_full_model_state(self.raw_model, state["model"])
        dist_lib.load_full_model_state(self.ema.model, state["ema"])
        self.ema.num_updates = int(state.get("ema_updates", state["step"]))
        dist_lib.load_full_optimizer_state(self.optimizer, state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        self.step, self.samples_seen = int(state["step"]), int(state["samples_seen"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu())

    def weights_finite(self) -> bool:
        """Every raw and EMA weight is finite (each rank checks its shards; all ranks get one answer)."""
        tensors = [*self.raw_model.parameters(), *self.ema.model.parameters()]
        ok = all(bool(torch.isfinite(t.to_local() if hasattr(t, "to_local") else t).all()) for t in tensors)
        if self.world_size > 1:
            ok = bool(dist_lib.all_reduce_sum(torch.tensor([0.0 if ok else 1.0])).item() == 0)
        return ok

    def save(self) -> Path:
        """Rank 0 writes the checkpoint (FSDP: every rank helps gather it); the others wait for the file.

        Only finite weights are saved, so the newest checkpoint is always one worth resuming from."""
        if not self.weights_finite():
            kept = f"the last good checkpoint {self.last_checkpoint} is kept" if self.last_checkpoint else \
                "no checkpoint had been written yet"
            raise TrainingDivergedError(f"training diverged: the weights are not finite after step {self.step}; "
                                        f"stopped without saving, {kept}. Lower train.lr, raise train.warmup_steps "
                                        "or check the data")
        state = self.state_dict() if self.fsdp or self.rank == 0 else None
        if self.rank == 0:
            self.last_checkpoint = ckpt.save_checkpoint(self.run_dir, state, self.cfg.train.keep_last)
        dist_lib.barrier()
        return self.last_checkpoint

    def resume(self) -> int:
        """Load the run folder's newest usable checkpoint, if any (`resume_notes` says which were passed
        over); returns the step training continues from."""
        found = ckpt.load_latest(self.run_dir, map_location=self.device)
        if found is not None:
            path, state, self.resume_notes = found
            if config_conflicts(config_lib.from_dict(state["config"]), self.cfg):
                raise BadInputError(f"{path} was written with a different config than {self.run_dir}/config.toml; "
                                    "restore that config.toml or start a new `run_dir`")
            self.load_state_dict(state)
            self.last_checkpoint = path
        return self.step

    # -- data
    def open_data(self):
        if self.clips is None:
            self.clips = open_clips(self.cfg)
        return self.clips

    def open_image_data(self):
        if self.images is None and self.cfg.train.image_batch_size:
            self.images = open_images(self.cfg)
        return self.images

    def batches(self, start: int, end: int):
        self.open_data()
        t = self.cfg.train
        steps = StepBatches(self.clips, self.geometry, self.rows, t.seed, end, null_class=self.cfg.model.num_classes,
                            text=self.text_embeddings(), images=self.open_image_data(), image_rows=self.image_rows,
                            image_text=self.text_embeddings(self.cfg.data.image_path) if self.image_rows else None)
        workers = self.cfg.data.num_workers
        return DataLoader(steps, batch_size=None, sampler=range(start, end), num_workers=workers,
                          pin_memory=self.device.type == "cuda", prefetch_factor=2 if workers else None,
                          persistent_workers=False)

    def text_embeddings(self, path: str | None = None):
        """The text embeddings of the data file (or of `path`) for a text-conditional run (None for classes)."""
        if self.cfg.model.conditioning != "text":
            return None
        from hpdm_core.text.store import TextEmbeddings

        return TextEmbeddings(path or self.cfg.data.path)

    # -- what the run is learning
    def probe_batch(self) -> ProbeBatch | None:
        """Fixed real chains for the label gap, the same at every probe and on every rank (None: no labels)."""
        if self._probe is False:
            steps = StepBatches(self.open_data(), self.geometry, range(PROBE_ROWS), derive_seed(self.cfg.train.seed,
                                PROBE_STREAM), 1, null_class=self.cfg.model.num_classes, text=self.text_embeddings())
            probe = make_probe_batch(steps[0], self.cfg.model.num_classes,
                                     generator(self.cfg.train.seed, PROBE_STREAM))
            self._probe = probe.to(self.device) if probe is not None else None
        return self._probe

    def probe(self) -> dict[str, float]:
        """The EMA model's label gap at fixed sigmas (learning.label_gap); every rank computes it (FSDP)."""
        probe = self.probe_batch()
        if probe is None:
            return {}
        with self.autocast():
            return label_gap(self.ema.model, probe)

    # -- one optimisation step
    def autocast(self):
        return autocast(self.device, self.cfg.train.bf16)

    def compute_loss(self, patches, offsets, labels, noise: list[torch.Generator], per_row: bool = False):
        """(loss, per-level losses); with per_row also the per-row, per-level losses [B, n]."""
        return hierarchy_loss(self.step_model, patches, offsets, labels, noise, per_row=per_row)

    def train_step(self, batch: dict[str, torch.Tensor], measure_updates: bool = False) -> StepResult:
        """One optimizer step; with measure_updates, StepResult.updates holds ||delta w|| / ||w|| per group."""
        t = self.cfg.train
        lr = self.schedule.apply()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        rows = [*self.rows, *self.image_rows]  # the batch's rows: videos, then still images
        noise = [generator(t.seed, self.step, row, NOISE_STREAM, device=self.device) for row in rows]
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        mixed = "still" in batch
        micro = len(rows) // t.accumulation
        loss_sum, level_sum = 0.0, 0.0
        kind_sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # video sum, count, image sum, count
        for i in range(t.accumulation):
            part = {k: v[i * micro:(i + 1) * micro] for k, v in batch.items()}
            with self.accumulation_context(i == t.accumulation - 1), self.autocast():
                args = (part["patches"], part["offsets"], conditioning.from_batch(part), noise[i * micro:(i + 1) * micro])
                if mixed:
                    loss, per_level, per_row = self.compute_loss(*args, per_row=True)
                else:
                    loss, per_level = self.compute_loss(*args)
            # Equal micro-batches: the mean of their means is the full batch's mean loss.
            (loss / t.accumulation).backward()
            loss_sum = loss_sum + loss.detach().float() / t.accumulation
            level_sum = level_sum + per_level.detach().float() / t.accumulation
            if mixed:
                row_loss, still = per_row.double().mean(1), part["still"]
                kind_sums += torch.stack([row_loss[~still].sum(), (~still).sum().double(), row_loss[still].sum(),
                                          still.sum().double()])
        if self.world_size > 1:  # the global batch's loss (equal shards: the mean of the ranks' means)
            both = dist_lib.all_reduce_mean(torch.cat([torch.as_tensor(loss_sum).reshape(1), level_sum]).double())
            loss_sum, level_sum = both[0], both[1:]
            if mixed:
                kind_sums = dist_lib.all_reduce_sum(kind_sums)
        kinds = {}
        if mixed:  # the loss of the video rows and of the image rows apart (metrics.jsonl)
            sums = kind_sums.tolist()
            kinds = {"loss_videos": sums[0] / max(sums[1], 1), "loss_images": sums[2] / max(sums[3], 1)}
        loss_value = float(loss_sum)
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.raw_model.parameters() if p.requires_grad],
                                                   t.grad_clip if t.grad_clip > 0 else math.inf)
        grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            kept = f"the last good checkpoint {self.last_checkpoint} is kept" if self.last_checkpoint else \
                "no checkpoint had been written yet"
            raise TrainingDivergedError(
                f"training diverged at step {self.step + 1}: loss {loss_value}, gradient norm {grad_norm}; "
                f"stopped without saving, {kept}. Lower train.lr, raise train.warmup_steps or check the data")
        sizes = UpdateSizes(self.optimizer, self.raw_model) if measure_updates else None
        self.optimizer.step()
        self.ema.update(self.raw_model)
        self.schedule.advance()
        self.step += 1
        self.samples_seen += t.batch_size
        return StepResult(loss_value, [float(v) for v in level_sum], grad_norm, lr,
                          sizes.report() if sizes is not None else {}, kinds)

    # -- the loop
    def fit(self, stop_at: int | None = None, on_log: Callable[[dict[str, Any]], None] | None = None) -> int:
        """Train from the current step to train.steps (or stop_at, if earlier); returns the final step.

        Logs every train.log_every steps, checkpoints every train.checkpoint_every steps and at the end.
        """
        t = self.cfg.train
        end = t.steps if stop_at is None else min(stop_at, t.steps)
        if self.step >= end:
            return self.step
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        log = MetricsLog(self.run_dir, self.step, self.tensorboard) if self.rank == 0 else None
        last_time, last_step = time.perf_counter(), self.step
        try:
            for batch in self.batches(self.step, end):
                done = self.step + 1
                probing = t.probe_every > 0 and (done % t.probe_every == 0 or done == end)
                logging = probing or done % t.log_every == 0 or done == end
                result = self.train_step(batch, measure_updates=logging)
                if logging:
                    now = time.perf_counter()
                    steps_per_s = (self.step - last_step) / max(now - last_time, 1e-9)
                    last_time, last_step = now, self.step
                    metrics = {"step": self.step, "loss": result.loss,
                               **{f"loss_level_{i}": v for i, v in enumerate(result.per_level)}, **result.kinds,
                               "lr": result.lr, "grad_norm": result.grad_norm, "steps_per_s": steps_per_s,
                               "videos_per_s": steps_per_s * t.batch_size, "samples_seen": self.samples_seen,
                               **result.updates}
                    if probing:
                        metrics.update(self.probe())
                        last_time = time.perf_counter()  # the probe is not training time
                    if log is not None:
                        log.write(metrics)
                    if on_log is not None:
                        on_log(metrics)
                if self.step % t.checkpoint_every == 0 or self.step == end:
                    self.save()
        finally:
            if log is not None:
                log.close()
        return self.step
