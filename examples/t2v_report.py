"""Does a text-to-video model listen? Prompts for seen and unseen (colour, shape) pairs of a captioned
synthetic set, and a report of how often the samples show the prompted colour and shape.

    python examples/t2v_report.py prompts DATA.h5 PROMPTS.txt        # writes PROMPTS.txt and PROMPTS.json
    hpdm sample --run RUN --prompts PROMPTS.txt --out SAMPLES.npz
    python examples/t2v_report.py score DATA.h5 SAMPLES.npz PROMPTS.json [--grid OUT.png] [--json OUT.json]

The data file comes from `hpdm prepare synthetic --captions --holdout-pairs N`: its held-out pairs never
occur in it, so their prompts ask for combinations the model never saw. Colour and shape are measured
from the pixels (hpdm_core.data.synthetic.describe_objects); the same measure on the file's real videos
is printed beside, as the ceiling of what it can confirm.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hpdm_core.data.h5store import VideoStore
from hpdm_core.data.synthetic import COLOURS, DIRECTIONS, SHAPES, caption_text, describe_objects
from hpdm_core.data.video_io import frame_grid
from hpdm_core.files import atomic_write, atomic_write_text


def pairs_of(store: VideoStore) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(seen, unseen) (colour, shape) pairs of a captioned synthetic file."""
    unseen = [tuple(p) for p in json.loads(store.attrs.get("holdout_pairs", "[]"))]
    every = [tuple(name.split("_", 1)) for name in store.class_names]
    if not every or any(c not in COLOURS or s not in SHAPES for c, s in every):
        raise SystemExit(f"{store.path} is not a captioned synthetic set (`hpdm prepare synthetic --captions`)")
    return [p for p in every if p not in unseen], unseen


def make_prompts(args: argparse.Namespace) -> None:
    store = VideoStore(args.data)
    seen, unseen = pairs_of(store)
    rng = np.random.default_rng(args.seed)
    plan = []
    for pairs, copies, is_seen in ((seen, args.per_seen, True), (unseen, args.per_unseen, False)):
        for colour, shape in pairs:
            for _ in range(copies):
                direction = DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
                plan.append({"prompt": caption_text(colour, shape, direction, rng), "colour": colour, "shape": shape,
                             "seen": is_seen})
    atomic_write_text(args.out, "".join(p["prompt"] + "\n" for p in plan))
    atomic_write_text(Path(args.out).with_suffix(".json"), json.dumps(plan, indent=1))
    print(f"wrote {args.out}: {len(plan)} prompts ({sum(p['seen'] for p in plan)} of seen pairs, "
          f"{sum(not p['seen'] for p in plan)} of unseen pairs {unseen})")


def rates(described: list[tuple], plan: list[dict]) -> dict:
    colour = [d[0] == p["colour"] for d, p in zip(described, plan)]
    shape = [d[1] == p["shape"] for d, p in zip(described, plan)]
    both = [c and s for c, s in zip(colour, shape)]
    n = len(plan)
    return {"videos": n, "colour_right": sum(colour), "shape_right": sum(shape), "both_right": sum(both),
            "colour_rate": sum(colour) / n if n else float("nan"), "shape_rate": sum(shape) / n if n else float("nan")}


def labelled_grid(videos: np.ndarray, labels: list[str], columns: int, scale: int) -> np.ndarray:
    """frame_grid with each row's text written to its left."""
    from PIL import Image, ImageDraw

    grid = frame_grid(videos, columns)
    grid = grid.repeat(scale, 0).repeat(scale, 1)
    margin = 8 + 6 * max(len(text) for text in labels)
    image = Image.new("RGB", (grid.shape[1] + margin, grid.shape[0]), "white")
    image.paste(Image.fromarray(grid), (margin, 0))
    draw = ImageDraw.Draw(image)
    row = grid.shape[0] / len(labels)
    for i, text in enumerate(labels):
        draw.text((4, int(i * row + row / 2 - 5)), text, fill="black")
    return np.asarray(image)


def score(args: argparse.Namespace) -> None:
    store = VideoStore(args.data)
    seen, unseen = pairs_of(store)
    colours = sorted({c for c, _ in seen + unseen}, key=list(COLOURS).index)
    shapes = sorted({s for _, s in seen + unseen}, key=list(SHAPES).index)
    plan = json.loads(Path(args.plan).read_text())
    with np.load(args.samples) as arrays:
        videos = arrays["videos"]
    if len(videos) != len(plan):
        raise SystemExit(f"{args.samples} holds {len(videos)} videos but {args.plan} plans {len(plan)}")
    described = describe_objects(videos, colours, shapes)
    report = {kind: rates([d for d, p in zip(described, plan) if p["seen"] == flag],
                          [p for p in plan if p["seen"] == flag]) for kind, flag in (("seen", True), ("unseen", False))}
    # The measure's ceiling: the same on real videos of the file, against their captions' pairs.
    names = store.class_names
    count = min(args.real, len(store))
    real = np.stack([store.video(i)[:videos.shape[1]] for i in range(count)])
    truth = [dict(zip(("colour", "shape"), names[k].split("_", 1))) for k in store.labels[:count]]
    report["real"] = rates(describe_objects(real, colours, shapes), truth)
    report["unseen_pairs"] = [list(p) for p in unseen]
    report["samples"] = [{**p, "measured_colour": d[0], "measured_shape": d[1]} for p, d in zip(plan, described)]
    from hpdm_core.text.store import has_embeddings

    text = has_embeddings(args.data) or {}
    report["text_encoder"] = {key: text.get(key) for key in ("encoder", "fingerprint", "random_weights")}
    if text.get("random_weights"):
        print(f"NOTE: the captions were encoded by {text.get('encoder')}, a T5 encoder with RANDOM weights: its "
              "embeddings tell texts apart byte by byte but carry no meaning")
    for kind in ("seen", "unseen", "real"):
        r = report[kind]
        if r["videos"]:
            print(f"{kind:>6}: prompted colour {r['colour_right']}/{r['videos']} ({100 * r['colour_rate']:.0f} %), "
                  f"prompted shape {r['shape_right']}/{r['videos']} ({100 * r['shape_rate']:.0f} %), "
                  f"both {r['both_right']}/{r['videos']}")
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=1))
    if args.grid:
        from PIL import Image

        texts = [f"{'seen' if p['seen'] else 'UNSEEN'}: {p['prompt']}" for p in plan]
        with atomic_write(args.grid) as tmp:
            Image.fromarray(labelled_grid(videos, texts, args.columns, args.scale)).save(tmp, format="PNG")
        real_texts = [f"real: {names[k].replace('_', ' ')}" for k in store.labels[:len(plan)]]
        real_grid = Path(args.grid).with_name(Path(args.grid).stem + "_real.png")
        with atomic_write(real_grid) as tmp:
            Image.fromarray(labelled_grid(real[:len(plan)], real_texts, args.columns, args.scale)).save(tmp, format="PNG")
        print(f"wrote {args.grid} and {real_grid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prompts", help="write prompts for seen and unseen pairs")
    p.add_argument("data", type=Path)
    p.add_argument("out", type=Path, help="PROMPTS.txt (and PROMPTS.json beside it)")
    p.add_argument("--per-seen", type=int, default=1, help="prompts per seen pair")
    p.add_argument("--per-unseen", type=int, default=2, help="prompts per unseen pair")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=make_prompts)
    s = sub.add_parser("score", help="measure colour and shape of the samples")
    s.add_argument("data", type=Path)
    s.add_argument("samples", type=Path, help="`hpdm sample --prompts PROMPTS.txt --format npz` output")
    s.add_argument("plan", type=Path, help="PROMPTS.json")
    s.add_argument("--grid", type=Path, help="frame-grid PNG with the prompts (and OUT_real.png of real videos)")
    s.add_argument("--json", type=Path, help="the report as JSON")
    s.add_argument("--real", type=int, default=64, help="real videos measured for the reference line")
    s.add_argument("--columns", type=int, default=8)
    s.add_argument("--scale", type=int, default=2)
    s.set_defaults(run=score)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
