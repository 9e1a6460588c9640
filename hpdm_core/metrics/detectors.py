"""Load the FVD and IS networks from the files people actually have, detecting the format.

I3D: StyleGAN-V's TorchScript `i3d_torchscript.pt`, pytorch-i3d's state dict `i3d_pretrained_400.pt`
(also what `hpdm convert-i3d` writes), or a TF-Hub module folder. C3D: StyleGAN-V's TorchScript
`c3d_ucf101.pt`, or TGAN's chainer `conv3d_deepnetA_ucf.npz` with its mean clip `mean2.npz`.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from hpdm_core.checkpoint import load_error_reason
from hpdm_core.errors import BadInputError, MissingResourceError
from hpdm_core.metrics.c3d import C3D, C3DProbs, StyleGANVC3D, chainer_to_state_dict, crop_mean
from hpdm_core.metrics.i3d import I3DFeatures, InceptionI3d, StyleGANVI3D, random_i3d
from hpdm_core.metrics.tfhub_convert import convert_tfhub_i3d, is_tfhub_folder

I3D_SOURCES = ("StyleGAN-V's i3d_torchscript.pt, pytorch-i3d's i3d_pretrained_400.pt, or the TF-Hub module "
               "deepmind/i3d-kinetics-400/1 unpacked into a folder (needs hpdm's `tfhub` extra: tensorflow-cpu, tensorflow-hub)")
C3D_SOURCES = ("StyleGAN-V's c3d_ucf101.pt, or TGAN's conv3d_deepnetA_ucf.npz together with mean2.npz "
               "(give it as `c3d_mean`, or put it beside the npz)")


# sha256 of public detector files. No upstream publishes a checksum: these are the hashes that public FVD
# code pins for the files (the first found in five unrelated repositories, the second in two). Other files
# (i3d_pretrained_400.pt, c3d_ucf101.pt, a TF-Hub folder, `hpdm convert-i3d` output) have no documented
# hash: their sha256 is reported without a verdict.
KNOWN_WEIGHTS: dict[str, tuple[str, bool]] = {  # sha256 -> (what the file is, the TF-Hub I3D behind published FVD?)
    "bec6519f66ea534e953026b4ae2c65553c17bf105611c746d904657e5860a5e2":
        ("StyleGAN-V's i3d_torchscript.pt (the TF-Hub I3D as TorchScript)", True),
    "2609088c2e8c868187c9921c50bc225329a9057ed75e76120e0b4a397a2c7538":
        ("pytorch-i3d's rgb_imagenet.pt (DeepMind's ImageNet-inflated I3D)", False),
}


def identify_weights(sha256: str) -> dict:
    """What a weight file's hash says: {"sha256", "known_as" (None: no documented hash), "tfhub_i3d" (None: unknown)}."""
    known = KNOWN_WEIGHTS.get(sha256)
    return {"sha256": sha256, "known_as": known[0] if known else None, "tfhub_i3d": known[1] if known else None}


def missing_i3d(path) -> MissingResourceError:
    return MissingResourceError(f"I3D weights {path} not found. FVD needs {I3D_SOURCES}; give it as `i3d` "
                                "(or `random_i3d_seed` for a proxy distance that papers do not report)")


def missing_c3d(path, what: str = "C3D weights") -> MissingResourceError:
    return MissingResourceError(f"{what} {path} not found. Video IS needs {C3D_SOURCES}; give it as `c3d`")


def is_torchscript(path: Path) -> bool:
    """TorchScript archives hold compiled code (`<name>/code/...`); torch.save state dicts do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def load_torchscript(path: Path, what: str) -> torch.jit.ScriptModule:
    """torch.jit.load with a clear error (exit 2) for an archive that is not a whole TorchScript file."""
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # noqa: BLE001 -- e.g. "constants.pkl not found" in a foreign zip
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadInputError(f"{path} looks like TorchScript but does not load as {what} ({first[:200]})") from None


def weights_hash(path: str | os.PathLike) -> str:
    """sha256 of a weight file, or of every file in a TF-Hub folder (names and contents)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path)).encode() if path.is_dir() else b"")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _unwrap_state_dict(obj) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise BadInputError("expected a state dict (a mapping of parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def i3d_from_state_dict(state: dict[str, torch.Tensor]) -> InceptionI3d:
    net = InceptionI3d()
    state = dict(state)
    # pytorch-i3d's file predates batch-norm counters; they do not affect inference.
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise BadInputError(f"not a 400-class I3D state dict in the pytorch-i3d layout: {str(err)[:400]}") from None
    return net.eval()


def load_i3d(path: str | os.PathLike, resize: str = "torch", device: str | torch.device = "cpu") -> torch.nn.Module:
    """FVD detector from any supported I3D file: callable on uint8 [B, F, H, W, 3] -> [B, 400].

    `resize` ("torch" or "tf") applies to our own network; a TorchScript file resizes internally.
    """
    path = Path(path)
    if not path.exists():
        raise missing_i3d(path)
    if path.is_dir():
        if not is_tfhub_folder(path):
            raise BadInputError(f"{path} is a folder but not a TF-Hub module (no saved_model.pb)")
        return I3DFeatures(i3d_from_state_dict(convert_tfhub_i3d(path)), resize, name="i3d_tfhub").to(device)
    if is_torchscript(path):
        return StyleGANVI3D(load_torchscript(path, "StyleGAN-V's i3d_torchscript.pt"), name=path.stem).to(device)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BadInputError(f"{path} is neither TorchScript nor a torch state dict: {load_error_reason(err)}") from None
    return I3DFeatures(i3d_from_state_dict(_unwrap_state_dict(obj)), resize, name=path.stem).to(device)


def random_i3d_detector(seed: int = 0, resize: str = "torch", device: str | torch.device = "cpu") -> torch.nn.Module:
    """Seeded random-weight I3D detector: a proxy FVD, useful for relative comparisons only."""
    return I3DFeatures(random_i3d(seed), resize, name=f"random_i3d_seed{seed}").to(device)


def load_c3d(path: str | os.PathLike, mean_path: str | os.PathLike | None = None,
             device: str | torch.device = "cpu") -> torch.nn.Module:
    """IS classifier: uint8 [B, 16, H, W, 3] -> probabilities [B, 101]."""
    path = Path(path)
    if not path.exists():
        raise missing_c3d(path)
    if is_torchscript(path):
        return StyleGANVC3D(load_torchscript(path, "StyleGAN-V's c3d_ucf101.pt"), name=path.stem).to(device)
    if path.suffix != ".npz":
        raise BadInputError(f"{path}: expected TorchScript (c3d_ucf101.pt) or TGAN's npz (conv3d_deepnetA_ucf.npz)")
    mean_path = Path(mean_path) if mean_path is not None else path.with_name("mean2.npz")
    if not mean_path.exists():
        raise missing_c3d(mean_path, "C3D mean clip")
    net = C3D()
    with np.load(path) as arrays:
        try:
            net.load_state_dict(chainer_to_state_dict(arrays))
        except (KeyError, RuntimeError) as err:
            raise BadInputError(f"{path} is not TGAN's C3D npz (conv1a/W ... fc8/b): {err}") from None
    with np.load(mean_path) as arrays:
        if "mean" not in arrays:
            raise BadInputError(f"{mean_path} has no 'mean' array (TGAN's mean2.npz)")
        try:
            mean = crop_mean(arrays["mean"])
        except ValueError as err:
            raise BadInputError(f"{mean_path}: {err}") from None
    return C3DProbs(net, mean, name=path.stem).to(device)
