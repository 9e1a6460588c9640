"""hpdm: Hierarchical Patch Diffusion Models for pixel-space video generation.

The public API (hpdm_core.api), for a notebook or a script:

    import hpdm_core as hpdm
    run = hpdm.train(hpdm.preset("tiny"), data="moving.h5", run_dir="runs/tiny")
    model = hpdm.load("runs/tiny")
    videos = hpdm.generate(model, classes=[0, 1, 2, 3])
    hpdm.save_videos(videos, "samples.mp4")

The names below are imported on first use, so `import hpdm_core` stays cheap (no torch until then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpdm_core.version import __version__

_API = ("preset", "train", "load", "generate", "save_videos", "evaluate", "Run", "Model", "Samples", "EvalOptions")
_ELSEWHERE = {
    "Config": "hpdm_core.config", "SampleConfig": "hpdm_core.config", "SampleResult": "hpdm_core.sampling",
    "HPDMError": "hpdm_core.errors", "BadInputError": "hpdm_core.errors", "MissingResourceError": "hpdm_core.errors",
}

__all__ = ["__version__", *_API, *_ELSEWHERE]

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports them
    from hpdm_core.api import EvalOptions, Model, Run, Samples, evaluate, generate, load, preset, save_videos, train
    from hpdm_core.config import Config, SampleConfig
    from hpdm_core.errors import BadInputError, HPDMError, MissingResourceError
    from hpdm_core.sampling import SampleResult


def __getattr__(name: str) -> Any:
    import importlib

    if name in _API:
        module = importlib.import_module("hpdm_core.api")
    elif name in _ELSEWHERE:
        module = importlib.import_module(_ELSEWHERE[name])
    else:
        raise AttributeError(f"module 'hpdm_core' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
