"""A learning curve of the `tiny` preset: what the model has learned, measured as it trains.

    python benchmarks/learning.py                       # synthetic set, 600 steps, scores every 200
    python benchmarks/learning.py --steps 1600 --every 400 --samples 32 --out /tmp/learning
    python benchmarks/learning.py --classes 8 --steps 1200 --every 300 --samples 8 --threads 1 \
        --out bench_learning8 --plot docs/learning_curve.png     # the README's plot

At each checkpoint the EMA model samples `--samples` videos (classes cycling) with the preset's
sampler, and a classifier trained on the same data file (`hpdm train-classifier`, trained once and
kept) scores them: the accuracy of the requested class and the Fréchet distance in its features
against the held-out real videos. Each is printed next to the real data's own figure (the held-out
real videos' accuracy; the FD between two disjoint real sets of the same size), and with the label
gap from metrics.jsonl (loss with wrong labels minus loss with true labels). On the synthetic set it
also prints the share of generated videos whose object (the requested class's colour) is visible in
every frame (`synthetic.object_presence`; every real video passes) and the pixel measures of
`hpdm_core.video_quality` (shape IoU and shape right, grain, size variation, centroid acceleration,
token mosaic and the grid of steps), each next to the same measure of real videos of the file.

It writes --out/learning.json, a frame grid per checkpoint (--out/frames_STEP.png, one row per
sample) and a plot of the measures against training steps (--plot, default --out/learning.png; needs
matplotlib: pip install "hpdm[plots]"). Everything is kept in --out: run it again and finished parts
(the classifier, the training run, each checkpoint's samples) are reused, the scores recomputed.
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
from hpdm_core.data.video_io import write_frame_grid  # noqa: E402
from hpdm_core.errors import MissingResourceError  # noqa: E402
from hpdm_core.files import atomic_save, atomic_write_text  # noqa: E402
from hpdm_core.metrics.classifier import (classifier_scores, heldout_videos, load_classifier,  # noqa: E402
                                          train_classifier)
from hpdm_core.sampling import generate  # noqa: E402
from hpdm_core.training import Trainer  # noqa: E402
from hpdm_core.video_quality import quality_report  # noqa: E402

# What the plot shows: (row key, title); where the real videos have the key, a dashed line.
PANELS = (("accuracy", "class accuracy (classifier)"), ("fd", "FD in classifier features"),
          ("grain", "grain (RMS minus 3x3 blur)"), ("mottling", "background mottling (4x4 cells about a plane)"),
          ("shape_iou", "shape IoU"), ("shape_right", "shape right (majority)"),
          ("acceleration", "centroid acceleration, px/frame^2"), ("grid_steps", "grid of pixel steps (x the data's)"))


def plot_learning(rows: list[dict], real: dict, path: Path, title: str) -> Path:
    """The measures of `rows` against training steps, one panel each, the real data's as a dashed line."""
    try:
        import matplotlib
    except ImportError:
        raise MissingResourceError('the learning plot needs matplotlib: pip install "hpdm[plots]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in rows]
    fig, axes = plt.subplots(2, 4, figsize=(16, 6.5), constrained_layout=True)
    for ax, (key, name) in zip(axes.flat, PANELS):
        ax.plot(steps, [row.get(key, float("nan")) for row in rows], "o-", label="generated")
        if key in real:
            ax.axhline(real[key], color="grey", linestyle="--", label="real videos")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("training steps")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path


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


def save_samples(path: Path, videos: np.ndarray, labels: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add .npz to the temporary name
            np.savez(f, videos=videos, labels=labels)
    atomic_save(path, write)


def label_gaps(run_dir: Path, step: int) -> dict:
    """The last label gap logged at or before `step`."""
    gaps = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["step"] <= step and "label_gap_sigma_8" in entry:
            gaps = {k: v for k, v in entry.items() if k.startswith("label_gap")}
            gaps["loss"] = [entry[k] for k in sorted(entry) if k.startswith("loss_level_")]
    return gaps



def data_and_classifier(out: Path, data: Path | None, classes: int, samples: int):
    """(data file, classifier, real reference) of a benchmark in `out`: the quickstart's synthetic set and the
    classifier that scores it, made once and kept for a rerun."""
    data = data or out / "synthetic.h5"
    if not data.exists():
        make_synthetic(data, classes=classes)  # the quickstart's set
    path = out / "classifier.pt"
    if not path.exists():
        summary = train_classifier(data, path)
        print(f"classifier: held-out accuracy {summary['heldout_accuracy']:.3f} in {summary['seconds']:.0f} s")
    classifier = load_classifier(path)
    return data, classifier, real_reference(classifier, data, samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_learning"))
    parser.add_argument("--data", type=Path, help="dataset file (default: a synthetic set made in --out)")
    parser.add_argument("--classes", type=int, help="classes of the synthetic set made in --out, and of the "
                        "model (default: the preset's)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--sample-steps", type=int, help="sampler steps at level 0 (default: the preset's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--plot", type=Path, help="the plot's PNG (default: --out/learning.png)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    classes = args.classes or preset("tiny").model.num_classes
    data, classifier, real = data_and_classifier(args.out, args.data, classes, args.samples)

    cfg = apply_overrides(preset("tiny"), [f"train.steps={args.steps}", f"train.checkpoint_every={args.every}",
                                           f"train.probe_every={args.every}", f"model.num_classes={classes}"]
                          + args.overrides)
    cfg.data.path = str(data)
    run_dir = args.out / "run"
    trainer = Trainer(cfg.validate(), run_dir, device="cpu", tensorboard=False)
    trainer.resume()
    options = cfg.sample.replace(steps=args.sample_steps)
    labels = torch.arange(args.samples) % cfg.model.num_classes

    # Real videos of the file for the pixel measures (synthetic set only): the first `samples` of it.
    store = VideoStore(data)
    synthetic = store.attrs.get("source") == "synthetic"
    real_count = min(args.samples, len(store))
    real_videos = np.stack([store.video(i) for i in range(real_count)])
    real_labels = store.labels[:real_count]

    print(f"real data: accuracy {real['accuracy']:.3f}, FD of {args.samples} vs {args.samples} real videos "
          f"{real['fd']:.2f}")
    header = (f"{'step':>6} {'loss per level':>22} {'gap@8':>8} {'accuracy':>9} {'FD':>8} {'/ real':>7} "
              f"{'object':>7} {'IoU':>6} {'shape':>6} {'grain':>7} {'mottle':>7} {'size':>6} {'accel':>6} {'mosaic':>7} {'grid':>6}")
    print(header)
    rows, reference = [], {}
    for step in range(args.every, args.steps + 1, args.every):
        saved = args.out / f"samples_{step:06d}.npz"
        timing = {}
        if saved.exists():  # sampled before: kept, only scored again
            with np.load(saved) as arrays:
                videos = arrays["videos"]
        else:
            if trainer.step > step:
                raise MissingResourceError(f"{saved} is missing and the run in {run_dir} is past step {step}; "
                                           f"delete {args.out} (or use another --out) to start over")
            started = time.perf_counter()
            trainer.fit(stop_at=step)
            timing["train_s"] = time.perf_counter() - started
            started = time.perf_counter()
            result = generate(trainer.ema.model, labels, seed=0, options=options, batch_size=8)
            timing["sample_s"] = time.perf_counter() - started
            videos = to_uint8(result.videos)
            save_samples(saved, videos, labels.numpy())
        write_frame_grid(args.out / f"frames_{step:06d}.png", videos, columns=8, scale=2)
        scores = classifier_scores(classifier, videos, labels.numpy(), real["held_videos"], real["held_labels"])
        seen = float(object_presence(videos, labels.numpy()).all(1).mean()) if synthetic else float("nan")
        pixels = {}
        if synthetic:
            # The top level is at the target resolution: its tokens are token[1:] pixels of the video.
            report = quality_report(videos, labels.numpy(), real_videos, real_labels, tuple(cfg.model.token[1:]))
            pixels, reference = report["generated"], report["real"]
        gaps = label_gaps(run_dir, step)
        row = {"step": step, "loss": gaps.get("loss"), "accuracy": scores["accuracy"], "fd": scores["fd"],
               "object_in_every_frame": seen, **pixels,
               **{k: v for k, v in gaps.items() if k != "loss"}, **timing}
        rows.append(row)
        loss = "/".join(f"{v:.3f}" for v in row["loss"] or [])
        nan = float("nan")
        print(f"{step:>6} {loss:>22} {gaps.get('label_gap_sigma_8', nan):>8.4f} {row['accuracy']:>9.3f} "
              f"{row['fd']:>8.2f} {row['fd'] / real['fd']:>7.2f} {seen:>7.2f} {pixels.get('shape_iou', nan):>6.3f} "
              f"{pixels.get('shape_right', nan):>6.2f} {pixels.get('grain', nan):>7.4f} {pixels.get('mottling', nan):>7.4f} "
              f"{pixels.get('size_variation', nan):>6.3f} {pixels.get('acceleration', nan):>6.2f} "
              f"{pixels.get('token_mosaic', nan):>7.2f} {pixels.get('grid_steps', nan):>6.2f}", flush=True)
    # token_mosaic and grid_steps are generated over real: the data's is 1 by definition.
    real_figures = {"accuracy": real["accuracy"], "fd": real["fd"], **reference,
                    **({"token_mosaic": 1.0, "grid_steps": 1.0} if reference else {})}
    if reference:
        print("real   " + " ".join(f"{k} {v:.4g}" for k, v in reference.items()))
    atomic_write_text(args.out / "learning.json", json.dumps({"real": real_figures, "rows": rows}, indent=2))
    title = (f"tiny preset, {cfg.model.num_classes} classes, batch {cfg.train.batch_size}: {args.samples} samples "
             f"per checkpoint")
    plot = plot_learning(rows, real_figures, args.plot or args.out / "learning.png", title)
    print(f"wrote {plot}, {args.out / 'learning.json'} and a frame grid per checkpoint in {args.out}")


if __name__ == "__main__":
    main()
