import os

import numpy as np
import pytest
import torch

from hpdm_core.data.h5store import VideoStore, VideoStoreWriter
from hpdm_core.errors import BadInputError, MissingResourceError
from hpdm_core.metrics import fvd as fvd_module
from helpers import state_dict_to_chainer
from hpdm_core.metrics.c3d import random_c3d
from hpdm_core.metrics.frechet import cache_file, frechet_distance
from hpdm_core.metrics.clips import fake_clips, real_clips
from hpdm_core.metrics.fvd import compute_fvd, evaluate
from hpdm_core.metrics.options import EvalOptions
from hpdm_core.metrics.i3d import I3DFeatures, random_i3d
from hpdm_core.metrics.inception_score import inception_score


def _write_store(path, lengths, size=32, seed=0):
    """Videos whose frame k of video i is filled with value (i * 20 + k) % 256 in channel 0."""
    rng = np.random.default_rng(seed)
    with VideoStoreWriter(path, size, size) as writer:
        for i, length in enumerate(lengths):
            video = rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8)
            video[..., 0, 0, 0] = (i * 20 + np.arange(length)) % 256
            writer.append(video, label=i % 3)
        writer.finish(["a", "b", "c"], fps=8.0)
    return path


class MeanColour(torch.nn.Module):
    """A cheap stand-in detector: mean colour of the first and second half of the clip."""

    feature_dim, min_frames, name = 6, 1, "mean_colour"

    def forward(self, videos):
        half = videos.shape[1] // 2
        x = videos.float() / 255
        return torch.cat([x[:, :half].mean((1, 2, 3)), x[:, half:].mean((1, 2, 3))], dim=1)


@pytest.fixture
def small_i3d(monkeypatch):
    """The seeded random I3D without the 224x224 resize, so tests run on 32x32 frames."""
    monkeypatch.setattr(fvd_module, "random_i3d_detector",
                        lambda seed, resize, device: I3DFeatures(random_i3d(seed), resize=None, name="random_i3d"))


def test_real_clips_are_consecutive_one_per_video_and_skip_short_videos(tmp_path):
    store = VideoStore(_write_store(tmp_path / "real.h5", [20, 5, 30, 12]))
    clips, count, skipped = real_clips(store, num=6, frames=10, subsample=1, seed=3)
    clips = list(clips)
    assert count == 3 and skipped == 1 and all(c.shape == (10, 32, 32, 3) for c in clips)
    markers = [c[:, 0, 0, 0].astype(int) for c in clips]
    assert all(np.all(np.diff(m) % 256 == 1) for m in markers)  # consecutive frames
    assert [m[0] // 20 for m in markers] == [0, 2, 3]  # every long video once, in name order
    again = [c[:, 0, 0, 0].astype(int).tolist() for c in real_clips(store, 6, 10, 1, seed=3)[0]]
    assert again == [m.tolist() for m in markers]
    strided = next(real_clips(store, 1, 5, subsample=3, seed=0)[0])
    assert np.all(np.diff(strided[:, 0, 0, 0].astype(int)) == 3)
    with pytest.raises(BadInputError, match="no video has"):
        real_clips(store, 2, frames=40)


def test_fake_clips_from_npz_folder_and_h5(tmp_path):
    videos = np.random.default_rng(0).integers(0, 256, (3, 12, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "fake.npz", videos=videos)
    clips, count = fake_clips(tmp_path / "fake.npz", num=2, frames=9)
    got = list(clips)
    assert count == 2 and np.array_equal(got[1], videos[1, :9])
    _write_store(tmp_path / "fake.h5", [12, 12])
    clips, count = fake_clips(tmp_path / "fake.h5", num=5, frames=9)
    assert count == 2 and [c.shape for c in clips] == [(9, 32, 32, 3)] * 2
    folder = tmp_path / "videos"
    folder.mkdir()
    from hpdm_core.data.video_io import write_video

    for i in range(2):
        write_video(folder / f"{i}.gif", videos[i], fps=8)
    clips, count = fake_clips(folder, num=4, frames=9)
    clips = list(clips)
    assert count == 2 and clips[0].shape == (9, 16, 16, 3)
    with pytest.raises(BadInputError, match="has 12 frames"):
        list(fake_clips(tmp_path / "fake.npz", num=2, frames=16)[0])


def test_compute_fvd_uses_the_protocol_covariance():
    rng = np.random.default_rng(0)
    real = [rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8) for _ in range(12)]
    fake = [np.clip(r.astype(int) + 40, 0, 255).astype(np.uint8) for r in real[:10]]
    detector = MeanColour()
    feats = lambda clips: detector(torch.from_numpy(np.stack(clips))).double().numpy()  # noqa: E731
    a, b = feats(real), feats(fake)
    for protocol, ddof in (("styleganv", 0), ("tf", 1)):
        expected = frechet_distance(a.mean(0), np.cov(a, rowvar=False, ddof=ddof),
                                    b.mean(0), np.cov(b, rowvar=False, ddof=ddof))
        assert compute_fvd(real, fake, detector, protocol=protocol, batch_size=5) == pytest.approx(expected, rel=1e-6)
    assert compute_fvd(real, real, detector) == pytest.approx(0.0, abs=1e-9)


def test_inception_score_known_values():
    one_hot = np.eye(5)[np.arange(50) % 5]
    mean, std = inception_score(one_hot, splits=10, shuffle_seed=None)  # every split holds each class once
    assert mean == pytest.approx(5.0) and std == pytest.approx(0.0, abs=1e-12)
    same = np.tile(np.array([[0.2, 0.3, 0.5]]), (20, 1))
    assert inception_score(same, splits=10)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        inception_score(one_hot[:5], splits=10)


def test_evaluate_caches_real_statistics(tmp_path, small_i3d, monkeypatch):
    monkeypatch.setenv("HPDM_CACHE", str(tmp_path / "cache"))
    real = _write_store(tmp_path / "real.h5", [12, 14, 10, 16, 11])
    fake = tmp_path / "fake.npz"
    np.savez(fake, np.random.default_rng(1).integers(0, 256, (4, 9, 32, 32, 3), dtype=np.uint8))
    kwargs = dict(random_i3d_seed=0, num=4, frames=9, batch_size=2, device="cpu")
    with pytest.warns(UserWarning, match="random-weight I3D"):
        first = evaluate(real, fake, EvalOptions(**kwargs))
    assert first["proxy"] and not first["comparable"] and not first["real_stats_cached"]
    assert first["cache_file"].startswith(str(tmp_path / "cache" / "fvd")) and np.isfinite(first["fvd"])
    with pytest.warns(UserWarning):
        second = evaluate(real, fake, EvalOptions(**kwargs))
    assert second["real_stats_cached"] and second["fvd"] == first["fvd"]
    with pytest.warns(UserWarning):
        reseeded = evaluate(real, fake, EvalOptions(**{**kwargs, "seed": 1}))
    assert not reseeded["real_stats_cached"] and reseeded["cache_file"] != first["cache_file"]
    key = lambda protocol, **kw: cache_file("cache", fvd_module.real_stats_fields(  # noqa: E731
        real, "d", fvd_module.PROTOCOLS[protocol], **{**dict(num=4, frames=9, subsample=1, resolution=None, seed=0), **kw}))
    assert len({key("styleganv"), key("tf"), key("styleganv", num=5), key("styleganv", frames=10),
                key("styleganv", subsample=2), key("styleganv", resolution=64)}) == 6
    before = key("styleganv")
    os.utime(real, ns=(0, 0))  # a rewritten real file must not reuse old statistics
    assert key("styleganv") != before
    cached = np.load(first["cache_file"])
    assert int(cached["count"]) == 4 and cached["outer"].shape == (400, 400)


def test_evaluate_warns_when_not_comparable_and_rejects_short_clips(tmp_path, small_i3d):
    real = _write_store(tmp_path / "real.h5", [12, 12, 12])
    fake = tmp_path / "fake.npz"
    np.savez(fake, np.zeros((3, 12, 32, 32, 3), np.uint8))
    with pytest.warns(UserWarning, match="only 3 generated videos"):
        result = evaluate(real, fake, EvalOptions(device="cpu", random_i3d_seed=0, num=5, frames=9, use_cache=False))
    assert any("not comparable" in w for w in result["warnings"]) and result["fake_clips"] == 3
    with pytest.raises(BadInputError, match="at least 9 frames"):
        evaluate(real, fake, EvalOptions(device="cpu", random_i3d_seed=0, num=3, frames=8, use_cache=False))
    with pytest.raises(MissingResourceError, match="i3d_torchscript.pt.*deepmind/i3d-kinetics-400/1.*`i3d`"):
        evaluate(real, fake, EvalOptions(device="cpu", num=3, frames=9, use_cache=False))


def test_evaluate_with_c3d_reports_inception_score(tmp_path, small_i3d, monkeypatch):
    net = random_c3d(0)
    np.savez(tmp_path / "conv3d_deepnetA_ucf.npz", **state_dict_to_chainer(net.state_dict()))
    np.savez(tmp_path / "mean2.npz", mean=np.full((3, 16, 128, 171), 100.0, np.float32))
    recorded = []

    def recording_load_c3d(path, mean_path=None, device="cpu"):
        classifier = fvd_module.__dict__["_real_load_c3d"](path, mean_path, device)
        classifier.register_forward_hook(lambda module, args, out: recorded.append(out))
        return classifier

    monkeypatch.setitem(fvd_module.__dict__, "_real_load_c3d", fvd_module.load_c3d)
    monkeypatch.setattr(fvd_module, "load_c3d", recording_load_c3d)
    real = _write_store(tmp_path / "real.h5", [16] * 3)
    videos = np.random.default_rng(2).integers(0, 256, (10, 16, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "fake.npz", videos=videos)
    with pytest.warns(UserWarning):
        result = evaluate(real, tmp_path / "fake.npz", EvalOptions(
            random_i3d_seed=0, c3d=tmp_path / "conv3d_deepnetA_ucf.npz", num=10, frames=16, batch_size=5,
            use_cache=False, device="cpu"))
    probs = torch.cat(recorded).numpy()
    assert probs.shape == (10, 101)
    expected = inception_score(probs, 10)
    assert result["is_mean"] == pytest.approx(expected[0]) and result["is_std"] == pytest.approx(expected[1])
    # What the score was computed from: C3D's softmax over 101 classes, different for different videos.
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(probs, probs[0])
    with pytest.raises(BadInputError, match="C3D needs clips of 16 frames"):
        evaluate(real, tmp_path / "fake.npz", EvalOptions(random_i3d_seed=0, c3d=tmp_path / "conv3d_deepnetA_ucf.npz",
                                                          num=10, frames=9, use_cache=False, device="cpu"))
