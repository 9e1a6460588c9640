"""TF-Hub `deepmind/i3d-kinetics-400/1` module folder -> our I3D state dict (pytorch-i3d layout).

The module's variables live in `variables/variables` (a TF checkpoint) under sonnet names such as
`RGB/inception_i3d/Mixed_3b/Branch_1/Conv3d_0b_3x3/conv_3d/w` [kT, kH, kW, in, out]. Sonnet's
batch norm has an offset (`beta`) but no scale, so `bn.weight` is 1. Mixed_5b's second 3x3 conv is
named `Conv3d_0a_3x3` in the original graph (a typo kept by every converter).

TensorFlow is imported only in a child process (`python -m hpdm_core.metrics.tfhub_convert`):
TensorFlow and torch in one process can fight over threads and native libraries.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from hpdm_core.errors import BadInputError, MissingResourceError

PREFIX = "RGB/inception_i3d/"
_BRANCHES = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1", "b1b": "Branch_1/Conv3d_0b_3x3",
             "b2a": "Branch_2/Conv3d_0a_1x1", "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}
_PARAMS = {"conv3d.weight": "conv_3d/w", "conv3d.bias": "conv_3d/b", "bn.bias": "batch_norm/beta",
           "bn.running_mean": "batch_norm/moving_mean", "bn.running_var": "batch_norm/moving_variance"}


def is_tfhub_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "saved_model.pb").is_file()


def tf_variable_name(key: str) -> str | None:
    """TF name of our state-dict entry `key`; None for entries TF does not store (bn scale, counter)."""
    # "Mixed_3b.b1b.conv3d.weight" -> unit "Mixed_3b.b1b", param "conv3d.weight"
    head, _, leaf = key.rpartition(".")
    unit, _, layer = head.rpartition(".")
    param = f"{layer}.{leaf}"
    if param not in _PARAMS:
        return None
    parts = unit.split(".")
    if parts[0] == "logits":
        scope = "Logits/Conv3d_0c_1x1"
    elif len(parts) == 2:
        branch = _BRANCHES[parts[1]]
        if parts[0] == "Mixed_5b" and parts[1] == "b2b":
            branch = "Branch_2/Conv3d_0a_3x3"
        scope = f"{parts[0]}/{branch}"
    else:
        scope = parts[0]
    return PREFIX + scope + "/" + _PARAMS[param]


def tfhub_variables_to_state_dict(variables: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Our InceptionI3d state dict from the TF-Hub variables; every TF variable must be used."""
    from hpdm_core.metrics.i3d import InceptionI3d

    template = InceptionI3d().state_dict()
    state, used = {}, set()
    for key, value in template.items():
        name = tf_variable_name(key)
        if name is None:
            state[key] = torch.ones_like(value) if key.endswith("bn.weight") else torch.zeros_like(value)
            continue
        if name not in variables:
            raise BadInputError(f"the TF-Hub module lacks variable {name}; is it deepmind/i3d-kinetics-400/1?")
        array = np.asarray(variables[name], np.float32)
        if key.endswith("conv3d.weight"):
            array = array.transpose(4, 3, 0, 1, 2)  # [kT, kH, kW, in, out] -> [out, in, kT, kH, kW]
        array = array.reshape(value.shape)
        state[key] = torch.from_numpy(np.ascontiguousarray(array))
        used.add(name)
    unused = sorted(set(variables) - used)
    if unused:
        raise BadInputError(f"the TF-Hub module has variables this I3D does not: {', '.join(unused[:5])}")
    return state


def read_tfhub_variables(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """All variables of a TF-Hub module folder, read by TensorFlow in a child process."""
    folder = Path(folder)
    if not (folder / "variables").is_dir():
        raise MissingResourceError(f"{folder} has no variables/ folder: download the full TF-Hub module "
                                   "deepmind/i3d-kinetics-400/1 (tar.gz) and unpack it")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "variables.npz"
        proc = subprocess.run([sys.executable, "-m", "hpdm_core.metrics.tfhub_convert", str(folder), str(out)],
                              capture_output=True, text=True)
        if proc.returncode == 3:
            raise MissingResourceError("reading a TF-Hub module needs TensorFlow: install hpdm's `tfhub` extra (tensorflow-cpu, tensorflow-hub)")
        if proc.returncode != 0:
            raise BadInputError(f"could not read the TF-Hub module {folder}: {proc.stderr.strip().splitlines()[-1:]}")
        with np.load(out) as arrays:
            return {name.replace("|", "/"): arrays[name] for name in arrays.files}


def convert_tfhub_i3d(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    return tfhub_variables_to_state_dict(read_tfhub_variables(folder))


def _dump_variables(folder: str, out: str) -> int:
    try:
        import tensorflow as tf
    except ImportError:
        return 3
    reader = tf.train.load_checkpoint(os.path.join(folder, "variables", "variables"))
    arrays = {name.replace("/", "|"): reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
              if name.startswith(PREFIX)}
    np.savez(out, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(_dump_variables(sys.argv[1], sys.argv[2]))
