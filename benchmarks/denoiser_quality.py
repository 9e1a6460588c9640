"""How well a trained run denoises each level at each noise level, with clean context below it.

    python benchmarks/denoiser_quality.py --run demo/run
    python benchmarks/denoiser_quality.py --run runs/x --data other.h5 --chains 64 --sigmas 0.02,0.1,1

Real patch chains are drawn as in training. The lower levels get the noise they get as context at
inference (sigma_min, shifted per level), and level l gets sigma s. The table shows the EMA
denoiser's mean squared error on level l divided by s^2, the error of returning the noisy input
unchanged:
- well below 1: the level is denoised;
- near or above 1: the denoiser keeps or adds noise at that sigma. The last sampling steps then
  leave grain, which is what a top level trained only at high noise does (issue 10).

A second table shows how much the denoised patches look like a mosaic of interface tokens: the mean
squared step between neighbouring pixels across a token's edge over the one inside a token (h and w
axes), divided by the same ratio of the clean patches. 1: token edges are as smooth as the data's;
well above 1: each token is predicted on its own (the per-token colour mosaic of issue 10). The
same measure of generated videos against real ones is `hpdm_core.video_quality.token_mosaic`.

A third table (class-conditional runs on the synthetic set) shows the background mottling of the denoised
patches (`hpdm_core.video_quality.mottling` on single pixels of the level: blotches on what should be the
set's smooth gradient, 0-1 scale) beside the clean patches' own. A denoiser whose output is mottled at
a sigma leaves the blotches to the sampler's later steps, which keep what they are given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpdm_core.checkpoint import load_for_inference  # noqa: E402
from hpdm_core.data.dataset import ClipDataset  # noqa: E402
from hpdm_core.diffusion import context_sigma  # noqa: E402
from hpdm_core.training import StepBatches  # noqa: E402
from hpdm_core.video_quality import class_targets, edge_ratio, mottling, summarise  # noqa: E402


def background_mottling(patches: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean mottling of patches [B, C, F, h, w] in [-1, 1] whose labels are synthetic-set classes, read on
    single pixels (a level's pixel is 2**(L-1-l) video pixels)."""
    videos = ((patches.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
    return summarise({"mottling": mottling(videos, class_targets(labels.tolist())[0], cell=1)})["mottling"]


@torch.no_grad()
def quality_tables(denoiser, chains: dict[str, torch.Tensor], sigmas: list[float], diffusion_cfg,
                   token: tuple[int, int, int], generator: torch.Generator, mottled: bool = False):
    """([level][sigma] MSE of D on that level / sigma^2, [level][sigma] edge_ratio of D's output over the
    clean level's, and with `mottled` [level][clean, then each sigma] background mottling), the other
    levels at their context sigma; one denoiser pass per (level, sigma)."""
    x, offsets, labels = chains["patches"], chains["offsets"], chains["labels"]
    batch, levels = x.shape[:2]
    context = torch.tensor([context_sigma(k, diffusion_cfg) for k in range(levels)])
    errors, mosaic, mottle = [], [], []
    for level in range(levels):
        clean = edge_ratio(x[:, level], token[1:])  # h and w: the last two axes
        error_row, mosaic_row = [], []
        mottle_row = [background_mottling(x[:, level], labels)] if mottled else []
        for s in sigmas:
            sigma = context.expand(batch, levels).clone()
            sigma[:, level] = s
            noisy = x + torch.randn(x.shape, generator=generator) * sigma[..., None, None, None, None]
            denoised = denoiser(noisy, sigma, offsets, labels)[:, level]
            error_row.append(float((denoised - x[:, level]).square().mean()) / s ** 2)
            mosaic_row.append(edge_ratio(denoised, token[1:]) / clean)
            if mottled:
                mottle_row.append(background_mottling(denoised, labels))
        errors.append(error_row)
        mosaic.append(mosaic_row)
        mottle.append(mottle_row)
    return errors, mosaic, mottle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="run folder (its latest checkpoint, EMA)")
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint file of the run (default: its latest)")
    parser.add_argument("--data", type=Path, help="dataset file (default: the run's data.path)")
    parser.add_argument("--chains", type=int, default=32, help="real patch chains")
    parser.add_argument("--sigmas", default="0.02,0.05,0.1,0.3,1,3")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cfg, denoiser, info = load_for_inference(args.run, args.checkpoint)
    geometry = denoiser.geometry
    frames, height, width = geometry.canvas(geometry.num_levels - 1)
    clips = ClipDataset(args.data or cfg.data.path, frames, (height, width))
    chains = StepBatches(clips, geometry, range(args.chains), args.seed, 1, cfg.model.num_classes)[0]
    sigmas = [float(s) for s in args.sigmas.split(",")]
    token = tuple(int(t) for t in cfg.model.token)
    synthetic_classes = cfg.model.conditioning == "class" and clips.store.attrs.get("source") == "synthetic"
    table, mosaic, mottle = quality_tables(denoiser, chains, sigmas, cfg.diffusion, token,
                                           torch.Generator().manual_seed(args.seed), mottled=synthetic_classes)

    print(f"{args.run} step {info['step']} (EMA): MSE of D / sigma^2 (1 = the noisy input unchanged)")
    print("level " + "".join(f"{f's={s:g}':>9}" for s in sigmas))
    for level, row in enumerate(table):
        print(f"{level:>5} " + "".join(f"{v:>9.2f}" for v in row))
    print(f"token mosaic of D's output: steps across token edges / inside tokens, over the clean data's "
          f"(1 = as smooth as the data; token {'x'.join(map(str, token))})")
    print("level " + "".join(f"{f's={s:g}':>9}" for s in sigmas))
    for level, row in enumerate(mosaic):
        print(f"{level:>5} " + "".join(f"{v:>9.2f}" for v in row))
    if synthetic_classes:
        print("background mottling of D's output (RMS about the background's plane, single pixels, 0-1 scale)")
        print("level " + f"{'clean':>9}" + "".join(f"{f's={s:g}':>9}" for s in sigmas))
        for level, row in enumerate(mottle):
            print(f"{level:>5} " + "".join(f"{v:>9.4f}" for v in row))


if __name__ == "__main__":
    main()
