"""`prepare folder|images` on small real files: videos of every kind, classes, every caption form,
unreadable files skipped, resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from hpdm_core.data.folder import list_entries, match_captions, prepare_folder
from hpdm_core.data.h5store import VideoStore
from hpdm_core.data.ucf101 import staging_dir
from hpdm_core.data.video_io import write_video
from hpdm_core.errors import BadInputError

FRAMES = 8


def colour(video: int, t: int) -> np.ndarray:
    """Flat colour of frame t of video `video`: it changes with both (flat frames survive any codec)."""
    return np.array([40 + 25 * video, 200 - 12 * t, 90 + 10 * t])


def flat_video(video: int, frames: int = FRAMES, height: int = 36, width: int = 48) -> np.ndarray:
    return np.stack([np.broadcast_to(colour(video, t).astype(np.uint8), (height, width, 3)) for t in range(frames)])


def write_avi(path: Path, frames: np.ndarray) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25, options={"qscale": "2"})
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# name -> (video index for colours, class); "dogs/broken.mp4" is not a video
LAYOUT = {"cats/a.mp4": 0, "cats/b.gif": 1, "dogs/c": 2, "dogs/d.avi": 3}
BROKEN = "dogs/broken.mp4"


def build_tree(root: Path) -> Path:
    for name, video in LAYOUT.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith((".mp4", ".gif")):
            write_video(path, flat_video(video), fps=25)
        elif name.endswith(".avi"):
            write_avi(path, flat_video(video))
        else:  # a folder of numbered frames, named so that a text sort would put 10 before 2
            path.mkdir()
            for t, frame in enumerate(flat_video(video, frames=12)):
                Image.fromarray(frame).save(path / f"frame_{t + 1}.png")
    (root / BROKEN).write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    (root / "cats" / "b.txt").write_text("a gif of a cat, from its .txt  \n", encoding="utf-8")
    lines = [{"video": "cats/a.mp4", "caption": "a cat — ünïcode"},
             {"video": "dogs/c", "caption": "frames of a dog"},
             {"video": "ghost.mp4", "caption": "not there"}]
    (root / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    (root / "notes.md").write_text("not a video")
    Image.fromarray(flat_video(9, 1)[0]).save(root / "cats" / "a_thumbnail.jpg")  # beside videos: not frames
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return build_tree(tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "folder.h5"
    return out, prepare_folder(tree, out, resolution=16, workers=2)


def test_videos_classes_captions_and_skipped_file(prepared):
    out, report = prepared
    store = VideoStore(out)
    store.verify()
    assert store.names == list(LAYOUT)  # sorted relative paths; the broken file is left out
    assert store.class_names == ["cats", "dogs"] == report.classes
    assert store.labels.tolist() == [0, 0, 1, 1]
    assert store.captions == ["a cat — ünïcode", "a gif of a cat, from its .txt", "frames of a dog", ""]
    assert report.captioned == 3 and store.summary()["captioned"] == 3
    assert report.unmatched_captions == ["ghost.mp4"]
    assert [name for name, _ in report.failed] == [BROKEN] and report.failed[0][1]
    assert json.loads(store.attrs["failed"])[0]["name"] == BROKEN
    assert store.kind == "videos" and store.resolution == (16, 16) and store.attrs["source"] == "folder"
    for i, name in enumerate(store.names):
        frames = store.video(i).astype(int)
        assert len(frames) == (12 if name == "dogs/c" else FRAMES)
        for t in (0, len(frames) - 1):  # flat colours, within codec (4:2:0, gif palette) error
            assert np.abs(frames[t] - colour(LAYOUT[name], t)).max() <= 12, name
    assert not staging_dir(out).exists()
    store.close()


def test_rerun_is_up_to_date_unless_captions_change(tree, prepared, tmp_path):
    out, _ = prepared
    again = prepare_folder(tree, out, resolution=16, workers=1)
    assert again.up_to_date and again.decoded == 0 and again.captioned == 3
    copy = tmp_path / "tree"
    build_tree(copy)
    (copy / "dogs" / "d.txt").write_text("a dog from avi")
    first = prepare_folder(copy, tmp_path / "f.h5", resolution=16)
    assert not first.up_to_date and VideoStore(tmp_path / "f.h5").captions[3] == "a dog from avi"
    (copy / "dogs" / "d.txt").write_text("another caption")
    with pytest.raises(BadInputError, match="--overwrite"):
        prepare_folder(copy, tmp_path / "f.h5", resolution=16)
    changed = prepare_folder(copy, tmp_path / "f.h5", resolution=16, overwrite=True)
    assert not changed.up_to_date and VideoStore(tmp_path / "f.h5").captions[3] == "another caption"


def test_webvid_csv_captions(tree, tmp_path):
    csv = tmp_path / "results_2M_val.csv"
    csv.write_text('videoid,contentUrl,name\n'
                   'a,https://x/a.mp4,"a cat, in a csv"\n'
                   'd,https://x/d.mp4,a dog\n'
                   'zzz,https://x/zzz.mp4,missing\n', encoding="utf-8")
    entries, _, unmatched = list_entries(tree, captions=csv, path_column="videoid", caption_column="name")
    by_name = {e.name: e.caption for e in entries}
    # The file given replaces captions.jsonl; .txt files beside videos still fill the rest.
    assert by_name == {"cats/a.mp4": "a cat, in a csv", "cats/b.gif": "a gif of a cat, from its .txt",
                       "dogs/broken.mp4": "", "dogs/c": "", "dogs/d.avi": "a dog"}
    assert unmatched == ["zzz"]
    with pytest.raises(BadInputError, match="videoid, contentUrl, name"):
        list_entries(tree, captions=csv)  # default columns video/caption are not in this file


def test_caption_paths_match_exactly_first_and_ambiguous_names_do_not():
    names = ["x/clip.mp4", "y/clip.mp4", "y/other.avi", "frames/seq"]
    captions, unmatched = match_captions(names, [("x/clip.mp4", "1"), ("y/clip", "2"), ("clip", "3"),
                                                 ("other", "4"), ("./frames/seq", "5"), ("seq.mp4", "6")])
    assert captions == {"x/clip.mp4": "1", "y/clip.mp4": "2", "y/other.avi": "4", "frames/seq": "5"}
    assert unmatched == ["clip", "seq.mp4"]


def test_bad_caption_files_are_clear_errors(tree, tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"video": "cats/a.mp4", "caption": "ok"}\n{not json}\n')
    with pytest.raises(BadInputError, match="c.jsonl:2"):
        list_entries(tree, captions=bad)
    bad.write_text('{"video": "cats/a.mp4"}\n')
    with pytest.raises(BadInputError, match="caption"):
        list_entries(tree, captions=bad)
    with pytest.raises(BadInputError, match="does not exist"):
        list_entries(tree, captions=tmp_path / "none.jsonl")
    latin = tmp_path / "l.jsonl"
    latin.write_bytes('{"video": "a", "caption": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(BadInputError, match="UTF-8"):
        list_entries(tree, captions=latin)


def test_classes_on_only_when_every_video_is_in_a_folder(tmp_path):
    root = tmp_path / "mixed"
    (root / "sub").mkdir(parents=True)
    write_video(root / "top.mp4", flat_video(0, 3), fps=8)
    write_video(root / "sub" / "low.mp4", flat_video(1, 3), fps=8)
    entries, classes, _ = list_entries(root)
    assert classes == [] and [e.label for e in entries] == [-1, -1]
    with pytest.raises(BadInputError, match="top.mp4"):
        list_entries(root, classes=True)
    entries, classes, _ = list_entries(root / "sub", classes=False)
    assert classes == [] and entries[0].label == -1
    with pytest.raises(BadInputError, match="no images"):
        list_entries(root / "sub", images=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no videos"):
        list_entries(tmp_path / "empty")


def test_frame_folder_fps_and_max_frames(tree, tmp_path):
    out = tmp_path / "half.h5"
    prepare_folder(tree, out, resolution=8, fps=12.5, max_frames=3, frames_fps=25)
    store = VideoStore(out)
    frames = store.video(store.names.index("dogs/c")).astype(int)
    assert len(frames) == 3 and store.attrs["fps"] == 12.5
    for k in range(3):  # 25 -> 12.5 fps keeps frames 0, 2, 4 (numeric order: frame_2 before frame_10)
        assert np.abs(frames[k] - colour(LAYOUT["dogs/c"], 2 * k)).max() <= 2


def _run_killed(src: Path, out: Path, after: int) -> int:
    code = textwrap.dedent(f"""
        import os, signal
        from hpdm_core.data.folder import prepare_folder
        def progress(phase, done, total):
            if phase == "decode" and done >= {after}:
                os.kill(os.getpid(), signal.SIGKILL)
        prepare_folder({str(src)!r}, {str(out)!r}, resolution=16, workers=1, progress=progress)
    """)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode


def test_sigkill_then_resume_decodes_only_the_rest(tree, prepared, tmp_path):
    out = tmp_path / "resumed.h5"
    assert _run_killed(tree, out, after=2) == -signal.SIGKILL
    assert not out.exists() and len([p for p in staging_dir(out).iterdir() if p.name != "args.json"]) == 2
    sidecar = tree / "dogs" / "d.txt"
    sidecar.write_text("captioned while interrupted")  # captions change the file, not the decoded parts
    try:
        report = prepare_folder(tree, out, resolution=16, workers=1)
    finally:
        sidecar.unlink()
    # decoded counts videos written, not attempts: the unreadable file is among the failed
    assert report.reused == 2 and report.decoded == len(LAYOUT) - 2 and len(report.failed) == 1
    assert report.captioned == 4
    a, b = VideoStore(out), VideoStore(prepared[0])
    assert a.names == b.names and (a.labels == b.labels).all()
    assert a.captions == b.captions[:3] + ["captioned while interrupted"]
    np.testing.assert_array_equal(a.file["frames"][...], b.file["frames"][...])


def test_prepare_images(tmp_path):
    root = tmp_path / "imgs"
    for k, (cls, name) in enumerate([("apples", "a.png"), ("apples", "b.jpg"), ("pears", "c.webp"),
                                     ("pears", "d.png")]):
        (root / cls).mkdir(parents=True, exist_ok=True)
        size = (40, 30) if k % 2 else (30, 40)
        Image.new("RGB", size, tuple(int(v) for v in colour(k, 0))).save(root / cls / name, quality=95)
    (root / "pears" / "d.txt").write_text("a pear")
    (root / "pears" / "e.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    out = tmp_path / "images.h5"
    report = prepare_folder(root, out, resolution=8, images=True, workers=2)
    store = VideoStore(out)
    store.verify()
    assert store.kind == "images" and store.attrs["source"] == "images"
    assert store.names == ["apples/a.png", "apples/b.jpg", "pears/c.webp", "pears/d.png"]
    assert store.lengths.tolist() == [1, 1, 1, 1] and store.labels.tolist() == [0, 0, 1, 1]
    assert store.captions == ["", "", "", "a pear"] and report.captioned == 1
    assert [name for name, _ in report.failed] == ["pears/e.png"]
    for i in range(4):
        assert np.abs(store.video(i)[0].astype(int) - colour(i, 0)).max() <= 3


def test_cli_folder_reports_and_info_counts_captions(tree, tmp_path, monkeypatch, capsys):
    from test_cli_prepare import hpdm

    out = tmp_path / "cli.h5"
    code, stdout, stderr = hpdm(monkeypatch, capsys, "prepare", "folder", str(tree), "--out", str(out),
                                "--resolution", "16", "--workers", "1", "--max-frames", "4", "--json")
    result = json.loads(stdout)
    assert code == 0 and BROKEN in stderr and "skipped" in stderr and "ghost.mp4" in stderr
    assert "3 of 4 captioned" in stderr and result["captioned"] == 3 and result["classes"] == 2
    assert result["unmatched_captions"] == ["ghost.mp4"]
    code, stdout, _ = hpdm(monkeypatch, capsys, "info", str(out), "--json")
    summary = json.loads(stdout)
    assert code == 0 and summary["captioned"] == 3 and summary["kind"] == "videos" and summary["frames"] == 16
    code, _, stderr = hpdm(monkeypatch, capsys, "prepare", "folder", str(tree), "--out", str(tmp_path / "x.h5"),
                           "--captions", str(tmp_path / "missing.csv"))
    assert code == 2 and "does not exist" in stderr
    images = tmp_path / "imgs" / "a"
    images.mkdir(parents=True)
    Image.new("RGB", (12, 10), (10, 200, 30)).save(images / "x.png")
    code, stdout, _ = hpdm(monkeypatch, capsys, "prepare", "images", str(tmp_path / "imgs"), "--out",
                           str(tmp_path / "i.h5"), "--resolution", "8", "--workers", "1")
    assert code == 0
    code, stdout, _ = hpdm(monkeypatch, capsys, "info", str(tmp_path / "i.h5"), "--json")
    assert json.loads(stdout)["kind"] == "images" and json.loads(stdout)["videos"] == 1
