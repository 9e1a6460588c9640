"""How far the real set's frame preparation moves FVD: hpdm's area resize against StyleGAN-V's frames.

StyleGAN-V computes FVD against UCF-101 frames made by its convert_videos_to_frames.py (PIL LANCZOS
resize, centre crop, JPEG at Pillow's default quality); `hpdm prepare ucf101` area-resizes without JPEG
unless given `--preparation styleganv`. This script prepares the same UCF-101 videos both ways and reports

    FVD(area, styleganv)            real clips of one preparation against the first videos of the other
    FVD(styleganv, styleganv)       the same file on both sides: the floor that clip starts alone give
    FVD(area, area)                 the same for the area file

so the shift a preparation causes is the first number against the two floors. With `--i3d` (StyleGAN-V's
i3d_torchscript.pt) the numbers are in FVD's own units; without it a seeded random-weight I3D gives a
proxy of the same comparison (labelled as such).

    python benchmarks/preparation_fvd.py --src ~/data/UCF101 --work /tmp/prep --resolution 128 --num 512
    python benchmarks/preparation_fvd.py --src ~/data/UCF101 --work /tmp/prep --resolution 256 --num 2048 \
        --i3d i3d_torchscript.pt --device cuda

Preparing UCF-101 (13,320 videos) takes a while; `--max-frames 64` keeps every video's first 64 frames
(enough for 16-frame clips) and `--split train|test` a part. The prepared files are kept in --work and
reused by a rerun (prepare resumes and skips finished files).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpdm_core.data.ucf101 import prepare_ucf101  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="UCF-101 folder (UCF-101/<Class>/*.avi, ucfTrainTestlist/)")
    parser.add_argument("--work", required=True, type=Path, help="folder for the two prepared files")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--split", default="all", choices=["train", "test", "all"])
    parser.add_argument("--max-frames", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--num", type=int, default=512, help="clips per side")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--i3d", type=Path, help="I3D weights (default: the random-I3D proxy, seed 0)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    files = {}
    for preparation in ("area", "styleganv"):
        files[preparation] = args.work / f"ucf101_{args.split}_{args.resolution}_{preparation}.h5"
        report = prepare_ucf101(args.src, files[preparation], split=args.split, resolution=args.resolution,
                                max_frames=args.max_frames, workers=args.workers, preparation=preparation)
        print(f"{preparation}: {report.videos} videos, {report.frames} frames -> {files[preparation]}", flush=True)

    from hpdm_core.metrics.fvd import evaluate  # torch only now: spawned decoding workers need not load it
    from hpdm_core.metrics.options import EvalOptions

    detector = {"i3d": args.i3d} if args.i3d else {"random_i3d_seed": 0}
    rows = {}
    for real, fake in (("area", "styleganv"), ("styleganv", "styleganv"), ("area", "area")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the proxy and FVD@num notes: not what is measured here
            result = evaluate(files[real], files[fake], EvalOptions(num=args.num, frames=args.frames,
                                                                    batch_size=args.batch_size, device=args.device,
                                                                    use_cache=False, **detector))
        rows[f"FVD({real}, {fake})"] = result["fvd"]
        print(f"FVD{'' if args.i3d else ' (random-I3D proxy)'}@{args.num} real {real} vs generated {fake}: "
              f"{result['fvd']:.2f}", flush=True)
    print(json.dumps({"resolution": args.resolution, "split": args.split, "num": args.num,
                      "detector": str(args.i3d) if args.i3d else "random-i3d-seed0", **rows}, indent=1))


if __name__ == "__main__":
    main()
