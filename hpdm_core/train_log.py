"""The training log: RUN/metrics.jsonl, one JSON object per logged step (+ TensorBoard events)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

from hpdm_core import files


def _tensorboard_writer(log_dir: Path):
    """A SummaryWriter when tensorboard is installed, else None. Tensorboard's TF stub is forced:
    importing TensorFlow just to write scalars would cost seconds and flood stderr."""
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(log_dir))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a metrics.jsonl; a line cut short (a kill during the write) is skipped."""
    entries = []
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


class MetricsLog:
    """RUN/metrics.jsonl (+ TensorBoard events). On resume, entries past the resumed step are dropped:
    those steps will be trained again."""

    def __init__(self, run_dir: Path, resume_step: int, tensorboard: bool = True):
        self.path = run_dir / "metrics.jsonl"
        if self.path.is_file():
            kept = [json.dumps(m) for m in read_metrics(self.path) if m.get("step", 0) <= resume_step]
            files.atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self.tb = _tensorboard_writer(run_dir / "tensorboard") if tensorboard else None

    def write(self, metrics: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        if self.tb is not None:
            for key, value in metrics.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key.replace("loss_level_", "loss/level_"), value, metrics["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
