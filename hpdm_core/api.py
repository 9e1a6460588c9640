"""The public Python API: train, load, generate, save and evaluate from a notebook or a script.

    import hpdm_core as hpdm
    run = hpdm.train(hpdm.preset("tiny"), data="moving.h5", run_dir="runs/tiny")
    model = hpdm.load("runs/tiny")
    videos = hpdm.generate(model, classes=[0, 1, 2, 3])
    hpdm.save_videos(videos, "samples.mp4")

Each function does what its command does, with the same checks: `train` sets up the run folder as
`hpdm train` does (config.toml, the lock, the data check, init_from) and always continues from the
folder's newest checkpoint; `generate` starts from the run's own [sample] settings (guidance, overlap,
steps, ...) and encodes prompts with the run's text encoder; `evaluate` is `hpdm eval-fvd`. Nothing
returns None for "nothing to do": a finished run gives a `Run` that says so in `notes`. Errors
(hpdm_core.errors) name the arguments of these functions and the config's settings (section.key).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from hpdm_core import config as config_lib
from hpdm_core import distributed as dist_lib
from hpdm_core.checkpoint import CONFIG_NAME, load_for_inference
from hpdm_core.config import Config, SampleConfig, recorded_settings
from hpdm_core.distributed import as_device
from hpdm_core.errors import BadInputError, check_count
from hpdm_core.metrics.options import EvalOptions
from hpdm_core.sample_files import FORMATS
from hpdm_core.sampling import SampleResult

PathLike = str | os.PathLike
DEFAULT_NUM = 8  # videos when neither `num` nor several classes or prompts say how many (as `hpdm sample`)


def preset(name: str) -> Config:
    """A fresh copy of a preset's config (tiny, tiny-t2v, tiny-base, hpdm-s, hpdm-m, hpdm-l, hpdm-t2v), to
    change before `train`: e.g. `cfg = preset("tiny"); cfg.train.steps = 1000`."""
    return config_lib.preset(name)


# ----------------------------------------------------------------------------- training

@dataclass
class Run:
    """What `train` did: the run folder, its config (as saved in RUN/config.toml), and the steps it covered."""

    run_dir: Path
    config: Config
    start_step: int  # where this call began: 0 for a new run, the newest checkpoint's step on a resume
    step: int  # where it stopped: config.train.steps, or start_step when the run had already got there
    checkpoint: Path | None  # the newest checkpoint (None: nothing trained yet)
    num_parameters: int
    samples_seen: int
    notes: list[str] = field(default_factory=list)  # checkpoints passed over, "nothing to do", ...
    init_report: dict | None = None  # where each tensor came from, for a run started with init_from

    @property
    def resumed(self) -> bool:
        return self.start_step > 0

    def __repr__(self) -> str:  # the config and the report are long: what a notebook wants at a glance
        checkpoint = str(self.checkpoint) if self.checkpoint else None
        return (f"Run({str(self.run_dir)!r}, steps {self.start_step}->{self.step} of {self.config.train.steps}, "
                f"{self.num_parameters:,} parameters, checkpoint={checkpoint!r})")

    def metrics(self) -> list[dict[str, Any]]:
        """The logged steps of RUN/metrics.jsonl (loss per level, learning rate, label gap, ...)."""
        from hpdm_core.train_log import read_metrics

        path = self.run_dir / "metrics.jsonl"
        return read_metrics(path) if path.is_file() else []


def _requested(config: Config | str | None) -> Config | None:
    if config is None:
        return None
    if isinstance(config, str):
        return preset(config)
    if not isinstance(config, Config):
        raise BadInputError(f"config must be a Config (e.g. hpdm_core.preset('tiny')), a preset name or None, "
                            f"got {type(config).__name__}")
    return copy.deepcopy(config)  # the caller's object is left as it was


def _check_same_config(run_dir: Path, requested: Config) -> None:
    """A run with a checkpoint resumes under its own config: another one is refused (as setup_run does),
    saying how to resume from Python."""
    from hpdm_core.checkpoint import load_run_config

    saved = load_run_config(run_dir)
    candidate = copy.deepcopy(requested)  # where a run started from need not be repeated on a resume
    candidate.train.init_from, candidate.train.init_new_levels = saved.train.init_from, saved.train.init_new_levels
    if config_lib.config_conflicts(saved, candidate):
        raise BadInputError(f"{run_dir} already holds a run with a different config: "
                            f"{config_lib.describe_conflicts(saved, candidate)}. Resume it with config=None (its "
                            "config.toml) or the same config, or give a new run_dir")


def train(config: Config | str | None = None, *, run_dir: PathLike, data: PathLike | None = None,
          steps: int | None = None, images: PathLike | None = None, init_from: PathLike | None = None,
          device: str | torch.device = "auto", fsdp: bool = False,
          progress: Callable[[dict[str, Any]], None] | None = None, tensorboard: bool = True) -> Run:
    """Train (or go on training) the run in `run_dir`, exactly as `hpdm train` does.

    config: a Config (`preset(...)`, changed as you like) or a preset name for a new run; for an existing
      run None (its config.toml is used), or the same config (anything but runtime settings differing is
      refused, as on the command line).
    data: the dataset file (`hpdm prepare`); needed for a new run, may change on a resume (the same data
      moved: its fingerprint is checked).
    steps: the run's total steps (config.train.steps when None); a second call with more steps resumes
      from the newest checkpoint and trains on to the new total.
    images: an image file (`hpdm prepare images`) mixed into every step (config.train.image_batch_size rows).
    init_from: a run folder or checkpoint whose EMA weights start this NEW run (more levels, another patch).
    progress: called with each logged step's metrics (the dict written to RUN/metrics.jsonl).
    Under torchrun it trains with DDP (or FSDP2 with fsdp=True) like the command.
    """
    from hpdm_core.checkpoint import latest_checkpoint
    from hpdm_core.files import unlock_run_dir
    from hpdm_core.memory import check_fits, training_step_bytes
    from hpdm_core.training import Trainer, setup_run

    if steps is not None:
        check_count("steps", steps, 1)
    requested = _requested(config)
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise BadInputError(f"run_dir {run_dir} is a file, not a folder")
    has_run = (run_dir / CONFIG_NAME).is_file()
    if init_from is not None:
        if requested is None:
            raise BadInputError("init_from starts a new run: give its config too (e.g. the source's preset with "
                                "more levels)")
        if has_run and latest_checkpoint(run_dir) is not None:
            raise BadInputError(f"{run_dir} already holds a run with a checkpoint: leave out init_from to resume "
                                "it, or give a new run_dir for the fine-tune")
        requested.train.init_from = str(init_from)
    if requested is not None and has_run and latest_checkpoint(run_dir) is not None:
        _check_same_config(run_dir, requested)
    if requested is None and not has_run:
        raise BadInputError(f"{run_dir} holds no run yet: give a config, e.g. "
                            "train(hpdm_core.preset('tiny'), data='data.h5', run_dir=...)")
    if requested is not None and not has_run and data is None and not requested.data.path:
        raise BadInputError("a new run needs data: pass data='FILE.h5' (made by `hpdm prepare` or "
                            "hpdm_core.data.synthetic.make_synthetic)")
    if fsdp and not dist_lib.launched():
        raise BadInputError("fsdp=True shards the model over processes: launch with torchrun --nproc_per_node=N")
    if not dist_lib.launched():
        as_device(device)  # an unknown or missing device is refused naming the argument
    try:
        with dist_lib.process_group(str(device)) as (env, run_device):
            if requested is not None:  # a batch that cannot fit is refused before the run folder is touched
                requested.validate()
                check_fits(training_step_bytes(requested, env.world_size), run_device, "a training step of batch "
                           f"{requested.train.batch_size}", "lower train.batch_size or raise train.accumulation")
            cfg, _ = setup_run(run_dir, requested, data=data, steps=steps, images=images)
            trainer = Trainer(cfg, run_dir, device=run_device, rank=env.rank, world_size=env.world_size,
                              tensorboard=tensorboard, fsdp=fsdp)
            start = trainer.resume()  # the step the folder stopped at: a second call goes on from there
            notes = list(trainer.resume_notes)
            if start >= cfg.train.steps:
                notes.append(f"nothing to do: the run is at step {start} of {cfg.train.steps} (raise steps to "
                             "continue)")
            final = trainer.fit(on_log=progress if env.is_main else None)
    finally:
        unlock_run_dir(run_dir)  # taken by setup_run; the OS drops it anyway when the process ends
    return Run(run_dir=run_dir, config=cfg, start_step=start, step=final, checkpoint=trainer.last_checkpoint,
               num_parameters=trainer.num_parameters, samples_seen=trainer.samples_seen, notes=notes,
               init_report=trainer.init_report)


# ----------------------------------------------------------------------------- a trained model

@dataclass
class Model:
    """A run's denoiser in eval mode, with the config it was trained with (from its checkpoint)."""

    denoiser: torch.nn.Module
    config: Config
    run_dir: Path
    checkpoint: Path
    step: int
    ema: bool  # the EMA weights (the default) or the raw ones
    notes: list[str] = field(default_factory=list)  # checkpoints passed over for the newest usable one
    _encoders: dict = field(default_factory=dict, init=False, repr=False)

    def __repr__(self) -> str:  # not the whole network
        return (f"Model({str(self.run_dir)!r}, step {self.step}{', EMA' if self.ema else ''}, {self.conditioning}-"
                f"conditional, {'x'.join(map(str, self.config.model.target))} videos from "
                f"{self.config.model.num_levels} levels, on {self.device})")

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def conditioning(self) -> str:
        """"class" or "text" (model.conditioning)."""
        return self.config.model.conditioning

    @property
    def num_classes(self) -> int:
        return self.config.model.num_classes

    @property
    def sample_settings(self) -> SampleConfig:
        """The run's [sample] settings: what `generate` uses unless told otherwise (a copy)."""
        return copy.deepcopy(self.config.sample)

    @property
    def text_encoder_path(self) -> str:
        """The text encoder folder the run was trained with ("" for a class-conditional run)."""
        return self.config.data.text_encoder

    @functools.cached_property
    def class_names(self) -> list[str]:
        """The training set's class names when its file is at hand, else class_0, class_1, ..."""
        from hpdm_core.data.h5store import VideoStore

        names: list[str] = []
        if self.config.data.path and Path(self.config.data.path).is_file():
            try:
                store = VideoStore(self.config.data.path)
                names = store.class_names
                store.close()
            except Exception:  # the dataset file is optional for sampling
                names = []
        k = self.num_classes
        return names if len(names) >= k else [f"class_{i}" for i in range(k)]

    def text_encoder(self, path: PathLike | None = None):
        """The run's text encoder (text.encoder.TextEncoder), loaded once; `path` for a copy elsewhere."""
        from hpdm_core.prompts import run_text_encoder

        key = str(path or self.text_encoder_path)
        if key not in self._encoders:
            self._encoders[key] = run_text_encoder(self.config, path, self.device)
        return self._encoders[key]

    def encode_prompts(self, prompts: Sequence[str], text_encoder: PathLike | None = None):
        """The prompts as a TextCondition, through the run's encoder (its fingerprint checked)."""
        from hpdm_core.prompts import encode_prompts

        return encode_prompts(self.text_encoder(text_encoder), list(prompts), self.config.data.text_fingerprint)


def load(run_dir: PathLike, checkpoint: PathLike | None = None, ema: bool = True,
         device: str | torch.device = "auto") -> Model:
    """The newest usable checkpoint of `run_dir` (or `checkpoint`), EMA weights unless ema=False."""
    from hpdm_core.checkpoint import latest_checkpoint

    if checkpoint is None and (Path(run_dir) / CONFIG_NAME).is_file() and latest_checkpoint(run_dir) is None:
        raise BadInputError(f"{run_dir} holds no checkpoint yet: train it first (hpdm_core.train(..., "
                            f"run_dir={str(run_dir)!r}))")
    config, denoiser, info = load_for_inference(run_dir, checkpoint, use_ema=ema, device=as_device(device))
    return Model(denoiser=denoiser, config=config, run_dir=Path(run_dir), checkpoint=Path(info["path"]),
                 step=info["step"], ema=info["ema"], notes=list(info["notes"]))


# ----------------------------------------------------------------------------- sampling

@dataclass(repr=False)
class Samples(SampleResult):
    """A SampleResult that also records how it was made (written into h5 outputs by save_videos)."""

    seed: int = 0
    settings: SampleConfig | None = None  # the sampling settings used: the run's, with the overrides
    class_names: list[str] = field(default_factory=list)
    checkpoint_step: int = 0

    def __repr__(self) -> str:  # not the pixels
        what = f"prompts={self.prompts!r}" if self.prompts else f"labels={self.labels.tolist()}"
        how = f", guidance {self.settings.guidance:g}, {self.settings.steps} steps" if self.settings else ""
        return f"Samples(videos {list(self.videos.shape)} in [-1, 1], {what}, seed {self.seed}{how})"


_SAMPLE_KEYS = tuple(f.name for f in dataclasses.fields(SampleConfig))


def _class_indices(classes: int | str | Sequence[int | str] | None, model: Model) -> list[int]:
    """Class indices from indices or names of the model's classes."""
    if classes is None:
        return []
    if isinstance(classes, (int, str)):
        classes = [classes]
    out = []
    for c in classes:
        if isinstance(c, str):
            if c not in model.class_names:
                raise BadInputError(f"classes: {c!r} is not a class of this model; its classes are "
                                    f"{', '.join(model.class_names)}")
            c = model.class_names.index(c)
        if isinstance(c, bool) or not isinstance(c, int):
            raise BadInputError(f"classes are class indices or names, got {c!r}")
        out.append(c)
    return out


def generate(model: Model, classes: int | str | Sequence[int | str] | None = None,
             prompts: str | Sequence[str] | None = None, num: int | None = None, seed: int = 0, *,
             batch_size: int = 4, text_encoder: PathLike | None = None, keep_levels: bool = True,
             num_levels: int | None = None, progress: Callable[[int], None] | None = None,
             **sample_overrides: Any) -> Samples:
    """Videos from a loaded model (`load`), as `hpdm sample` makes them: `Samples.videos` [N, C, F, H, W] in [-1, 1].

    classes: for a class-conditional model, one class (index or name) for every video or one per video;
      none cycles through the classes.
    prompts: for a text-conditional model, one text for every video or one per video; encoded with the
      run's text encoder (or `text_encoder`, which must be the same encoder: its fingerprint is checked).
    num: how many videos; default one per class or prompt when several are given, else 8.
    seed: video i of a seed is the same whatever batch_size.
    sample_overrides: any [sample] setting (steps, guidance, guidance_levels, overlap, tile_blend, cache,
      tile_batch, s_churn, ...); the others keep the run's own values, e.g. the tiny preset's guidance 3 on
      level 0.
    """
    from hpdm_core.memory import check_fits, sampling_bytes
    from hpdm_core.prompts import resolve_prompts
    from hpdm_core.sampling import generate as sample_videos
    from hpdm_core.sampling import resolve_labels

    if not isinstance(model, Model):
        raise BadInputError(f"model must be a Model from hpdm_core.load(run_dir), got {type(model).__name__}")
    unknown = sorted(set(sample_overrides) - set(_SAMPLE_KEYS))
    if unknown:
        raise BadInputError(f"unknown sampling setting(s) {', '.join(unknown)}; the settings are "
                            f"{', '.join(_SAMPLE_KEYS)}")
    options = model.config.sample.replace(**sample_overrides).validate()
    class_list = _class_indices(classes, model)
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts or [])
    if class_list and prompt_list:
        raise BadInputError("give `classes` (a class-conditional model) or `prompts` (a text-conditional one), "
                            "not both")
    given = class_list or prompt_list
    num = (len(given) if len(given) > 1 else DEFAULT_NUM) if num is None else num
    check_count("num", num, 1)
    check_count("seed", seed, 0)
    check_count("batch_size", batch_size, 1)
    if model.conditioning == "text":
        if class_list or not prompt_list:
            raise BadInputError("this model is text-conditional (model.conditioning = \"text\"): give `prompts`")
        prompt_list = resolve_prompts(prompt_list, num)
        condition = model.encode_prompts(prompt_list, text_encoder)
    else:
        if prompt_list:
            raise BadInputError("this model is class-conditional (model.conditioning = \"class\"): give `classes`, "
                                "not `prompts`")
        condition = resolve_labels(class_list, num, model.num_classes)
    rows = min(batch_size, num)
    check_fits(sampling_bytes(model.denoiser.geometry.target, rows), model.device, f"sampling {rows} videos "
               f"together", "lower `batch_size`")
    result = sample_videos(model.denoiser, condition, seed=seed, options=options, batch_size=batch_size,
                           device=model.device, keep_levels=keep_levels, progress=progress, num_levels=num_levels)
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(SampleResult)}
    fields["prompts"] = prompt_list
    return Samples(**fields, seed=seed, settings=options, class_names=model.class_names,
                   checkpoint_step=model.step)


def save_videos(result: SampleResult, out: PathLike, fmt: str | None = None, *, fps: float = 8.0,
                save_levels: bool = False, overwrite: bool = False,
                class_names: Sequence[str] | None = None) -> list[Path]:
    """Write the videos as `hpdm sample --out` does; returns the files written, the main one first.

    fmt: mp4, gif, h5 or npz (default: from out's suffix, else mp4). mp4/gif: a grid and, for up to 16
    videos, one file per video; h5: the dataset layout, readable by `evaluate` and `hpdm eval-fvd`;
    npz: uint8 [N, F, H, W, 3] `videos` and `labels`. save_levels: also every lower level's canvases
    (generate(..., keep_levels=True)). An existing file is kept unless overwrite=True.
    """
    from hpdm_core.files import check_output, reporting_full_disk
    from hpdm_core.sample_files import output_files, save_samples

    out = Path(out)
    fmt = (fmt or out.suffix.lstrip(".") or "mp4").lower()
    if fmt not in FORMATS:
        raise BadInputError(f"fmt {fmt!r}: choose one of {', '.join(FORMATS)}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise BadInputError(f"fps must be a positive number, got {fps!r}")
    if save_levels and not result.levels:
        raise BadInputError("save_levels needs the level canvases: generate with keep_levels=True")
    for path in output_files(out, fmt, len(result.videos), len(result.levels), save_levels,
                             prompts=bool(result.prompts)):
        if path.exists() and not overwrite:
            raise BadInputError(f"{path} exists; pass overwrite=True to replace it")
        check_output(path, overwrite=True, what="out")
    attrs = {}
    if isinstance(result, Samples) and result.settings is not None:  # as `hpdm sample` records them
        s = result.settings
        attrs = {"seed": result.seed, **recorded_settings(result.settings), "checkpoint_step": result.checkpoint_step}
    names = list(class_names or getattr(result, "class_names", None) or []) or None
    with reporting_full_disk(out):  # a full disk: a message naming the folder; no partial file is left
        return save_samples(result, out, fmt, fps=float(fps), class_names=names, save_levels=save_levels,
                            attrs=attrs)


# ----------------------------------------------------------------------------- evaluation

def evaluate(real: PathLike, fake: PathLike | SampleResult, options: EvalOptions | None = None, *,
             progress: Callable[[str, int, int], None] | None = None, **changes: Any) -> dict[str, Any]:
    """FVD (and IS, classifier scores) of `fake` against the dataset file `real`, as `hpdm eval-fvd`.

    fake: generated videos (an .h5 from save_videos or `hpdm sample`, an .npz, a folder of mp4/gif), or
      the result of `generate` itself. options: an EvalOptions; `changes` set single fields of it, e.g.
      evaluate(real, fake, random_i3d_seed=0, num=64). Returns the JSON-ready result of eval-fvd:
      `fvd`, `comparable` (False with the reasons in `warnings` when it is not the published protocol), ...
    """
    from hpdm_core.metrics.fvd import evaluate as fvd_evaluate

    names = [f.name for f in dataclasses.fields(EvalOptions)]
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise BadInputError(f"unknown evaluation option(s) {', '.join(unknown)}; the options are {', '.join(names)}")
    options = dataclasses.replace(options or EvalOptions(), **changes).validate()  # before the videos are written
    with tempfile.TemporaryDirectory(prefix="hpdm-eval-") as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if isinstance(fake, SampleResult):  # videos in memory: through an npz, as eval-fvd reads them
            fake = save_videos(fake, Path(tmp) / "generated.npz")[0]
        result = fvd_evaluate(real, fake, options, progress=progress)
    for warning in caught:  # each reason the number is not comparable, pointing at the caller's line
        warnings.warn(warning.message, warning.category, stacklevel=2)
    assert result is not None  # only the non-main ranks of a distributed evaluation get None
    return result
