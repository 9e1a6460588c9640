"""Concurrent writers to one output (issue 25): one wins cleanly, the others exit 2 naming it, nothing is left."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hpdm_core.data.h5store import VideoStore
from test_cli_train import hpdm
from test_ucf101 import build_mini_ucf101

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}


def everything(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_second_writer_exits_2_naming_the_first_and_creates_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cs.h5"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from hpdm_core.files import lock_output
        with lock_output({str(out)!r}):
            print("locked", flush=True)
            time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = hpdm(capsys, monkeypatch, "prepare", "synthetic", "--out", out, "--num-videos", 2,
                            "--frames", 4, "--resolution", 16)
        assert code == 2 and f"{out} is being written by another hpdm process (pid {holder.pid})" in err, err
        src = build_mini_ucf101(tmp_path / "ucf")
        code, _, err = hpdm(capsys, monkeypatch, "prepare", "ucf101", src, "--out", out, "--resolution", 16,
                            "--workers", 1, "--max-frames", 2)
        assert code == 2 and f"(pid {holder.pid})" in err, err
        assert everything(tmp_path) == ["cs.h5.lock", "ucf"]  # no cs.h5, cs.h5.tmp or cs.h5.parts/
    finally:
        holder.send_signal(signal.SIGKILL)  # the OS drops a killed writer's lock; its lock file stays
        holder.wait()
    code, _, err = hpdm(capsys, monkeypatch, "prepare", "synthetic", "--out", out, "--num-videos", 2,
                        "--frames", 4, "--resolution", 16)
    assert code == 0, err
    assert everything(tmp_path) == ["cs.h5", "ucf"]


@pytest.mark.slow
def test_three_writers_at_once_one_wins_the_others_exit_2(tmp_path):
    out = tmp_path / "cs.h5"
    command = [sys.executable, "-m", "hpdm_cli", "prepare", "synthetic", "--out", str(out), "--num-videos", "64",
               "--frames", "8", "--resolution", "32"]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(3)]
    results = [(run.wait(), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2, 2], results
    for code, err in results:
        err = " ".join(err.split())
        assert code == 0 or "is being written by another hpdm process (pid" in err or "exists" in err, err
    assert everything(tmp_path) == ["cs.h5"] and len(VideoStore(out)) == 64
