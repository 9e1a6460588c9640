"""What an evaluation is asked to do: the one list of options of `metrics.fvd.evaluate`, which
`hpdm eval-fvd` builds from its flags and `hpdm_core.evaluate` takes from Python.

Its messages name the options in backticks (`num`); the command says its flags instead (--num).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from hpdm_core.errors import check_count

SEED_MAX = 2 ** 63 - 1  # torch.manual_seed takes a signed 64-bit integer
PathLike = str | os.PathLike


@dataclass
class EvalOptions:
    """Everything `metrics.fvd.evaluate` takes besides the real and the generated videos.

    The networks that look at the videos: `i3d` (FVD with published weights: a file or a TF-Hub folder) or
    `random_i3d_seed` (a proxy FVD with random weights, for comparing your own runs only); `c3d` (with
    `c3d_mean` for TGAN's npz) adds the video Inception Score; `classifier` (a checkpoint of
    `hpdm train-classifier`, trained on your own data) adds the class accuracy and an FD in its
    features, and may be given alone (then no FVD).
    """

    i3d: PathLike | None = None
    random_i3d_seed: int | None = None
    c3d: PathLike | None = None
    c3d_mean: PathLike | None = None  # TGAN's mean2.npz (default: the one beside the npz C3D)
    classifier: PathLike | None = None
    protocol: str = "styleganv"  # or "tf" (docs/design.md, "Evaluation")
    num: int | None = None  # clips per side; the protocol's 2048 when None
    frames: int | None = None  # frames per clip; the protocol's 16 when None
    subsample: int = 1  # every n-th frame
    resolution: int | None = None  # resize the clips to this square size (match the generator)
    seed: int = 0  # the real clips' start frames (and the cache key)
    repeat_real: bool = False  # more clips per real video when too few are long enough (not comparable)
    batch_size: int = 8  # clips per forward pass
    device: str | torch.device = "auto"
    cache_dir: PathLike | None = None  # real-statistics cache root ($HPDM_CACHE or ~/.cache/hpdm)
    use_cache: bool = True  # reuse cached real statistics (False: recompute them)

    def validate(self) -> EvalOptions:
        """Self, or a BadInputError / MissingResourceError naming the option to fix (the protocol's name is
        checked by metrics.fvd.get_protocol, where the protocols are)."""
        from hpdm_core.distributed import as_device
        from hpdm_core.metrics.detectors import missing_c3d, missing_i3d

        for name, low in (("num", 2), ("frames", 1), ("resolution", 8)):
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name), low)
        check_count("subsample", self.subsample, 1)
        check_count("batch_size", self.batch_size, 1)
        check_count("seed", self.seed, 0, SEED_MAX)
        if self.random_i3d_seed is not None:
            check_count("random_i3d_seed", self.random_i3d_seed, 0, SEED_MAX)
        if self.i3d is None and self.random_i3d_seed is None and (self.classifier is None or self.c3d is not None):
            raise missing_i3d("(none given)")
        if self.i3d is not None and not Path(self.i3d).exists():
            raise missing_i3d(self.i3d)
        if self.c3d is not None and not Path(self.c3d).exists():
            raise missing_c3d(self.c3d)
        as_device(self.device)
        return self
