"""examples/t2v_report.py: prompts for seen and unseen pairs, and a score that real videos pass."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from hpdm_core.data.h5store import VideoStore
from hpdm_core.data.synthetic import make_synthetic

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "t2v_report.py"


def report(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_prompts_cover_seen_and_unseen_pairs_and_real_videos_score_right(tmp_path):
    data = make_synthetic(tmp_path / "cap.h5", num_videos=24, frames=8, resolution=32, seed=3, captions=True,
                          colours=3, shapes=3, holdout_pairs=2)
    done = report("prompts", data, tmp_path / "prompts.txt", "--per-seen", "1", "--per-unseen", "2")
    assert done.returncode == 0, done.stderr
    plan = json.loads((tmp_path / "prompts.json").read_text())
    assert len((tmp_path / "prompts.txt").read_text().splitlines()) == len(plan) == 7 + 2 * 2
    unseen = {(p["colour"], p["shape"]) for p in plan if not p["seen"]}
    store = VideoStore(data)
    assert unseen == {tuple(p) for p in json.loads(store.attrs["holdout_pairs"])}
    for p in plan:  # a prompt names its colour and (one word of) its shape
        assert p["colour"] in p["prompt"]

    # Real videos stand in for samples: every one must score its own colour and shape.
    names = store.class_names
    videos = np.stack([store.video(i) for i in range(6)])
    truth = [dict(zip(("colour", "shape"), names[k].split("_", 1)), prompt="x", seen=True) for k in store.labels[:6]]
    np.savez(tmp_path / "samples.npz", videos=videos)
    (tmp_path / "plan.json").write_text(json.dumps(truth))
    done = report("score", data, tmp_path / "samples.npz", tmp_path / "plan.json", "--json", tmp_path / "r.json",
                  "--grid", tmp_path / "grid.png", "--real", "6")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["seen"]["colour_right"] == result["seen"]["shape_right"] == 6
    assert result["real"]["colour_rate"] == 1.0 and (tmp_path / "grid.png").is_file()
