"""Each rule of the FVD / IS protocols (hpdm_core/metrics/fvd.py docstring), pinned with cheap stand-ins."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hpdm_core.data.h5store import VideoStore, VideoStoreWriter
from hpdm_core.errors import BadInputError
from hpdm_core.metrics import fvd as fvd_module
from hpdm_core.metrics.clips import RealClipChoice, choose_real_clips, fake_clips, read_real_clips
from hpdm_core.metrics.fvd import PROTOCOLS, Protocol, compute_is, evaluate, protocol_deviations
from hpdm_core.metrics.inception_score import inception_score, shuffled_rows
from hpdm_core.metrics.options import EvalOptions

# File order is not name order; "v_Apple_g02_c01" (5 frames) is too short for any clip here, and
# "v_Apple_g10_c01" (11 frames) covers a 6-frame clip with subsample 2 but not StyleGAN-V's 6 * 2 = 12.
NAMES = ["v_Zebra_g01_c01", "v_Apple_g02_c01", "v_apple_g01_c01", "v_Apple_g01_c01", "v_Bee_g01_c01", "v_Apple_g10_c01"]
LENGTHS = [20, 5, 30, 12, 16, 11]


def _write(path, lengths, names=None, size=8):
    """Video i: frame k holds the value i * 40 + k in pixel (0, 0, 0), so a clip tells where it came from."""
    with VideoStoreWriter(path, size, size) as writer:
        for i, length in enumerate(lengths):
            video = np.zeros((length, size, size, 3), np.uint8)
            video[:, 0, 0, 0] = i * 40 + np.arange(length)
            writer.append(video, label=0, name=names[i] if names else "")
        writer.finish(["a"], fps=8.0)
    return path


def _origin(clip):
    """(video index, start frame, frame step) of a clip written by `_write`."""
    marks = clip[:, 0, 0, 0].astype(int)
    return marks[0] // 40, marks[0] % 40, int(marks[1] - marks[0]) if len(marks) > 1 else 0


class MeanColour(torch.nn.Module):
    """Stand-in I3D: the mean colour of each half of the clip."""

    feature_dim, min_frames, name = 6, 1, "mean_colour"

    def forward(self, videos):
        half = max(videos.shape[1] // 2, 1)
        x = videos.float() / 255
        return torch.cat([x[:, :half].mean((1, 2, 3)), x[:, half:].mean((1, 2, 3))], dim=1)


class MarkerClassifier(torch.nn.Module):
    """Stand-in C3D: one-hot on the class written into pixel (0, 0, 1) of the first frame."""

    feature_dim, min_frames, name = 3, 1, "marker_classifier"

    def forward(self, videos):
        return torch.nn.functional.one_hot(videos[:, 0, 0, 0, 1].long(), 3).float()


@pytest.fixture
def stand_ins(monkeypatch):
    """MeanColour for both the random and the "real" I3D, so evaluate runs in milliseconds."""
    monkeypatch.setattr(fvd_module, "random_i3d_detector", lambda seed, resize, device: MeanColour())
    monkeypatch.setattr(fvd_module, "load_i3d", lambda path, resize, device: MeanColour())


# ---- which real clips ------------------------------------------------------------------------------

def test_real_clips_are_the_first_long_enough_videos_by_stored_name(tmp_path):
    store = VideoStore(_write(tmp_path / "real.h5", LENGTHS, NAMES))
    choice = choose_real_clips(store, num=4, frames=10, subsample=1, seed=3)
    # By name: Apple_g01 (3), Apple_g02 (1, too short), Apple_g10 (5), Bee (4), Zebra (0), apple (2).
    assert choice.videos.tolist() == [3, 5, 4, 0]
    assert choice.starts.tolist() == [2, 0, 1, 2]  # np.random.default_rng(3), one draw per clip in order
    assert (choice.eligible, choice.too_short, choice.repeated) == (5, 1, 0)
    clips = list(read_real_clips(store, choice, 10))
    assert [_origin(c) for c in clips] == [(3, 2, 1), (5, 0, 1), (4, 1, 1), (0, 2, 1)]
    strided = choose_real_clips(store, num=10, frames=6, subsample=2, seed=3)
    assert strided.videos.tolist() == [3, 4, 0, 2] and strided.too_short == 2  # 11 frames < 6 * 2
    assert strided.starts.tolist() == [1, 0, 1, 4]
    assert [_origin(c) for c in read_real_clips(store, strided, 6, 2)] == [(3, 1, 2), (4, 0, 2), (0, 1, 2), (2, 4, 2)]
    assert choose_real_clips(store, 4, 10, seed=4).videos.tolist() == [3, 5, 4, 0]  # the seed moves starts only


def test_real_clip_starts_are_uniform_over_every_start_that_fits(tmp_path):
    store = VideoStore(_write(tmp_path / "real.h5", [12]))
    starts = [int(choose_real_clips(store, 1, frames=10, seed=seed).starts[0]) for seed in range(40)]
    assert set(starts) == {0, 1, 2}  # 12 frames, clips of 10: random.randint(0, 2) in StyleGAN-V
    strided = {int(choose_real_clips(store, 1, frames=5, subsample=2, seed=seed).starts[0]) for seed in range(60)}
    assert strided == {0, 1, 2, 3}  # the clip covers 9 frames: randint(0, 12 - 10 + 2 - 1)


def test_repeating_real_videos_is_opt_in(tmp_path):
    store = VideoStore(_write(tmp_path / "real.h5", LENGTHS, NAMES))
    assert len(choose_real_clips(store, 9, 10)) == 5  # the protocol: fewer clips, never a repeat
    choice = choose_real_clips(store, 9, 10, seed=3, repeat=True)
    assert choice.videos.tolist() == [3, 5, 4, 0, 2, 3, 5, 4, 0]
    assert (choice.repeated, choice.most_per_video) == (4, 2)


def test_generated_clips_follow_stored_names_and_start_at_frame_0(tmp_path):
    _write(tmp_path / "fake.h5", [16, 16, 16], names=["sample_000002", "sample_000000", "sample_000001"])
    clips, count = fake_clips(tmp_path / "fake.h5", num=2, frames=10)
    assert count == 2 and [_origin(c) for c in clips] == [(1, 0, 1), (2, 0, 1)]
    with pytest.raises(BadInputError, match="need 18"):  # 9 * 2 frames, as StyleGAN-V asserts
        list(fake_clips(tmp_path / "fake.h5", num=1, frames=9, subsample=2)[0])


# ---- IS splits -------------------------------------------------------------------------------------

def test_is_shuffle_is_styleganv_randomstate_42():
    table = np.random.default_rng(0).dirichlet(np.ones(4), size=23)
    reference = table.copy()
    np.random.RandomState(42).shuffle(reference)  # what StyleGAN-V's compute_isv does in place
    np.testing.assert_array_equal(shuffled_rows(table, 42), reference)


def test_is_of_a_fixed_table_equals_the_hand_computed_value():
    # 20 one-hot rows, grouped by class: 10 of class 0, then 10 of class 1.
    grouped = np.eye(2)[np.arange(20) // 10]
    # RandomState(42) orders the rows 0 17 | 15 1 | 8 5 | 11 3 | 18 16 | 13 2 | 9 19 | 4 12 | 7 10 | 14 6:
    # eight of the ten pairs mix the classes (IS exp(log 2) = 2), two do not (IS 1).
    assert np.random.RandomState(42).permutation(20).tolist() == [0, 17, 15, 1, 8, 5, 11, 3, 18, 16, 13, 2, 9, 19,
                                                                   4, 12, 7, 10, 14, 6]
    mean, std = inception_score(grouped)
    assert mean == pytest.approx(1.8, abs=1e-12) and std == pytest.approx(0.4, abs=1e-12)
    assert inception_score(grouped, shuffle_seed=None) == pytest.approx((1.0, 0.0))  # in order: every pair alike


def test_compute_is_takes_the_clips_in_order_and_shuffles():
    clips = [np.zeros((16, 4, 4, 3), np.uint8) for _ in range(20)]
    for i, clip in enumerate(clips):
        clip[0, 0, 0, 1] = i // 10
    mean, std = compute_is(clips, MarkerClassifier(), batch_size=6)
    assert mean == pytest.approx(1.8, abs=1e-12) and std == pytest.approx(0.4, abs=1e-12)


# ---- comparable ------------------------------------------------------------------------------------

def _deviations(**overrides):
    facts = dict(proto=PROTOCOLS["styleganv"], num=2048, frames=16, subsample=1,
                 choice=RealClipChoice(np.arange(2048), np.zeros(2048, np.int64), 2048, 0), real_count=2048,
                 fake_count=2048, sizes=((256, 256), (256, 256)), scripted_i3d=True, with_is=True)
    return protocol_deviations(**{**facts, **overrides})


def test_every_protocol_rule_has_its_reason():
    assert _deviations() == [] and _deviations(proto=PROTOCOLS["tf"], scripted_i3d=False) == []
    cases = {
        "TorchScript I3D resizes": dict(proto=PROTOCOLS["tf"]),
        "FVD@512": dict(num=512, real_count=512, fake_count=512),
        "clips of 32 frames": dict(frames=32),
        "subsample 8:": dict(subsample=8),
        "only 100 real videos": dict(choice=RealClipChoice(np.arange(100), np.zeros(100), 100, 5), real_count=100),
        "real videos repeated": dict(choice=RealClipChoice(np.arange(2048) % 100, np.zeros(2048), 100, 0)),
        "only 2000 generated": dict(fake_count=2000),
        "at 256x256, generated ones at 128x128": dict(sizes=((256, 256), (128, 128))),
        "IS over 2000": dict(fake_count=2000),
        "IS on clips subsampled by 2": dict(subsample=2),
    }
    for needle, overrides in cases.items():
        reasons = _deviations(**overrides)
        assert any(needle in r for r in reasons), (needle, reasons)
    assert not any("IS" in r for r in _deviations(fake_count=2000, with_is=False))


def test_evaluate_is_comparable_only_when_every_rule_held(tmp_path, stand_ins, monkeypatch):
    monkeypatch.setitem(PROTOCOLS, "styleganv", Protocol("styleganv", num=4, frames=10, unbiased=False, resize="torch"))
    real = _write(tmp_path / "real.h5", LENGTHS, NAMES)
    (tmp_path / "i3d.pt").write_bytes(b"stand-in weights")
    videos = np.random.default_rng(0).integers(0, 256, (4, 12, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "fake.npz", videos=videos)
    result = evaluate(real, tmp_path / "fake.npz", EvalOptions(device="cpu", i3d=tmp_path / "i3d.pt", use_cache=False))
    assert result["comparable"] and result["warnings"] == [] and result["real_clips"] == result["fake_clips"] == 4
    np.savez(tmp_path / "small.npz", videos=videos[:, :, :4, :4])
    with pytest.warns(UserWarning) as caught:
        result = evaluate(real, tmp_path / "small.npz", EvalOptions(device="cpu", random_i3d_seed=0, num=6,
                                                                    use_cache=False))
    reasons = result["warnings"]
    assert not result["comparable"] and set(reasons) <= {str(w.message) for w in caught}
    for needle in ("random-weight I3D", "FVD@6", "only 5 real videos", "only 4 generated",
                   "at 8x8, generated ones at 4x4"):
        assert any(needle in r for r in reasons), (needle, reasons)
    # A --resolution that resizes breaks the rule (issue 25); one that matches both stored sizes resizes nothing.
    with pytest.warns(UserWarning, match="--resolution resizes"):
        assert not evaluate(real, tmp_path / "small.npz", EvalOptions(device="cpu", i3d=tmp_path / "i3d.pt",
                                                                      resolution=8, use_cache=False))["comparable"]
    assert evaluate(real, tmp_path / "fake.npz", EvalOptions(device="cpu", i3d=tmp_path / "i3d.pt", resolution=8,
                                                             use_cache=False))["comparable"]


def _ucf_like(path, split="all", preparation=None):
    """A real set that says it is UCF-101 (source, split, and the preparation when given)."""
    _write(path, LENGTHS, NAMES)
    import h5py

    with h5py.File(path, "a") as f:
        f.attrs["source"], f.attrs["split"] = "ucf101", split
        if preparation is not None:
            f.attrs["preparation"] = preparation
    return path


def test_results_carry_the_weights_hash_and_the_real_sets_provenance(tmp_path, stand_ins, monkeypatch):
    import hashlib

    from hpdm_core.metrics import detectors

    monkeypatch.setitem(PROTOCOLS, "styleganv", Protocol("styleganv", num=4, frames=10, unbiased=False, resize="torch"))
    monkeypatch.setitem(PROTOCOLS, "tf", Protocol("tf", num=4, frames=10, unbiased=True, resize="tf"))
    weights = tmp_path / "i3d.pt"
    weights.write_bytes(b"stand-in weights")
    sha = hashlib.sha256(b"stand-in weights").hexdigest()
    np.savez(tmp_path / "fake.npz", videos=np.random.default_rng(0).integers(0, 256, (4, 12, 8, 8, 3), np.uint8))
    fake = tmp_path / "fake.npz"

    real = _ucf_like(tmp_path / "ucf.h5", preparation="styleganv")
    result = evaluate(real, fake, EvalOptions(device="cpu", i3d=weights, use_cache=False))
    assert result["comparable"] and result["detector_sha256"] == sha
    assert result["detector_weights"] == "no documented hash to check it against"  # reported, no verdict
    assert result["real_data"] | {"path": None} == {"path": None, "source": "ucf101", "split": "all", "fold": 0,
                                                    "preparation": "styleganv", "videos": 6, "resolution": [8, 8]}
    assert "StyleGAN-V's fvd2048_16f" in result["comparable_with"]
    tf = evaluate(real, fake, EvalOptions(device="cpu", i3d=weights, protocol="tf", use_cache=False))
    assert "hpdm" in tf["comparable_with"] and "not those of any published TF-FVD table" in tf["comparable_with"]

    monkeypatch.setitem(detectors.KNOWN_WEIGHTS, sha, ("an ImageNet-inflated I3D", False))
    with pytest.warns(UserWarning, match="the I3D weights are an ImageNet-inflated I3D, not the TF-Hub I3D"):
        assert not evaluate(real, fake, EvalOptions(device="cpu", i3d=weights, use_cache=False))["comparable"]
    monkeypatch.setitem(detectors.KNOWN_WEIGHTS, sha, ("the TF-Hub I3D", True))
    assert evaluate(real, fake, EvalOptions(device="cpu", i3d=weights,
                                            use_cache=False))["detector_weights"] == "the TF-Hub I3D"

    for path, split, preparation, needle in ((tmp_path / "train.h5", "train", "styleganv", "train split"),
                                             (tmp_path / "old.h5", "all", None, "prepared with 'area' resizing")):
        with pytest.warns(UserWarning, match=needle):
            result = evaluate(_ucf_like(path, split, preparation), fake, EvalOptions(device="cpu", i3d=weights,
                                                                                     use_cache=False))
        assert not result["comparable"]
    assert evaluate(tmp_path / "old.h5", fake, EvalOptions(device="cpu", i3d=weights, protocol="tf",
                                                           use_cache=False))["comparable"]


def test_documented_hashes_are_well_formed():
    from hpdm_core.metrics.detectors import KNOWN_WEIGHTS

    assert all(len(sha) == 64 and int(sha, 16) >= 0 for sha in KNOWN_WEIGHTS)
    assert [tfhub for _, tfhub in KNOWN_WEIGHTS.values()].count(True) == 1


def test_repeated_real_videos_warn_and_are_not_comparable(tmp_path, stand_ins):
    real = _write(tmp_path / "real.h5", LENGTHS, NAMES)
    np.savez(tmp_path / "fake.npz", np.zeros((9, 10, 8, 8, 3), np.uint8))
    with pytest.warns(UserWarning, match=r"real videos repeated: 9 clips from 5 videos \(up to 2 per video\)"):
        result = evaluate(real, tmp_path / "fake.npz", EvalOptions(device="cpu", random_i3d_seed=0, num=9, frames=10,
                                                                   use_cache=False, repeat_real=True))
    assert result["real_clips"] == 9 and result["real_clips_repeated"] == 4 and not result["comparable"]
    with pytest.warns(UserWarning, match="only 5 real videos have the 10 frames"):
        result = evaluate(real, tmp_path / "fake.npz", EvalOptions(device="cpu", random_i3d_seed=0, num=9, frames=10,
                                                                   use_cache=False))
    assert result["real_clips"] == 5 and result["real_clips_repeated"] == 0


def test_cli_lists_every_reason_in_json_and_table(tmp_path, stand_ins):
    from hpdm_cli.app import app

    real = _write(tmp_path / "real.h5", LENGTHS, NAMES)
    np.savez(tmp_path / "fake.npz", np.zeros((9, 10, 8, 8, 3), np.uint8))
    args = ["eval-fvd", "--real", str(real), "--fake", str(tmp_path / "fake.npz"), "--random-i3d", "0", "--num", "9",
            "--frames", "10", "--no-cache", "--device", "cpu", "--repeat-real"]
    result = CliRunner().invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["comparable"] is False and report["real_clips_repeated"] == 4
    assert any("real videos repeated" in r for r in report["warnings"]) and len(report["warnings"]) == 4
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0
    flat = " ".join(table.stdout.split())
    for needle in ("random-weight", "FVD@9", "clips of 10 frames", "real videos repeated"):
        assert needle in flat, needle
