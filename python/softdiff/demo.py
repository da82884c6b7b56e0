"""``python -m softdiff.demo``: Soft Diffusion end to end with no training, in seconds on a CPU.

The denoiser is the exact posterior mean of a finite set of built-in ``shapes`` images
(:class:`~softdiff.oracle.EmpiricalDenoiser`), so the samplers run on the true score of that set, and a
correct sampler ends on (a copy of) one of those images. The demo writes

    OUT/forward.png   per image, two rows for t = 0 .. 1: the blur alone, C_t x_0, then x_t = C_t x_0 + σ_t η
    OUT/samples.png   one row per sampler (momentum, naive, momentum_ode), same seeds
    OUT/summary.json  per sampler: wall time and the RMS distance of each sample to its nearest reference

and prints the summary. (How far each sampler is from the true law at a given NFE is measured on the exact
Gaussian oracle instead, where the answer is known in closed form.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .data import make_shapes
from .images import save_image_grid
from .operators import DCTBlur
from .oracle import EmpiricalDenoiser
from .process import SoftDiffusionProcess
from .samplers import SAMPLERS, sample
from .schedules import GeometricNoise, LevelSchedule


def _parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m softdiff.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--references", type=int, default=256, help="shapes images the oracle knows (default 256)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--n", type=int, default=8, help="samples per sampler (default 8)")
    parser.add_argument("--steps", type=int, default=100, help="network evaluations per sample (default 100)")
    parser.add_argument("--sigma-max", type=float, default=100.0, help="σ(1) in [-1, 1] units (default 100)")
    parser.add_argument("--blur-max", type=float, default=None, help="blur σ_B(1) in pixels (default 0.36 · size)")
    parser.add_argument("--seed", type=int, default=0, help="first sample seed (default 0)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = _parse_args(argv)
    out = Path(args.out)
    blur_max = 0.36 * args.size if args.blur_max is None else args.blur_max
    process = SoftDiffusionProcess(
        DCTBlur(), noise=GeometricNoise(0.02, args.sigma_max), levels=LevelSchedule.sin2(blur_max)
    )
    data = make_shapes(args.references, size=args.size)
    oracle = EmpiricalDenoiser(data, process)

    times = torch.linspace(0, 1, 9)
    strip = []
    for i in range(3):
        clean = data[i : i + 1].expand(len(times), -1, -1, -1)
        strip += [process.apply(clean, times), process.corrupt(clean, times, seed=len(times) * i)]
    strip = torch.cat(strip)
    save_image_grid(strip.clamp(-1, 1), out / "forward.png", columns=len(times), scale=3)

    seeds = list(range(args.seed, args.seed + args.n))
    rows, summary = [], {}
    for sampler in SAMPLERS:
        start = time.perf_counter()
        images = sample(
            oracle, process, (args.n, 3, args.size, args.size), steps=args.steps, sampler=sampler, seeds=seeds
        )
        seconds = time.perf_counter() - start
        nearest = torch.cdist(images.flatten(1).double(), data.flatten(1).double()).min(dim=1).values
        rms = (nearest / images[0].numel() ** 0.5).tolist()
        summary[sampler] = {
            "nfe": args.steps,
            "seconds": round(seconds, 3),
            "median_rms_to_nearest": sorted(rms)[len(rms) // 2],
            "rms_to_nearest": rms,
        }
        rows.append(images)
        print(
            f"{sampler:>13}: {args.n} samples, {args.steps} NFE, {seconds:.2f} s, median RMS distance to the "
            f"nearest reference {summary[sampler]['median_rms_to_nearest']:.4f}"
        )
    save_image_grid(torch.cat(rows).clamp(-1, 1), out / "samples.png", columns=args.n, scale=3)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'forward.png'}, {out / 'samples.png'} and {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
