"""A learning curve of the `tiny` preset: what the model has learned, measured as it trains.

    python benchmarks/learning.py                       # synthetic set, 600 steps, scores every 200
    python benchmarks/learning.py --steps 1600 --every 400 --samples 32 --out /tmp/learning

At each checkpoint the EMA model samples `--samples` videos (classes cycling) with the preset's
sampler, and a classifier trained on the same data file (`hpdm train-classifier`, trained once and
kept) scores them: the accuracy of the requested class and the Fréchet distance in its features
against the held-out real videos. Each is printed next to the real data's own figure (the held-out
real videos' accuracy; the FD between two disjoint real sets of the same size), and with the label
gap from metrics.jsonl (loss with wrong labels minus loss with true labels). On the synthetic set it
also prints the share of generated videos whose object (the requested class's colour) is visible in
every frame (`synthetic.object_presence`; every real video passes). Everything is kept in --out: run
it again and finished parts are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpdm_core.config import apply_overrides, preset  # noqa: E402
from hpdm_core.data.h5store import VideoStore  # noqa: E402
from hpdm_core.data.synthetic import make_synthetic, object_presence  # noqa: E402
from hpdm_core.metrics.classifier import (classifier_scores, heldout_videos, load_classifier,  # noqa: E402
                                          train_classifier)
from hpdm_core.sampling import generate  # noqa: E402
from hpdm_core.training import Trainer  # noqa: E402


def to_uint8(videos: torch.Tensor) -> np.ndarray:
    """[N, C, F, H, W] in [-1, 1] -> uint8 [N, F, H, W, 3]."""
    return ((videos.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 4, 1).numpy()


def real_reference(classifier, data: Path, count: int) -> dict:
    """The real data's own scores: held-out accuracy, and the FD of `count` training videos against
    `count` held-out ones (the floor a perfect generator reaches with this many samples)."""
    held_videos, held_labels = heldout_videos(classifier, data)
    held_videos = list(held_videos)
    store = VideoStore(data)
    held = set(int(i) for i in classifier.heldout)
    train = [i for i in range(len(store)) if i not in held][:count]
    train_videos = [store.video(i)[:classifier.frames] for i in train]
    own = classifier_scores(classifier, train_videos, store.labels[train], held_videos[:count], held_labels[:count])
    full = classifier_scores(classifier, held_videos, held_labels)
    return {"accuracy": full["accuracy"], "fd": own["fd"], "held_videos": held_videos, "held_labels": held_labels}


def label_gaps(run_dir: Path, step: int) -> dict:
    """The last label gap logged at or before `step`."""
    gaps = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["step"] <= step and "label_gap_sigma_8" in entry:
            gaps = {k: v for k, v in entry.items() if k.startswith("label_gap")}
            gaps["loss"] = [entry[k] for k in sorted(entry) if k.startswith("loss_level_")]
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_learning"))
    parser.add_argument("--data", type=Path, help="dataset file (default: a synthetic set made in --out)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--sample-steps", type=int, help="sampler steps at level 0 (default: the preset's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    data = args.data or args.out / "synthetic.h5"
    if not data.exists():
        make_synthetic(data, classes=preset("tiny").model.num_classes)  # the quickstart's set
    clf_path = args.out / "classifier.pt"
    if not clf_path.exists():
        summary = train_classifier(data, clf_path)
        print(f"classifier: held-out accuracy {summary['heldout_accuracy']:.3f} in {summary['seconds']:.0f} s")
    classifier = load_classifier(clf_path)
    real = real_reference(classifier, data, args.samples)

    cfg = apply_overrides(preset("tiny"), [f"train.steps={args.steps}", f"train.checkpoint_every={args.every}",
                                           f"train.probe_every={args.every}"] + args.overrides)
    cfg.data.path = str(data)
    run_dir = args.out / "run"
    trainer = Trainer(cfg.validate(), run_dir, device="cpu", tensorboard=False)
    trainer.resume()
    options = cfg.sample.replace(steps=args.sample_steps)
    labels = torch.arange(args.samples) % cfg.model.num_classes

    print(f"real data: accuracy {real['accuracy']:.3f}, FD of {args.samples} vs {args.samples} real videos "
          f"{real['fd']:.2f}")
    header = (f"{'step':>6} {'loss per level':>22} {'gap@2':>8} {'gap@8':>8} {'gap@30':>8} "
              f"{'accuracy':>9} {'/ real':>7} {'FD':>8} {'/ real':>7} {'object':>7} {'train s':>8} {'sample s':>8}")
    print(header)
    # Videos whose object is visible in every frame: the synthetic set's class colours (else nan).
    synthetic = VideoStore(data).attrs.get("source") == "synthetic"
    rows = []
    for step in range(args.every, args.steps + 1, args.every):
        started = time.perf_counter()
        trainer.fit(stop_at=step)
        trained = time.perf_counter() - started
        started = time.perf_counter()
        result = generate(trainer.ema.model, labels, seed=0, options=options, batch_size=8)
        sampled = time.perf_counter() - started
        videos = to_uint8(result.videos)
        scores = classifier_scores(classifier, videos, labels.numpy(), real["held_videos"], real["held_labels"])
        seen = float(object_presence(videos, labels.numpy()).all(1).mean()) if synthetic else float("nan")
        gaps = label_gaps(run_dir, step)
        row = {"step": step, "loss": gaps.get("loss"), "accuracy": scores["accuracy"], "fd": scores["fd"],
               "object_in_every_frame": seen,
               **{k: v for k, v in gaps.items() if k != "loss"}, "train_s": trained, "sample_s": sampled}
        rows.append(row)
        loss = "/".join(f"{v:.3f}" for v in row["loss"] or [])
        print(f"{step:>6} {loss:>22} {gaps.get('label_gap_sigma_2', float('nan')):>8.4f} "
              f"{gaps.get('label_gap_sigma_8', float('nan')):>8.4f} {gaps.get('label_gap_sigma_30', float('nan')):>8.4f} "
              f"{row['accuracy']:>9.3f} {row['accuracy'] / real['accuracy']:>7.2f} {row['fd']:>8.2f} "
              f"{row['fd'] / real['fd']:>7.2f} {seen:>7.2f} {trained:>8.0f} {sampled:>8.0f}", flush=True)
    (args.out / "learning.json").write_text(json.dumps({"real": {k: real[k] for k in ("accuracy", "fd")},
                                                        "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
