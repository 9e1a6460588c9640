"""Evaluation speed: I3D clips/s (CPU, and CUDA when present) and the Fréchet distance on 400-d
features, ours (two symmetric eigendecompositions) against scipy.linalg.sqrtm, in one run.

    python benchmarks/eval_speed.py [--clips 4] [--frames 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.linalg
import torch

from hpdm_core.metrics.frechet import frechet_distance
from hpdm_core.metrics.i3d import I3DFeatures, random_i3d


def time_it(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def scipy_fd(mu1, s1, mu2, s2) -> float:
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.real(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=128, help="input frame size (resized to 224)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    videos = torch.randint(0, 256, (args.clips, args.frames, args.size, args.size, 3), dtype=torch.uint8)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"I3D, {args.clips} clips of {args.frames}x{args.size}x{args.size} -> 224x224, torch threads {torch.get_num_threads()}")
    for device in devices:
        detector = I3DFeatures(random_i3d(0), "torch").to(device)
        batch = videos.to(device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        seconds = time_it(lambda: (detector(batch), sync()), args.repeats)
        print(f"  {device:5s} {args.clips / seconds:8.2f} clips/s  ({seconds:.3f} s per batch)")

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2048, 400)), rng.normal(size=(2048, 400)) @ (np.eye(400) + 0.05 * rng.normal(size=(400, 400)))
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    ours_s = time_it(lambda: frechet_distance(mu1, s1, mu2, s2), args.repeats)
    scipy_s = time_it(lambda: scipy_fd(mu1, s1, mu2, s2), args.repeats)
    ours, reference = frechet_distance(mu1, s1, mu2, s2), scipy_fd(mu1, s1, mu2, s2)
    print("Frechet distance, 400-d, 2048 samples per side")
    print(f"  ours  {ours_s * 1e3:8.1f} ms   FD = {ours:.6f}")
    print(f"  scipy {scipy_s * 1e3:8.1f} ms   FD = {reference:.6f}   (|diff| {abs(ours - reference):.2e})")
    print(f"  speed-up x{scipy_s / ours_s:.1f}")


if __name__ == "__main__":
    main()
