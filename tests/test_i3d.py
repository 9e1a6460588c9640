import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hpdm_core.errors import BadInputError, MissingResourceError
from hpdm_core.metrics.detectors import load_i3d
from helpers import StyleGANVSignature
from hpdm_core.metrics.i3d import I3DFeatures, InceptionI3d, random_i3d, same_padding
from hpdm_core.metrics.resize import resize_bilinear_tf_legacy, resize_frames


def test_state_dict_has_the_pytorch_i3d_layout():
    state = InceptionI3d().state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
    assert shapes["Conv3d_2c_3x3.bn.running_var"] == (192,)
    assert shapes["Mixed_3b.b1b.conv3d.weight"] == (128, 96, 3, 3, 3)
    assert shapes["Mixed_4f.b3b.conv3d.weight"] == (128, 528, 1, 1, 1)
    assert shapes["Mixed_5c.b2b.conv3d.weight"] == (128, 48, 3, 3, 3)
    assert shapes["logits.conv3d.weight"] == (400, 1024, 1, 1, 1) and shapes["logits.conv3d.bias"] == (400,)
    assert "Conv3d_1a_7x7.conv3d.bias" not in shapes and "logits.bn.weight" not in shapes
    # pytorch-i3d's InceptionI3d(400) has exactly these 12,697,264 weights (batch-norm scales included).
    learned = [v for k, v in state.items() if "running" not in k and "num_batches" not in k]
    assert sum(v.numel() for v in learned) == 12_697_264
    assert all(m.eps == 1e-3 for m in InceptionI3d().modules() if isinstance(m, torch.nn.BatchNorm3d))


@pytest.mark.parametrize("size,kernel,stride", [(224, 7, 2), (9, 7, 2), (112, 3, 2), (5, 3, 2), (7, 2, 2), (10, 3, 1)])
def test_same_padding_is_tensorflows(size, kernel, stride):
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    assert same_padding(size, kernel, stride) == (total // 2, total - total // 2)


def test_feature_shapes_and_minimum_frames():
    net = random_i3d(0)
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 9, 32, 32)).shape == (2, 400)
        assert net.features(torch.zeros(1, 3, 16, 224, 224)).shape == (1, 1024, 2, 7, 7)
        with pytest.raises(RuntimeError):
            net(torch.zeros(1, 3, 8, 32, 32))  # one time step left: the 2-frame pool has nothing to pool


def test_forward_is_mean_over_time_of_frame_logits():
    net = random_i3d(1)
    x = torch.rand(1, 3, 17, 32, 32) * 2 - 1
    with torch.no_grad():
        per_step = net.frame_logits(x)
        assert per_step.shape == (1, 400, 2)
        torch.testing.assert_close(net(x), per_step.mean(2))


def test_legacy_tf_resize_by_hand():
    x = torch.tensor([[0.0, 10.0]])  # one row, two columns -> four columns
    # src = dst * in / out = 0, .5, 1, 1.5 -> clamped neighbour at the border, no half-pixel shift
    torch.testing.assert_close(resize_bilinear_tf_legacy(x, (1, 4)), torch.tensor([[0.0, 5.0, 10.0, 10.0]]))
    torch_mode = resize_frames(x.view(1, 1, 1, 1, 2), (1, 4), "torch").flatten()
    assert not torch.allclose(torch_mode, torch.tensor([0.0, 5.0, 10.0, 10.0]))


TF_RESIZE = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    data = np.load(sys.argv[1])
    out = {}
    for key in data.files:
        out[key] = tf.compat.v1.image.resize_bilinear(data[key], (224, 224), align_corners=False,
                                                        half_pixel_centers=False).numpy()
    np.savez(sys.argv[2], **out)
""")


def test_legacy_resize_matches_tensorflow(tmp_path):
    pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    frames = {"up": rng.integers(0, 256, (2, 64, 80, 3)).astype(np.float32),
              "down": rng.integers(0, 256, (1, 256, 300, 3)).astype(np.float32)}
    np.savez(tmp_path / "in.npz", **frames)
    proc = subprocess.run([sys.executable, "-c", TF_RESIZE, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = np.load(tmp_path / "out.npz")
    for key, value in frames.items():
        ours = resize_bilinear_tf_legacy(torch.from_numpy(value).permute(0, 3, 1, 2), (224, 224))
        np.testing.assert_allclose(ours.permute(0, 2, 3, 1).numpy(), expected[key], atol=1e-4)
        half_pixel = F.interpolate(torch.from_numpy(value).permute(0, 3, 1, 2), (224, 224), mode="bilinear")
        assert np.abs(half_pixel.permute(0, 2, 3, 1).numpy() - expected[key]).max() > 1.0


def test_every_i3d_format_gives_the_same_features(tmp_path):
    net = random_i3d(3)
    videos = torch.randint(0, 256, (1, 9, 24, 32, 3), dtype=torch.uint8)
    reference = I3DFeatures(net, "torch")(videos)
    # pytorch-i3d's file: a plain state dict without batch-norm counters (it predates them).
    old_style = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(old_style, tmp_path / "i3d_pretrained_400.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in old_style.items()}}, tmp_path / "wrapped.pt")
    # StyleGAN-V's TorchScript, with its call signature.
    torch.jit.save(torch.jit.script(StyleGANVSignature(net)), str(tmp_path / "i3d_torchscript.pt"))
    for name in ("i3d_pretrained_400.pt", "wrapped.pt"):
        loaded = load_i3d(tmp_path / name, resize="torch")
        assert isinstance(loaded, I3DFeatures)
        for key, value in net.state_dict().items():
            if not key.endswith("num_batches_tracked"):
                assert torch.equal(loaded.net.state_dict()[key], value), key
    scripted = load_i3d(tmp_path / "i3d_torchscript.pt", resize="tf")  # TorchScript resizes by itself
    torch.testing.assert_close(scripted(videos), reference, atol=1e-4, rtol=1e-5)
    assert reference.abs().max() > 0.5


def test_loader_errors(tmp_path):
    with pytest.raises(MissingResourceError, match="i3d_torchscript.pt.*i3d_pretrained_400.pt.*`i3d`"):
        load_i3d(tmp_path / "nope.pt")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(BadInputError, match="pytorch-i3d layout"):
        load_i3d(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError):
        load_i3d(tmp_path / "junk.pt")
