import numpy as np
import pytest
import torch

from hpdm_core.errors import BadInputError, MissingResourceError
from helpers import state_dict_to_chainer
from hpdm_core.metrics.c3d import C3D, C3DProbs, crop_mean, random_c3d
from hpdm_core.metrics.detectors import load_c3d


class _StyleGANVC3DSignature(torch.nn.Module):
    """What StyleGAN-V's c3d_ucf101.pt looks like from outside: uint8 [B, 3, 16, H, W] -> probabilities."""

    def __init__(self, probs: C3DProbs):
        super().__init__()
        self.probs = probs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probs(x.permute(0, 2, 3, 4, 1))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random weights written in every real format: TGAN's two npz files and a TorchScript file."""
    tmp = tmp_path_factory.mktemp("c3d")
    net = random_c3d(0)
    rng = np.random.default_rng(0)
    mean = rng.uniform(80, 120, (3, 16, 128, 171)).astype(np.float32)  # Sports-1M mean clip, BGR
    np.savez(tmp / "conv3d_deepnetA_ucf.npz", **state_dict_to_chainer(net.state_dict()))
    np.savez(tmp / "mean2.npz", mean=mean)
    probs = C3DProbs(net, crop_mean(mean))
    torch.jit.save(torch.jit.script(_StyleGANVC3DSignature(probs)), str(tmp / "c3d_ucf101.pt"))
    return tmp, probs


def test_architecture_needs_ceil_mode_pooling():
    net = C3D()
    assert net.fc6.in_features == 512 * 4 * 4 and net.fc8.out_features == 101
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 16, 112, 112)).shape == (1, 101)  # pool5: 2x7x7 -> 1x4x4 only with ceil


def test_preprocessing_is_tgans():
    mean = torch.zeros(3, 16, 112, 112)
    mean[0, :, 5, 7] = 10.0  # per pixel, per channel (BGR)
    probs = C3DProbs(C3D(), mean)
    red = torch.zeros(1, 16, 112, 112, 3, dtype=torch.uint8)
    red[..., 0] = 255
    x = probs.preprocess(red)
    scale = 128 / 127.5
    assert x[0, 2, 0, 0, 0].item() == pytest.approx(255 * scale)  # red lands in the last (BGR) channel
    assert x[0, 0, 0, 5, 7].item() == pytest.approx(-10.0) and x[0, 0, 0, 5, 8].item() == pytest.approx(0.0)
    small = torch.randint(0, 256, (1, 16, 2, 2, 3), dtype=torch.uint8)
    corners = probs.preprocess(small)  # resized to 112 with aligned corners: corners keep their values
    assert corners[0, :, :, -1, -1].flip(0).mul(127.5 / 128).round().to(torch.uint8).T.tolist() == small[0, :, -1, -1].tolist()


def test_every_c3d_format_gives_the_same_probabilities(weights):
    tmp, reference = weights
    videos = torch.randint(0, 256, (2, 16, 64, 64, 3), dtype=torch.uint8)
    expected = reference(videos)
    assert expected.shape == (2, 101)
    torch.testing.assert_close(expected.sum(1), torch.ones(2))
    assert expected.max() < 0.999  # not saturated: differences would show
    from_npz = load_c3d(tmp / "conv3d_deepnetA_ucf.npz")  # mean2.npz found beside it
    from_script = load_c3d(tmp / "c3d_ucf101.pt")
    torch.testing.assert_close(from_npz(videos), expected)
    torch.testing.assert_close(from_script(videos), expected)


def test_c3d_loader_errors(weights, tmp_path):
    tmp, _ = weights
    with pytest.raises(MissingResourceError, match="conv3d_deepnetA_ucf.npz.*mean2.npz.*`c3d`"):
        load_c3d(tmp_path / "c3d_ucf101.pt")
    lonely = tmp_path / "conv3d_deepnetA_ucf.npz"
    lonely.symlink_to(tmp / "conv3d_deepnetA_ucf.npz")
    with pytest.raises(MissingResourceError, match="mean2.npz"):
        load_c3d(lonely)
    np.savez(tmp_path / "bad.npz", foo=np.zeros(3))
    with pytest.raises(BadInputError, match="conv1a/W"):
        load_c3d(tmp_path / "bad.npz", mean_path=tmp / "mean2.npz")
