"""UCF-101 preparation on a mini tree of real .avi files: content, labels, splits, failures, resume."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest

from hpdm_core.data.h5store import VideoStore
from hpdm_core.data.ucf101 import list_videos, prepare_ucf101, staging_dir
from hpdm_core.errors import BadInputError

CLASSES = ["ApplyEyeMakeup", "Basketball", "YoYo"]
# (class index, group, clip); fold 1 tests on groups 1-7 and trains on 8-25, as the real lists do.
VIDEOS = [(c, g, 1) for c in range(3) for g in (1, 8, 9)]
CORRUPT = "v_YoYo_g09_c01"


def frame_colours(video: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Left- and right-half colours of frame t: they change with the video and with time."""
    left = np.array([30 + 9 * video, 200 - 10 * t, 60 + 12 * t])
    right = np.array([220 - 8 * video, 40 + 10 * t, 150])
    return left, right


def video_length(video: int) -> int:
    return 8 + video  # 8..16 frames: different lengths catch offset mistakes


def write_avi(path: Path, video: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25, options={"qscale": "2"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for t in range(video_length(video)):
            left, right = frame_colours(video, t)
            rgb = np.empty((240, 320, 3), np.uint8)
            rgb[:, :160], rgb[:, 160:] = left, right
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def video_name(c: int, g: int, clip: int) -> str:
    return f"v_{CLASSES[c]}_g{g:02d}_c{clip:02d}"


def build_mini_ucf101(root: Path) -> Path:
    """root/UCF-101/<Class>/*.avi and root/ucfTrainTestlist/, with one corrupt file."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))
    train, test = [], []
    for video, (c, g, clip) in enumerate(VIDEOS):
        folder = root / "UCF-101" / CLASSES[c]
        folder.mkdir(parents=True, exist_ok=True)
        name = video_name(c, g, clip)
        if name == CORRUPT:
            (folder / f"{name}.avi").write_bytes(b"RIFF\x00\x10\x00\x00AVI LIST" + os.urandom(3000))
        else:
            write_avi(folder / f"{name}.avi", video)
        relative = f"{CLASSES[c]}/{name}.avi"
        (test if g <= 7 else train).append(relative if g <= 7 else f"{relative} {c + 1}")
    for n in (1, 2, 3):
        (lists / f"trainlist0{n}.txt").write_text("\n".join(train) + "\n")
        (lists / f"testlist0{n}.txt").write_text("\n".join(test) + "\n")
    return root


def video_index(name: str) -> int:
    return [video_name(*v) for v in VIDEOS].index(name)


@pytest.fixture(scope="module")
def mini_ucf(tmp_path_factory) -> Path:
    return build_mini_ucf101(tmp_path_factory.mktemp("ucf"))


@pytest.fixture(scope="module")
def prepared(mini_ucf, tmp_path_factory):
    """The whole mini set at 32x32, decoded by two worker processes."""
    out = tmp_path_factory.mktemp("prepared") / "ucf.h5"
    report = prepare_ucf101(mini_ucf, out, resolution=32, workers=2)
    return out, report


def test_list_videos_follows_split_lists(mini_ucf):
    train, names = list_videos(mini_ucf, "train", 1)
    test, _ = list_videos(mini_ucf, "test", 2)
    everything, _ = list_videos(mini_ucf, "all", 3)
    assert names == CLASSES
    assert [e.name for e in everything] == [e.name for e in train + test]
    assert {e.group for e in train} == {8, 9} and {e.group for e in test} == {1}
    for entry in everything:
        assert entry.label == CLASSES.index(entry.name.split("_")[1])
        assert entry.path.parent.name == CLASSES[entry.label]


def test_prepare_keeps_pattern_labels_and_groups(prepared):
    out, report = prepared
    store = VideoStore(out)
    store.verify()
    good = [video_name(*v) for v in VIDEOS if video_name(*v) != CORRUPT]
    assert report.failed and report.failed[0][0] == CORRUPT and len(report.failed) == 1
    assert report.failed[0][1]  # a reason is given
    assert report.decoded == len(good) == report.videos  # decoded: videos, not the one that failed
    assert sorted(store.names) == sorted(good)
    assert store.resolution == (32, 32) and store.class_names == CLASSES
    attrs = store.attrs
    assert attrs["split"] == "all" and attrs["fold"] == 1 and attrs["fps"] == 25.0 and attrs["completed"]
    assert json.loads(attrs["failed"])[0]["name"] == CORRUPT
    for i, name in enumerate(store.names):
        c, g, _ = VIDEOS[video_index(name)]
        assert store.labels[i] == c and store.groups[i] == g
        frames = store.video(i).astype(int)
        assert len(frames) == video_length(video_index(name))
        for t in (0, len(frames) - 1):
            left, right = frame_colours(video_index(name), t)
            # 320x240 -> 43x32, centre crop from column 5: the colour edge falls at column ~16.5;
            # mpeg4 at qscale 2 plus 4:2:0 chroma keep flat colours within a few levels.
            assert np.abs(frames[t, :, :13] - left).max() <= 10
            assert np.abs(frames[t, :, 20:] - right).max() <= 10
    assert not staging_dir(out).exists()
    store.close()


def test_fps_resampling_and_max_frames(mini_ucf, tmp_path):
    out = tmp_path / "half.h5"
    report = prepare_ucf101(mini_ucf, out, split="test", resolution=16, fps=12.5, max_frames=4, workers=1)
    store = VideoStore(out)
    assert report.videos == 3 and store.attrs["fps"] == 12.5 and store.attrs["split"] == "test"
    for i, name in enumerate(store.names):
        frames = store.video(i).astype(int)
        assert len(frames) == 4
        for k in range(4):  # 25 -> 12.5 fps keeps source frames 0, 2, 4, 6
            left, _ = frame_colours(video_index(name), 2 * k)
            assert np.abs(frames[k, :, :5] - left).max() <= 10
    store.close()


def _run_killed(src: Path, out: Path, phase: str, after: int, resolution: int = 32) -> int:
    """Run prepare in a subprocess that SIGKILLs itself once `after` videos of `phase` are done."""
    code = textwrap.dedent(f"""
        import os, signal
        from hpdm_core.data.ucf101 import prepare_ucf101
        def progress(phase, done, total):
            if phase == {phase!r} and done >= {after}:
                os.kill(os.getpid(), signal.SIGKILL)
        prepare_ucf101({str(src)!r}, {str(out)!r}, resolution={resolution}, workers=1, progress=progress)
    """)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode


def _same_content(a: Path, b: Path) -> None:
    sa, sb = VideoStore(a), VideoStore(b)
    assert sa.names == sb.names and (sa.labels == sb.labels).all() and (sa.groups == sb.groups).all()
    np.testing.assert_array_equal(sa.file["frames"][...], sb.file["frames"][...])
    sa.close()
    sb.close()


def test_sigkill_while_decoding_resumes_without_decoding_again(mini_ucf, prepared, tmp_path):
    out = tmp_path / "resumed.h5"
    assert _run_killed(mini_ucf, out, "decode", after=4) == -signal.SIGKILL
    assert not out.exists()  # nothing under the final name until the file is whole
    staged = [p for p in staging_dir(out).iterdir() if p.name != "args.json"]
    assert len(staged) == 4
    report = prepare_ucf101(mini_ucf, out, resolution=32, workers=1)
    assert report.reused == 4 and report.decoded == len(VIDEOS) - 1 - 4  # the corrupt one is no video
    assert [name for name, _ in report.failed] == [CORRUPT]
    _same_content(out, prepared[0])


def test_sigkill_while_packing_leaves_no_complete_looking_file(mini_ucf, prepared, tmp_path):
    out = tmp_path / "packed.h5"
    # One worker alternates decode and pack: killed while appending the 3rd video to OUT.tmp.
    assert _run_killed(mini_ucf, out, "pack", after=3) == -signal.SIGKILL
    assert not out.exists() and out.with_name(out.name + ".tmp").exists()
    report = prepare_ucf101(mini_ucf, out, resolution=32, workers=1)
    assert report.reused == 3 and report.decoded == len(VIDEOS) - 1 - 3
    _same_content(out, prepared[0])
    again = prepare_ucf101(mini_ucf, out, resolution=32, workers=1)  # already complete: nothing to do
    assert again.up_to_date and again.decoded == 0 and again.videos == report.videos


def test_resume_with_other_arguments_is_refused(mini_ucf, tmp_path):
    out = tmp_path / "mixed.h5"

    def stop_after_two(phase, done, total):
        if phase == "decode" and done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_ucf101(mini_ucf, out, resolution=32, progress=stop_after_two)
    with pytest.raises(BadInputError, match="--restart"):
        prepare_ucf101(mini_ucf, out, resolution=16)
    report = prepare_ucf101(mini_ucf, out, resolution=16, restart=True)
    assert report.decoded == len(VIDEOS) - 1 and VideoStore(out).resolution == (16, 16)


def test_bad_sources_are_clear_errors(mini_ucf, tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        list_videos(tmp_path / "nowhere")
    broken = build_mini_ucf101(tmp_path / "broken")
    (broken / "ucfTrainTestlist" / "testlist01.txt").unlink()
    with pytest.raises(BadInputError, match="testlist01.txt"):
        list_videos(broken, "all", 1)
    list_videos(broken, "train", 1)  # the train split does not need the test list
    (broken / "ucfTrainTestlist" / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Basketball\n")
    with pytest.raises(BadInputError, match="YoYo"):
        list_videos(broken, "train", 1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie holds no file any more


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
def test_sigkill_with_workers_takes_the_workers_along_and_a_rerun_recovers(mini_ucf, prepared, tmp_path):
    out, pids = tmp_path / "workers.h5", tmp_path / "pids.txt"
    code = textwrap.dedent(f"""
        import multiprocessing, os, signal
        from hpdm_core.data.ucf101 import prepare_ucf101
        def progress(phase, done, total):
            if phase == "decode" and done >= 2:
                open({str(pids)!r}, "w").write(" ".join(str(p.pid) for p in multiprocessing.active_children()))
                os.kill(os.getpid(), signal.SIGKILL)
        prepare_ucf101({str(mini_ucf)!r}, {str(out)!r}, resolution=32, workers=2, progress=progress)
    """)
    env = {**os.environ, "PYTHONPATH": f"{Path(__file__).resolve().parents[1]}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    # No pipes: orphaned workers would hold them open and keep run() waiting.
    killed = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert killed.returncode == -signal.SIGKILL
    workers = [int(p) for p in pids.read_text().split()]
    assert workers
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not any(_alive(p) for p in workers)  # the workers died with their parent
    finally:
        for pid in filter(_alive, workers):
            os.kill(pid, signal.SIGKILL)
    report = prepare_ucf101(mini_ucf, out, resolution=32, workers=2)
    assert report.videos == prepared[1].videos
    _same_content(out, prepared[0])


def test_rerun_recovers_from_a_stale_lock_on_the_tmp_file(mini_ucf, prepared, tmp_path):
    out = tmp_path / "locked.h5"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import h5py, time
        f = h5py.File({str(out) + ".tmp"!r}, "w")  # what an orphaned worker held: HDF5's lock on OUT.tmp
        print("locked", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        prepare_ucf101(mini_ucf, out, resolution=32, workers=1)
    finally:
        holder.kill()
        holder.wait()
    _same_content(out, prepared[0])


def test_styleganv_frames_are_what_its_conversion_script_writes():
    """Reference: StyleGAN-V's convert_videos_to_frames.py, as its lines run (torchvision's resize and centre
    crop written out, since torchvision is not a dependency), then the JPEG it saves read back."""
    import io

    from PIL import Image

    from hpdm_core.data.ucf101 import styleganv_frame

    frame = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    frame[:, :20] //= 3  # some structure for the JPEG to keep
    image = Image.fromarray(frame).resize((int(16 * 40 / 24), 16), Image.LANCZOS)  # shorter side -> 16
    left = int(round((image.size[0] - 16) / 2.0))
    image = image.crop((left, 0, left + 16, 16))
    saved = io.BytesIO()
    image.save(saved, format="JPEG", q=95)  # its call: Pillow has no `q`, so this is quality 75
    default = io.BytesIO()
    image.save(default, format="JPEG")
    assert saved.getvalue() == default.getvalue()
    expected = np.asarray(Image.open(io.BytesIO(saved.getvalue())).convert("RGB"))
    np.testing.assert_array_equal(styleganv_frame(frame, 16), expected)


def test_styleganv_preparation_is_recorded_and_resumes_only_with_it(mini_ucf, prepared, tmp_path):
    out = tmp_path / "sg.h5"
    report = prepare_ucf101(mini_ucf, out, resolution=32, workers=1, preparation="styleganv")
    store, area = VideoStore(out), VideoStore(prepared[0])
    assert store.attrs["preparation"] == "styleganv" and area.attrs["preparation"] == "area"
    assert json.loads(store.attrs["prepare_args"])["preparation"] == "styleganv"
    assert "preparation" not in json.loads(area.attrs["prepare_args"])  # files made before the option stay current
    a, b = store.video(0).astype(int), area.video(0).astype(int)
    assert a.shape == b.shape and 0 < np.abs(a - b).mean() < 20  # the same videos, other resampling and JPEG
    assert report.videos == prepared[1].videos
    with pytest.raises(BadInputError, match="unknown preparation"):
        prepare_ucf101(mini_ucf, tmp_path / "x.h5", resolution=32, preparation="bicubic")
