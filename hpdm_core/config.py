"""Configuration: dataclasses for model, diffusion, training and sampling; presets; TOML I/O.

A run folder holds `config.toml`; it is all that `hpdm train` needs to resume and all that
`hpdm sample` needs to rebuild the network.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import tomli_w

from hpdm_core.errors import BadInputError
from hpdm_core.files import atomic_write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FUSIONS = ("deep", "shallow", "none")
CONDITIONINGS = ("class", "text")
TRUST_RATIOS = ("decayed", "all")
INITS = ("glorot", "vit")
NEW_LEVELS = ("top", "fresh")  # train.init_new_levels


@dataclass
class ModelConfig:
    patch: list[int] = field(default_factory=lambda: [16, 64, 64])  # r = (f, h, w), the same at every level
    num_levels: int = 3  # L + 1; level l has a canvas of patch * 2**l pixels per axis
    token: list[int] = field(default_factory=lambda: [1, 4, 4])  # pixel cube per interface token
    channels: int = 3
    interface_dim: int = 1024  # Table 7 "tokenization dim"
    latent_dim: int = 256
    num_latents: int = 768
    num_blocks: int = 6
    latent_layers: int = 4  # latent self-attention + MLP layers inside each RIN block
    head_dim: int = 64
    mlp_ratio: float = 4.0
    fourier_features: int = 32  # per coordinate axis, for the tokens' global positions
    # Highest frequency (cycles per video extent) of those features. A fixed number rather than one
    # derived from the target, so that a 1-level base and the deeper pyramid fine-tuned from it see the
    # same features for the same place in the video (hpdm_core.init_from). 0 = the rule of runs made
    # before the key existed: half the finest level's tokens per axis (`coord_frequency`).
    coord_max_frequency: float = 0.0
    levels_per_block: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 3, 3])
    adaptive_computation: bool = True  # false: every block processes every level ([num_levels] * num_blocks)
    fusion: str = "deep"  # deep | shallow | none
    detach_context: bool = False
    # Not in the paper (docs/training.md, "The network"): the gradient that levels >= 1 send into the lower
    # levels' activations through the context is multiplied by this; 1 = the paper, 0 = detach_context.
    context_grad_scale: float = 1.0
    use_coords: bool = True
    # Not in the paper (docs/training.md, "The network"): the noise level, pyramid level and class also scale and
    # shift every interface token, as adaLN-Zero does in DiT; false = conditioning through latents only.
    interface_conditioning: bool = True
    # Not in the paper (docs/training.md, "The network"): a depthwise 3x3 convolution over each frame's token grid
    # after every block's write, gated by the conditioning and zero-initialised, so that neighbouring
    # tokens can agree.
    token_mixing: bool = False
    # Frames the token mixing reaches (odd): 1 = each frame's 3x3 grid only; 3 = also the same token in the
    # previous and next frame.
    token_mixing_frames: int = 1
    # With token_mixing_frames > 1: the lowest pyramid level whose token mixing reaches over time; the levels
    # below mix each frame alone. Level 0 holds a whole clip at a quarter of the frame rate, where an object
    # moves several tokens between frames; the upper levels hold neighbouring frames (docs/experiments.md).
    # num_levels or more: no level does (a base to be fine-tuned into a deeper pyramid keeps its taps at zero).
    token_mixing_time_from_level: int = 0
    # Not in the paper (docs/training.md, "The network"; hpdm_core/model/tokens.py): every token reads and
    # writes a window this many pixels wider on each side (height and width), blended into its neighbours,
    # so that outputs need no step at token borders (the token mosaic). 0 = RIN's plain tokens.
    token_overlap: int = 0
    init: str = "glorot"  # Linear weights: glorot (RIN's reference code) | vit (truncated normal, std 0.02)
    num_classes: int = 101  # index num_classes is the null class used for guidance
    # What a video is conditioned on: "class" (a label, the null class for guidance) or "text" (the token
    # embeddings of a T5 encoder, `hpdm encode-text`; a learned null text for guidance).
    conditioning: str = "class"
    text_dim: int = 0  # width of the text encoder's embeddings (T5-11B: 1024, T5-XXL v1.1: 4096); text only

    @property
    def block_levels(self) -> list[int]:
        """Block b processes the levels below block_levels[b] (docs/design.md, "Adaptive computation")."""
        return list(self.levels_per_block) if self.adaptive_computation else [self.num_levels] * self.num_blocks

    @property
    def target(self) -> list[int]:
        """Full-video resolution R = r * 2**L per axis."""
        return [p * 2 ** (self.num_levels - 1) for p in self.patch]

    @property
    def coord_frequency(self) -> float:
        """The coordinate features' highest frequency: coord_max_frequency, or for 0 (old run folders)
        the Nyquist rate of the finest level's token grid, max(target // token) / 2, at least 0.5."""
        if self.coord_max_frequency > 0:
            return float(self.coord_max_frequency)
        finest = max(r // t for r, t in zip(self.target, self.token))
        return max(0.5, finest / 2)


@dataclass
class DiffusionConfig:
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    level_input_scale: float = 0.5  # < 1: level l gets noise scaled by (1 / level_input_scale) ** l
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    label_dropout: float = 0.1


@dataclass
class DataConfig:
    path: str = ""
    # Still images mixed into every step as still videos (`hpdm train --images`): a dataset file of
    # 1-frame entries (attrs kind="images"); "" = videos only. image_fingerprint: set by the run.
    image_path: str = ""
    image_fingerprint: str = ""
    frame_stride: int = 1
    flip: bool = True
    num_workers: int = 2
    fingerprint: str = ""  # content hash of the file (h5store.dataset_fingerprint), set by the run: a resume checks it
    # Text conditioning: the encoder folder that made the file's embeddings (sampling encodes prompts with it)
    # and its fingerprint, set by the run from the file; sampling refuses an encoder with another fingerprint.
    text_encoder: str = ""
    text_fingerprint: str = ""
    text_max_tokens: int = 0  # the tokens per text the embeddings were made with (part of the fingerprint)


@dataclass
class TrainConfig:
    batch_size: int = 768
    # Still-image rows per step beside the batch_size video rows (data.image_path); 0 = none.
    image_batch_size: int = 0
    lr: float = 5e-3
    weight_decay: float = 0.01
    # LAMB's layer adaptation: "decayed" = the weight matrices only (BERT's reference LAMB; the other
    # tensors take plain Adam steps), "all" = every tensor (You et al.'s Algorithm 2 as written).
    trust_ratio: str = "decayed"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 10_000
    steps: int = 40_000
    ema_decay: float = 0.9999
    grad_clip: float = 1.0
    accumulation: int = 1
    seed: int = 0
    log_every: int = 10
    probe_every: int = 1000  # label gap of the EMA model (metrics.jsonl); 0 = never
    checkpoint_every: int = 1000
    keep_last: int = 3
    bf16: bool = True  # autocast on CUDA only
    # `hpdm train --init-from`: the checkpoint whose EMA weights started this run ("" = fresh weights),
    # and how levels the source lacks start: "top" (a copy of its highest level's latents and level
    # embedding) or "fresh" (initialised as a new run would). See hpdm_core.init_from.
    init_from: str = ""
    init_new_levels: str = "top"
    # torch.compile of the denoiser (CUDA graphs on one GPU); off: minutes of compiling on a CPU for little
    # gain there (docs/scaling.md, "Compiled steps")
    compile: bool = False


TILE_BLENDS = ("uniform", "tent")


@dataclass
class SampleConfig:
    """How to sample (hpdm_core.sampling.generate): a run's defaults, which `hpdm sample` flags override."""

    steps: int = 128  # level 0; level l uses max(1, steps // 2**l)
    overlap: str = "hw"  # the paper's metrics setting; "fhw" for visualisations
    guidance: float = 1.0  # classifier-free guidance weight w; 1 = conditional only (`cfg` up to 0.1.0)
    # Guidance on the lowest `guidance_levels` levels only; 0 = every level. As a cascade guides its base
    # model and its super-resolution stages apart (Imagen): level 0 decides what is where, and the upper
    # levels follow their context. Guiding only level 0 costs one extra tile per step and sample.
    guidance_levels: int = 0
    # How overlapping tiles' predictions are averaged: "uniform" (the paper's MultiDiffusion average: a
    # pixel's weight is the number of tiles over it) or "tent" (each tile weighs its pixels by a tent over
    # the overlapped axes, highest at its centre: neighbours fade into each other instead of ending in a
    # seam where a tile starts or stops).
    tile_blend: str = "uniform"
    # Not in the paper (hpdm_core.canvas.LevelDenoiser): tilings that take turns, one per denoiser evaluation.
    # Tiling k starts its tiles tile_shifts[k] pixels further along the overlapped height and width axes (plus
    # a tile at each end of the canvas), so its seams and token borders fall between the others'. [0] = the
    # paper's one tiling; each shift must lie below the stride, half the patch.
    tile_shifts: list[int] = field(default_factory=lambda: [0])
    s_churn: float = 40.0  # EDM stochastic sampler, level 0 only
    s_tmin: float = 0.05
    s_tmax: float = 50.0
    s_noise: float = 1.003
    tile_batch: int = 0  # chains per network call (cond and null copies count apart); 0: choose from free memory
    cache: bool = True
    offload_cache: bool = False
    bf16: bool = True  # autocast on CUDA only
    compile: bool = False  # torch.compile of the denoiser's forward (CUDA graphs on a GPU)

    def guidance_at(self, level: int) -> float:
        """The guidance weight of a level: `guidance` on the guided levels, 1 (none) above them."""
        return self.guidance if self.guidance_levels == 0 or level < self.guidance_levels else 1.0

    def guided_at(self, level: int) -> bool:
        """Whether a level evaluates a null-class copy of every chain (guidance weight other than 1)."""
        return self.guidance_at(level) != 1.0

    def replace(self, **changes: Any) -> "SampleConfig":
        """A copy with the given settings changed; None leaves a setting as it is (an unset CLI flag)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def validate(self) -> "SampleConfig":
        validate_sample(self)
        return self


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        validate(self)
        return self


def _paper(latent_dim: int, steps: int) -> Config:
    """HPDM-S/M/L of the paper's Table 7 (UCF-101, 16x64x64 patches, 64x256x256 target)."""
    cfg = Config()
    cfg.model.latent_dim = latent_dim
    # The value the target rule gave these presets (64x256x256 target, 1x4x4 tokens: 64 / 2), fixed so
    # that a 1-level base of the same patches shares its coordinate features.
    cfg.model.coord_max_frequency = 32.0
    # The paper gives neither the per-block depth nor the MLP width. 4 latent layers per block (RIN's
    # choice) with 8x MLPs lands within 7 % of its 178M/321M/725M. With 4x MLPs no depth gets all
    # three within 15 %: the paper's counts imply a larger part that does not grow with the latent
    # width (tests/test_param_counts.py).
    cfg.model.latent_layers = 4
    cfg.model.mlp_ratio = 8.0
    cfg.train.steps = steps
    return cfg


def _tiny() -> Config:
    """The CPU demo and tests: 8x16x16 patches, 32x64x64 target, 8 classes, 1.3M parameters, sized for the
    quickstart's 10 minutes on 2 CPU cores (1600 steps of 8 clips, 32 sampling steps: 8 at level 2).

    Every choice below was measured on the synthetic set: the figures, dates and commands are in
    docs/training.md ("What we chose where the paper is silent") and docs/experiments.md.
    """
    cfg = Config()
    m = cfg.model
    m.patch, m.token = [8, 16, 16], [1, 4, 4]
    # Many narrow latents rather than few wide ones (the same cost): RIN's tokens meet only through them.
    m.interface_dim, m.latent_dim, m.num_latents = 96, 64, 64
    m.latent_layers, m.head_dim, m.fourier_features, m.mlp_ratio = 2, 32, 8, 2.0
    m.num_classes = 8  # the synthetic set's class k: colour k mod 7, shape k mod 6 (a red disc and a red square)
    m.coord_max_frequency = 16.0  # the target rule's value for 32x64x64, fixed so that tiny-base shares it
    # Neighbouring tokens may agree: a gated 3x3 mixing of the token grid, and windows that overlap by a
    # pixel, blended, so that outputs need no step at token borders (the token mosaic).
    m.token_mixing, m.token_overlap = True, 1
    # The upper levels' mixing also reaches the same token in the previous and next frame: objects move more
    # smoothly (centroid acceleration -22 to -32 % with three training seeds). Level 0 mixes within frames:
    # its frames lie 4 apart, and mixing them over time lost objects (docs/experiments.md, sixth round).
    m.token_mixing_frames, m.token_mixing_time_from_level = 3, 1
    # Noisier training draws than EDM's (-1.2): level 0 is a whole clip whose object's colour reads through
    # EDM's typical noise, and the class would rarely be needed (at -1.2 objects went missing). -0.6
    # rather than 0: less grain and mottling at the same steps (docs/experiments.md, fourth round).
    cfg.diffusion.p_mean, cfg.diffusion.p_std = -0.6, 1.4
    # A milder per-level noise shift than the paper's 0.5, so that the top level also trains at low noise.
    cfg.diffusion.level_input_scale = 0.6
    # Sampling starts at sigma 10 (17, 28 on levels 1, 2): pure noise for data of std 0.5, and the few
    # steps of the upper levels fall where they were trained instead of at sigma 133-222.
    cfg.diffusion.sigma_max = 10.0
    t = cfg.train
    # Batches of 8: a step costs 0.54x one of 16, and at equal clips more, smaller steps learned more.
    t.batch_size, t.lr, t.warmup_steps, t.steps = 8, 1e-2, 100, 1600  # lr 1e-2: a short run
    # The EMA's warm-up (1 + n) / (10 + n) stays below 0.995 until update 1790: in 1600 steps it alone sets
    # the decay (0.998 gave the same bytes, 0.99 the same scores; docs/experiments.md, third round).
    t.ema_decay, t.log_every, t.checkpoint_every, t.probe_every = 0.995, 10, 200, 200
    cfg.data.num_workers = 0
    cfg.sample.steps, cfg.sample.overlap = 32, "hw"
    # Guidance 3 on level 0 only: level 0 decides what is where and the upper levels follow their context.
    cfg.sample.guidance, cfg.sample.guidance_levels = 3.0, 1
    # Four tilings in turn, a pixel apart: no pixel is a tile seam or token border at every evaluation, so the
    # token mosaic averages away (docs/experiments.md, seventh round).
    cfg.sample.tile_shifts = [0, 1, 2, 3]
    return cfg


def _hpdm_t2v() -> Config:
    """HPDM-T2V of the paper's Table 7: T5-11B embeddings, 4 levels of 8x36x64 patches, a 64x288x512 target.

    The paper fine-tuned it for 15k steps from a 1-level base trained 500k steps at 36x64
    (`hpdm train --init-from`, examples/ucf101_recipe.md), with 4096 videos and 4096 images per batch, FSDP.
    """
    cfg = _paper(3072, 15_000)
    m = cfg.model
    # 4 latent layers per block as HPDM-S/M/L; 4x MLPs give 3.71B parameters against the paper's 3.93B
    # (8x: 6.0B). The paper does not say how its T2V blocks are shaped.
    m.mlp_ratio = 4.0
    m.patch, m.token, m.num_levels = [8, 36, 64], [1, 3, 4], 4
    m.levels_per_block = [1, 2, 2, 3, 3, 4]
    m.conditioning, m.text_dim = "text", 1024  # T5-11B's d_model
    cfg.train.batch_size, cfg.train.image_batch_size, cfg.train.warmup_steps = 4096, 4096, 5_000
    return cfg


def _tiny_t2v() -> Config:
    """The text-to-video CPU demo: `tiny` conditioned on text from the small random T5 encoder that
    `hpdm random-text-encoder` builds (width 128), for examples/quickstart_t2v.sh (docs/quickstart.md)."""
    cfg = _tiny()
    cfg.model.conditioning, cfg.model.text_dim = "text", 128
    # The noisier draws of tiny before -0.6: text is learned from them more slowly than a class, and with
    # -0.6 two of 28 seen prompts lost their object from frames (docs/experiments.md, fourth round).
    cfg.diffusion.p_mean = 0.0
    return cfg


def _tiny_base() -> Config:
    """The base stage of tiny's scale-up path (the paper's low-resolution stage, examples/ucf101_recipe.md):
    one level at the patch's resolution (8x16x16: the synthetic videos area-downsampled to it, every 4th
    frame, so that a clip spans the time of tiny's 32-frame target). Fine-tune
    the full pyramid from it with `hpdm train --preset tiny --init-from BASE_RUN`."""
    cfg = _tiny()
    levels = cfg.model.num_levels
    cfg.model.num_levels, cfg.model.levels_per_block = 1, [1] * cfg.model.num_blocks
    # tiny's level 0 is its 32-frame target box-downsampled to 8 frames: every 4th frame spans the same
    # time (at stride 1 the base would see the motion 4x slower than the level it becomes).
    cfg.data.frame_stride = 2 ** (levels - 1)
    return cfg


PRESETS = {
    "tiny": _tiny,
    "tiny-t2v": _tiny_t2v,
    "hpdm-t2v": _hpdm_t2v,
    "tiny-base": _tiny_base,
    "hpdm-s": lambda: _paper(256, 40_000),
    "hpdm-m": lambda: _paper(512, 40_000),
    "hpdm-l": lambda: _paper(1024, 65_000),
}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise BadInputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


# Renamed settings: the old name is still read (config.toml of older runs, --set), the new one written.
RENAMED = {"sample.cfg": "sample.guidance"}


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The declared type of each field of a config dataclass (int, float, bool, str, list[int], list[float],
    or a nested section's dataclass), resolved from the annotations."""
    return typing.get_type_hints(cls)


def _from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    types = field_types(cls)
    values = {RENAMED.get(f"{where}{key}", f"{where}{key}")[len(where):]: value for key, value in values.items()}
    kwargs = {}
    for key, value in values.items():
        if key not in types:
            raise BadInputError(f"unknown config key {where}{key}; known: {', '.join(types)}")
        if dataclasses.is_dataclass(types[key]):  # a section: a table of its own
            if not isinstance(value, dict):
                raise BadInputError(f"config section {where}{key} must be a table ([{key}]), got {value!r}")
            value = _from_dict(types[key], value, f"{where}{key}.")
        kwargs[key] = value
    return cls(**kwargs)


def from_dict(values: dict[str, Any]) -> Config:
    return _from_dict(Config, values, "")


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return from_dict(tomllib.load(f))
    except FileNotFoundError:
        raise BadInputError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise BadInputError(f"config file {path} is not valid TOML: {err}") from None
    except OSError as err:  # a folder, no permission, ...
        raise BadInputError(f"cannot read config file {path}: {err.strerror or err}") from None


def save(cfg: Config, path: str | Path) -> None:
    """Write atomically: a temporary name, then rename."""
    atomic_write_text(path, tomli_w.dumps(cfg.to_dict()))


def _coerce(text: str, kind: Any, key: str) -> Any:
    """A --set value read as its setting's declared type."""
    item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else None
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if item is not None:
            items = [s for s in text.replace("[", "").replace("]", "").replace("x", ",").split(",") if s.strip()]
            return [item(s.strip()) for s in items]
        return kind(text)
    except ValueError:
        raise BadInputError(f"cannot read {key}={text!r} as {'list' if item else kind.__name__}") from None


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` strings (the CLI's --set) to a copy of cfg."""
    cfg = copy.deepcopy(cfg)
    sections = field_types(Config)
    for assignment in overrides:
        if "=" not in assignment:
            raise BadInputError(f"`overrides` take section.key=value, got {assignment!r}")
        key, text = assignment.split("=", 1)
        key = RENAMED.get(key.strip(), key.strip())
        section, _, name = key.partition(".")
        types = field_types(sections[section]) if section in sections else {}
        if name not in types or "." in name:
            raise BadInputError(f"unknown config key {key!r} (use section.key, e.g. train.lr=1e-3 or model.fusion=shallow)")
        setattr(getattr(cfg, section), name, _coerce(text.strip(), types[name], key))
    return cfg


def _check_types(section: Any, name: str) -> None:
    """Each value has its setting's declared type (ints accepted for floats), and every number fits TOML."""
    for key, kind in field_types(type(section)).items():
        value, where = getattr(section, key), f"{name}.{key}"
        item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else None
        if item is not None:
            if not isinstance(value, list) or not all(_is(v, item) for v in value):
                raise BadInputError(f"{where} must be a list of {item.__name__}s, got {value!r}")
            value = [float(v) for v in value] if item is float else value
        elif not _is(value, kind):
            raise BadInputError(f"{where} must be a{'n' if kind is int else ''} {kind.__name__}, got {value!r}")
        elif kind is float:
            value = float(value)
        for v in value if item is not None else [value]:
            if _is(v, int) and abs(v) > INT64_MAX:
                raise BadInputError(f"{where} must lie within TOML's 64-bit integer range (|value| <= {INT64_MAX}), "
                                    f"got {value!r}")
            if isinstance(v, float) and not math.isfinite(v):
                raise BadInputError(f"{where} must be a finite number, got {value!r}")
        setattr(section, key, value)


INT64_MAX = 2 ** 63 - 1  # the largest integer TOML (and so config.toml) can hold


def _is(value: Any, kind: type) -> bool:
    if kind is float:  # TOML and --set may give 1 for 1.0
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _at_least(cfg: Config, minimum: float, *keys: str) -> None:
    for key in keys:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value < minimum:
            raise BadInputError(f"{key} must be at least {minimum}, got {value}")


def _positive(cfg: Config, *keys: str) -> None:
    for key in keys:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not value > 0:
            raise BadInputError(f"{key} must be positive, got {value}")


def validate(cfg: Config) -> None:
    """Raise BadInputError naming the first setting that cannot work: types, finite numbers, ranges.

    The one place the library and the CLI check a config, before anything is built or written."""
    for name in ("model", "diffusion", "data", "train"):
        _check_types(getattr(cfg, name), name)
    _at_least(cfg, 1, "model.num_levels", "model.channels", "model.interface_dim", "model.latent_dim",
              "model.num_latents", "model.num_blocks", "model.latent_layers", "model.head_dim",
              "model.fourier_features", "model.num_classes", "data.frame_stride", "train.batch_size",
              "train.steps", "train.accumulation", "train.log_every", "train.checkpoint_every")
    _at_least(cfg, 0, "data.num_workers", "train.weight_decay", "train.warmup_steps", "train.grad_clip",
              "train.seed", "train.probe_every", "train.keep_last")
    _positive(cfg, "model.mlp_ratio", "diffusion.sigma_data", "diffusion.p_std", "diffusion.sigma_min", "diffusion.rho",
              "train.lr")
    m = cfg.model
    if len(m.patch) != 3 or len(m.token) != 3:
        raise BadInputError("model.patch and model.token need three sizes (frames, height, width)")
    for axis, p, t in zip("fhw", m.patch, m.token):
        if p <= 0 or t <= 0 or p % t:
            raise BadInputError(f"model.token {m.token} must divide model.patch {m.patch} (axis {axis})")
    if not 0 <= 2 * m.token_overlap <= min(m.token[1:]):
        raise BadInputError(f"model.token_overlap must lie in 0..{min(m.token[1:]) // 2} (half the token's height "
                            f"and width, model.token {m.token}), got {m.token_overlap}")
    if m.token_mixing_frames < 1 or m.token_mixing_frames % 2 == 0:
        raise BadInputError(f"model.token_mixing_frames must be an odd number >= 1, got {m.token_mixing_frames}")
    # No check against token_mixing_frames: with 1 there is no time tap, and `--set model.token_mixing_frames=1`
    # alone turns tiny's time mixing off.
    if m.token_mixing_time_from_level < 0:
        raise BadInputError(f"model.token_mixing_time_from_level must be >= 0, got {m.token_mixing_time_from_level}")
    lpb = m.levels_per_block
    if len(lpb) != m.num_blocks:
        raise BadInputError(f"model.levels_per_block has {len(lpb)} entries; it needs one per block "
                            f"(model.num_blocks = {m.num_blocks})")
    if any(b < a for a, b in zip(lpb, lpb[1:])):
        raise BadInputError(f"model.levels_per_block {lpb} must be non-decreasing")
    if lpb[-1] != m.num_levels or lpb[0] < 1:
        raise BadInputError(f"model.levels_per_block {lpb} must lie in 1..{m.num_levels} and end with "
                            f"{m.num_levels} (the last block processes every level)")
    if m.init not in INITS:
        raise BadInputError(f"model.init {m.init!r}: choose one of {', '.join(INITS)}")
    if m.fusion not in FUSIONS:
        raise BadInputError(f"model.fusion {m.fusion!r}: choose one of {', '.join(FUSIONS)}")
    if m.conditioning not in CONDITIONINGS:
        raise BadInputError(f"model.conditioning {m.conditioning!r}: choose one of {', '.join(CONDITIONINGS)}")
    if m.conditioning == "text" and m.text_dim < 1:
        raise BadInputError("model.conditioning = \"text\" needs model.text_dim, the width of the text encoder's "
                            "embeddings (`hpdm info` on an encoded dataset file shows it)")
    if m.latent_dim % m.head_dim or m.interface_dim % m.head_dim:
        raise BadInputError(f"model.head_dim {m.head_dim} must divide latent_dim {m.latent_dim} "
                            f"and interface_dim {m.interface_dim}")
    if m.coord_max_frequency < 0:
        raise BadInputError(f"model.coord_max_frequency must be at least 0 (0: derived from the target), "
                            f"got {m.coord_max_frequency}")
    if not 0 <= m.context_grad_scale <= 1:
        raise BadInputError(f"model.context_grad_scale must lie in [0, 1], got {m.context_grad_scale}")
    d = cfg.diffusion
    if not 0 < d.level_input_scale <= 1:
        raise BadInputError("diffusion.level_input_scale must lie in (0, 1]")
    if not 0 <= d.label_dropout < 1:
        raise BadInputError("diffusion.label_dropout must lie in [0, 1)")
    if d.sigma_max <= d.sigma_min:
        raise BadInputError(f"diffusion.sigma_max {d.sigma_max} must exceed diffusion.sigma_min {d.sigma_min}")
    t = cfg.train
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        raise BadInputError(f"train.betas must be two numbers in [0, 1), got {t.betas}")
    if not 0 <= t.ema_decay <= 1:
        raise BadInputError(f"train.ema_decay must lie in [0, 1], got {t.ema_decay}")
    if t.init_new_levels not in NEW_LEVELS:
        raise BadInputError(f"train.init_new_levels {t.init_new_levels!r}: choose one of {', '.join(NEW_LEVELS)}")
    if t.image_batch_size < 0:
        raise BadInputError(f"train.image_batch_size must be at least 0, got {t.image_batch_size}")
    if t.trust_ratio not in TRUST_RATIOS:
        raise BadInputError(f"train.trust_ratio {t.trust_ratio!r}: choose one of {', '.join(TRUST_RATIOS)}")
    if t.batch_size < 1 or t.accumulation < 1 or t.batch_size % t.accumulation:
        raise BadInputError("train.batch_size must be a positive multiple of train.accumulation")
    validate_sample(cfg.sample)


def validate_images(cfg: Config) -> None:
    """An image file and image rows come together. Apart from validate: the file (like the videos) may be
    given after the config is composed (`hpdm train --images`)."""
    if cfg.data.image_path and not cfg.train.image_batch_size:
        raise BadInputError(f"data.image_path {cfg.data.image_path} is set but train.image_batch_size is 0: say how "
                            "many image rows each step takes, e.g. train.image_batch_size=4")
    if cfg.train.image_batch_size and not cfg.data.image_path:
        raise BadInputError(f"train.image_batch_size {cfg.train.image_batch_size} needs an image file: give `images` "
                            "(or set data.image_path)")


def parse_tile_shifts(text: str) -> list[int]:
    """--tile-shifts: comma-separated pixel shifts, e.g. "0,1,2,3" (sample.tile_shifts)."""
    try:
        shifts = [int(part) for part in text.split(",")]
    except ValueError:
        raise BadInputError(f"--tile-shifts {text!r}: give pixel shifts separated by commas, e.g. 0,1,2,3") from None
    validate_sample(SampleConfig(tile_shifts=shifts))
    return shifts


def recorded_settings(sample: SampleConfig) -> dict[str, Any]:
    """The sampling settings a sample file records (h5 attributes), as `hpdm sample` and `save_videos` write
    them: tile_shifts as --tile-shifts takes it, the guidance weight under its old name `cfg`."""
    return {"steps": sample.steps, "overlap": sample.overlap, "tile_blend": sample.tile_blend,
            "tile_shifts": ",".join(str(shift) for shift in sample.tile_shifts), "cfg": sample.guidance,
            "guidance_levels": sample.guidance_levels}


def validate_sample(sample: SampleConfig) -> None:
    """The [sample] checks of validate, also run on their own for a SampleConfig given to the sampler."""
    _check_types(sample, "sample")
    cfg = SimpleNamespace(sample=sample)  # _at_least/_positive read section.key
    _at_least(cfg, 1, "sample.steps")
    _at_least(cfg, 0, "sample.guidance", "sample.guidance_levels", "sample.s_churn", "sample.s_tmin", "sample.tile_batch")
    _positive(cfg, "sample.s_noise")
    if sample.tile_blend not in TILE_BLENDS:
        raise BadInputError(f"sample.tile_blend must be one of {', '.join(TILE_BLENDS)}, got {sample.tile_blend!r}")
    if not sample.tile_shifts or min(sample.tile_shifts) < 0 or len(set(sample.tile_shifts)) != len(sample.tile_shifts):
        raise BadInputError(f"sample.tile_shifts must be distinct shifts in pixels, each >= 0, got {sample.tile_shifts}")
    if sample.s_tmax < sample.s_tmin:
        raise BadInputError(f"sample.s_tmax {sample.s_tmax} must be at least sample.s_tmin {sample.s_tmin}")
    from hpdm_core.pyramid import parse_overlap  # late import: pyramid imports nothing from here

    parse_overlap(sample.overlap)


# ----------------------------------------------------------------------------- composing and comparing configs

# Settings that change nothing about the optimisation: a resumed run may change them freely.
RUNTIME_KEYS = {"train.steps", "train.log_every", "train.checkpoint_every", "train.probe_every", "train.keep_last",
                "data.path", "data.num_workers", "data.fingerprint", "data.image_path", "data.image_fingerprint",
                "data.text_encoder", "data.text_fingerprint", "data.text_max_tokens", "train.compile"}


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _network_dict(cfg: Config) -> dict[str, Any]:
    """cfg as a dict, with the blocks' levels and the coordinate frequency as the network uses them:
    levels_per_block = [L+1] * B and adaptive_computation = false build the same network."""
    values = cfg.to_dict()
    values["model"]["levels_per_block"] = cfg.model.block_levels
    values["model"].pop("adaptive_computation")
    # 0 (a config.toml older than the key) and the value the old rule gives build the same features.
    values["model"]["coord_max_frequency"] = cfg.model.coord_frequency
    return values


def config_conflicts(saved: Config, requested: Config) -> list[str]:
    """Keys (section.key) on which two configs disagree in a way that changes the training run."""
    a, b = _flatten(_network_dict(saved)), _flatten(_network_dict(requested))
    return [k for k in a if not _same(a[k], b.get(k)) and k not in RUNTIME_KEYS and not k.startswith("sample.")]


def describe_conflicts(saved: Config, requested: Config, limit: int = 6) -> str:
    """`key = saved value (asked requested value)` for the first `limit` conflicts."""
    a, b = _flatten(_network_dict(saved)), _flatten(_network_dict(requested))
    return ", ".join(f"{k} = {a[k]!r} (asked {b.get(k)!r})" for k in config_conflicts(saved, requested)[:limit])


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (a run saved with a NaN setting is not in conflict with itself)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def build_config(preset_name: str | None = None, config_file: str | Path | None = None,
                 overrides: list[str] | None = None, batch_size: int | None = None) -> Config:
    """A config composed as the command line composes it: a preset, a TOML file over it, then
    `section.key=value` overrides (--set) and the batch size. A run resumed as it is needs none
    (training.setup_run(run_dir, None) reads its config.toml): the command asks only when given one.
    """
    overrides = list(overrides or [])
    if batch_size is not None:
        overrides.append(f"train.batch_size={batch_size}")
    if preset_name is None and config_file is None:
        raise BadInputError("`overrides` and `batch_size` change a base config: give `preset_name` or `config_file`")
    values = preset(preset_name).to_dict() if preset_name is not None else Config().to_dict()
    if config_file is not None:
        values = _merge(values, load(config_file).to_dict() if preset_name is None else
                        _read_toml(config_file))
    cfg = apply_overrides(from_dict(values), overrides)
    return cfg.validate()


def _read_toml(path: str | Path) -> dict[str, Any]:
    """The keys a TOML file sets (not a full Config), so they can be laid over a preset."""
    load(path)  # clear errors for a missing file, bad TOML or an unknown key
    with Path(path).open("rb") as f:
        return tomllib.load(f)
