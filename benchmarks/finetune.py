"""Does the paper's scale-up path pay? A 1-level base fine-tuned into the pyramid, against training it from scratch.

    python benchmarks/finetune.py                          # synthetic set, B=600, F=200, 16 samples each
    python benchmarks/finetune.py --base-steps 600 --finetune-steps 200 --out /tmp/finetune --threads 1

The paper trained its large model's lowest stage alone at low resolution, then fine-tuned the full
pyramid from it for 3 % of the base's steps (`hpdm train --init-from`). On the synthetic set with the
`tiny` preset this trains:

    base          tiny-base (1 level at the patch's resolution, 8x16x16) for B steps
    a (top)       tiny (3 levels) from the base's EMA weights for F steps, new levels from the base's top level
    a (fresh)     the same, new levels' latents and level embedding initialised fresh (train.init_new_levels)
    b             tiny from scratch for B + F steps
    c             tiny from scratch for F steps

and samples and scores the 3-level runs as benchmarks/learning.py does: the accuracy of the requested
class and the Fréchet distance in the features of a classifier trained on the same data file, the label
gap (metrics.jsonl), and the share of videos whose object is in every frame. The cost column counts
level-patches trained (a 1-level step costs one patch per row, a 3-level step three), the honest
cost unit on a quiet machine where the network's work dominates. Everything is kept in --out (one run
folder per variant, results.json); run it again and finished parts are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning import data_and_classifier, label_gaps, to_uint8  # noqa: E402

from hpdm_core.config import apply_overrides, preset  # noqa: E402
from hpdm_core.data.synthetic import object_presence  # noqa: E402
from hpdm_core.metrics.classifier import classifier_scores  # noqa: E402
from hpdm_core.sampling import generate  # noqa: E402
from hpdm_core.training import Trainer  # noqa: E402


def train(out: Path, name: str, preset_name: str, steps: int, data: Path, extra: list[str]) -> Trainer:
    """Train (or finish) run `name` in out/name; the trainer holds its final EMA model."""
    every = max(steps // 4, 1)
    cfg = apply_overrides(preset(preset_name), [f"train.steps={steps}", f"train.checkpoint_every={every}",
                                                f"train.probe_every={every}"] + extra)
    cfg.data.path = str(data)
    trainer = Trainer(cfg.validate(), out / name, device="cpu", tensorboard=False)
    trainer.resume()
    trainer.fit()
    return trainer


def merge_results(path: Path, results: dict, name: str) -> dict:
    """Write results[name] into the results file, keeping what other processes (--variants) wrote there."""
    stored = json.loads(path.read_text()) if path.exists() else {}
    if stored.get("config") == results["config"]:
        results = {**stored, **{k: v for k, v in results.items() if k == name or k not in stored}}
    path.write_text(json.dumps(results, indent=2))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_finetune"))
    parser.add_argument("--data", type=Path, help="dataset file (default: the quickstart's synthetic set in --out)")
    parser.add_argument("--base-steps", type=int, default=600, help="B: steps of the 1-level base")
    parser.add_argument("--finetune-steps", type=int, default=200, help="F: steps of the 3-level fine-tune")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--sample-steps", type=int, help="sampler steps at level 0 (default: the preset's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override for every run (repeatable)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--variants", default="a_top,a_fresh,b_scratch_long,c_scratch_short",
                        help="comma-separated runs to train and score (e.g. one per process, then all to print)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data, classifier, real = data_and_classifier(args.out, args.data, preset("tiny").model.num_classes, args.samples)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    config_key = {"base_steps": args.base_steps, "finetune_steps": args.finetune_steps, "samples": args.samples,
                  "sample_steps": args.sample_steps, "overrides": args.overrides}
    if results.get("config") != config_key:
        results = {"config": config_key}
    results["real"] = {"accuracy": real["accuracy"], "fd": real["fd"]}

    B, F = args.base_steps, args.finetune_steps
    base = train(args.out, "base", "tiny-base", B, data, args.overrides)
    base_ckpt = str(base.last_checkpoint)
    variants = [  # name, steps, extra settings, cost in level-patches per row
        ("a_top", F, [f"train.init_from={base_ckpt}", "train.init_new_levels=top"], B + 3 * F),
        ("a_fresh", F, [f"train.init_from={base_ckpt}", "train.init_new_levels=fresh"], B + 3 * F),
        ("b_scratch_long", B + F, [], 3 * (B + F)),
        ("c_scratch_short", F, [], 3 * F),
    ]
    labels = torch.arange(args.samples) % base.cfg.model.num_classes
    chosen = set(args.variants.split(","))
    for name, steps, extra, cost in variants:
        if name in results or name not in chosen:
            continue
        trainer = train(args.out, name, "tiny", steps, data, args.overrides + extra)
        options = trainer.cfg.sample.replace(steps=args.sample_steps)
        result = generate(trainer.ema.model, labels, seed=0, options=options, batch_size=8)
        videos = to_uint8(result.videos)
        scores = classifier_scores(classifier, videos, labels.numpy(), real["held_videos"], real["held_labels"])
        gaps = label_gaps(args.out / name, steps)
        results[name] = {"steps": steps, "cost_level_patches": cost, "loss": gaps.get("loss"),
                         "accuracy": scores["accuracy"], "fd": scores["fd"],
                         "object_in_every_frame": float(object_presence(videos, labels.numpy()).all(1).mean()),
                         **{k: v for k, v in gaps.items() if k != "loss"}}
        results = merge_results(results_path, results, name)
    results["base"] = {"steps": B, "loss": label_gaps(args.out / "base", B).get("loss")}
    results = merge_results(results_path, results, "base")
    missing = [name for name, *_ in variants if name not in results]
    if missing:
        print(f"not scored yet: {', '.join(missing)} (run again with --variants {','.join(missing)})")
        return

    print(f"B = {B} base steps (1 level), F = {F} fine-tune steps (3 levels), {args.samples} samples each; "
          f"real data: accuracy {real['accuracy']:.3f}, FD of {args.samples} vs {args.samples} real videos "
          f"{real['fd']:.2f}")
    print(f"{'run':<16} {'steps':>6} {'cost':>6} {'loss per level':>22} {'gap@8':>8} {'accuracy':>9} {'FD':>8} "
          f"{'object':>7}")
    base_loss = "/".join(f"{v:.3f}" for v in results["base"]["loss"] or [])
    print(f"{'base (1 level)':<16} {B:>6} {B:>6} {base_loss:>22}")
    for name, *_ in variants:
        r = results[name]
        loss = "/".join(f"{v:.3f}" for v in r["loss"] or [])
        print(f"{name:<16} {r['steps']:>6} {r['cost_level_patches']:>6} {loss:>22} "
              f"{r.get('label_gap_sigma_8', float('nan')):>8.4f} {r['accuracy']:>9.3f} {r['fd']:>8.2f} "
              f"{r['object_in_every_frame']:>7.2f}")
    print(f"results: {results_path}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
