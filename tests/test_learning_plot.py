"""benchmarks/learning.py's plot: written with matplotlib, a clear message without it."""

import importlib.util
import sys
from pathlib import Path

import pytest

from hpdm_core.errors import MissingResourceError

ROWS = [{"step": 300, "accuracy": 0.5, "fd": 90.0, "grain": 0.1, "shape_iou": 0.6, "shape_right": 0.25,
         "acceleration": 4.0},
        {"step": 600, "accuracy": 0.9, "fd": 60.0, "grain": 0.05, "shape_iou": 0.7, "shape_right": 0.5,
         "acceleration": 2.0}]
REAL = {"accuracy": 1.0, "fd": 35.0, "grain": 0.022, "shape_iou": 0.99, "shape_right": 1.0, "acceleration": 0.28}


def load_benchmark():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "learning.py"
    spec = importlib.util.spec_from_file_location("learning_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = load_benchmark().plot_learning(ROWS, REAL, tmp_path / "curve.png", "two checkpoints")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]  # no temporary file left


def test_without_matplotlib_the_message_names_the_extra(tmp_path, monkeypatch):
    benchmark = load_benchmark()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(MissingResourceError, match=r'pip install "hpdm\[plots\]"'):
        benchmark.plot_learning(ROWS, REAL, tmp_path / "curve.png", "")
    assert not (tmp_path / "curve.png").exists()
