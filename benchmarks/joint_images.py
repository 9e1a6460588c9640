"""Does mixing still images into the video batches change what the model learns? (issue 22, joint training)

    python benchmarks/joint_images.py                          # synthetic set, 400 steps, 8 image rows
    python benchmarks/joint_images.py --steps 300 --image-rows 8 --out /tmp/joint --threads 1

The paper trains its text-to-video model on videos and images together, each image repeated along time
as a still video. This trains the `tiny` preset twice for the same number of steps on the same video
rows (same seed: the video rows of every step are identical), once on videos only and once with
--image-rows still images per step beside them (`hpdm train --images`, train.image_batch_size), and
scores both as benchmarks/learning.py does: the requested class's accuracy and the Fréchet distance in
the features of a classifier trained on the videos, the label gap, object presence. The images are
single frames of the synthetic set's classes, drawn from other indices than its videos (so they are
new pictures of the same classes). Everything is kept in --out; run it again and finished parts are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning import data_and_classifier, label_gaps, to_uint8  # noqa: E402

from hpdm_core.config import apply_overrides, preset  # noqa: E402
from hpdm_core.data.h5store import VideoStore, VideoStoreWriter  # noqa: E402
from hpdm_core.data.synthetic import object_presence, synthetic_video  # noqa: E402
from hpdm_core.metrics.classifier import classifier_scores  # noqa: E402
from hpdm_core.sampling import generate  # noqa: E402
from hpdm_core.training import Trainer  # noqa: E402

FIRST_IMAGE = 1_000_000  # image i is frame 0 of synthetic video FIRST_IMAGE + i: not one of the set's videos


def write_still_images(out: Path, data: Path, count: int) -> Path:
    """Single frames of the synthetic set's classes (an image file: 1-frame entries, kind="images")."""
    store = VideoStore(data)
    classes, (height, _), seed = len(store.class_names), store.resolution, int(store.attrs.get("seed", 0))
    with VideoStoreWriter(out, height, height) as writer:
        for i in range(count):
            frame, label = synthetic_video(FIRST_IMAGE + i, 1, height, classes, seed)
            writer.append(frame, label=label, name=f"still_{i:06d}")
        writer.finish(store.class_names, fps=1.0, split="all", source="synthetic", kind="images")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_joint_images"))
    parser.add_argument("--data", type=Path, help="synthetic dataset file (default: the quickstart's set in --out)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--image-rows", type=int, default=8, help="still-image rows per step beside the 16 videos")
    parser.add_argument("--images", type=int, default=256, help="number of still images in the image file")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--sample-steps", type=int, help="sampler steps at level 0 (default: the preset's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data, classifier, real = data_and_classifier(args.out, args.data, preset("tiny").model.num_classes, args.samples)
    images = args.out / "stills.h5"
    if not images.exists():
        write_still_images(images, data, args.images)
    results_path = args.out / "results.json"
    key = {"steps": args.steps, "image_rows": args.image_rows, "images": args.images, "samples": args.samples,
           "sample_steps": args.sample_steps}
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if results.get("config") != key:
        results = {"config": key}
    results["real"] = {"accuracy": real["accuracy"], "fd": real["fd"]}

    every = max(args.steps // 4, 1)
    common = [f"train.steps={args.steps}", f"train.checkpoint_every={every}", f"train.probe_every={every}"]
    variants = [("videos", []), ("videos+images", [f"train.image_batch_size={args.image_rows}",
                                                    f"data.image_path={images}"])]
    for name, extra in variants:
        if name in results:
            continue
        cfg = apply_overrides(preset("tiny"), common + extra)
        cfg.data.path = str(data)
        run_dir = args.out / name.replace("+", "_")
        trainer = Trainer(cfg.validate(), run_dir, device="cpu", tensorboard=False)
        trainer.resume()
        trainer.fit()
        labels = torch.arange(args.samples) % cfg.model.num_classes
        result = generate(trainer.ema.model, labels, seed=0, options=cfg.sample.replace(steps=args.sample_steps),
                          batch_size=8)
        videos = to_uint8(result.videos)
        scores = classifier_scores(classifier, videos, labels.numpy(), real["held_videos"], real["held_labels"])
        gaps = label_gaps(run_dir, args.steps)
        last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
        results[name] = {"loss": gaps.get("loss"), "accuracy": scores["accuracy"], "fd": scores["fd"],
                         "object_in_every_frame": float(object_presence(videos, labels.numpy()).all(1).mean()),
                         "loss_videos": last.get("loss_videos"), "loss_images": last.get("loss_images"),
                         **{k: v for k, v in gaps.items() if k != "loss"}}
        results_path.write_text(json.dumps(results, indent=2))

    print(f"{args.steps} steps of 16 video rows (+ {args.image_rows} still-image rows), {args.samples} samples each; "
          f"real data: accuracy {real['accuracy']:.3f}, FD of {args.samples} vs {args.samples} real videos "
          f"{real['fd']:.2f}")
    print(f"{'run':<14} {'loss per level':>22} {'gap@8':>8} {'accuracy':>9} {'FD':>8} {'object':>7}")
    for name, _ in variants:
        r = results[name]
        loss = "/".join(f"{v:.3f}" for v in r["loss"] or [])
        print(f"{name:<14} {loss:>22} {r.get('label_gap_sigma_8', float('nan')):>8.4f} {r['accuracy']:>9.3f} "
              f"{r['fd']:>8.2f} {r['object_in_every_frame']:>7.2f}")
    print(f"results: {results_path}")


if __name__ == "__main__":
    main()
