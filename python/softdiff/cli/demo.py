"""``python -m softdiff.demo``: Soft Diffusion end to end with no training, in seconds on a CPU.

Two exact denoisers stand in for a trained network, so the samplers run on the true score:

1. The exact posterior mean of a finite set of built-in ``shapes`` images
   (:class:`~softdiff.oracle.EmpiricalDenoiser`). A correct sampler ends on (a copy of) one of them.
2. The exact posterior mean of a Gaussian with a natural-image-like spectrum
   (:class:`~softdiff.oracle.GaussianDenoiser`), whose law is known: the relative Wasserstein-2 distance
   between the samples' and the true per-frequency standard deviations, ‖√v − √λ‖ / ‖√λ‖, measures each
   sampler at a given number of network evaluations (NFE). This is where the momentum sampler beats the
   paper's naive one.

Writes:
    OUT/forward.png   per image, two rows for t = 0 .. 1: the blur alone C_t x_0, then x_t = C_t x_0 + σ_t η
    OUT/samples.png   one row per sampler (momentum, naive, momentum_ode), same seeds, shapes oracle
    OUT/summary.json  per sampler: RMS distance of each shapes sample to its nearest reference, and the
                      Gaussian-oracle relative W2 at each NFE
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..compute import THREADS_HELP, compute_summary, use_threads
from ..data import make_shapes
from ..images import save_image_grid
from ..operators import DCTBlur
from ..oracle import EmpiricalDenoiser, GaussianDenoiser
from ..process import SoftDiffusionProcess
from ..samplers import sample
from ..schedules import GeometricNoise, LevelSchedule, default_blur_max

PAPER_SAMPLERS = ("momentum", "naive", "momentum_ode")  # the paper's three; benchmarks/nfe_speed.py runs them all


def _parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m softdiff.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--references", type=int, default=256, help="shapes images the oracle knows (default 256)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--n", type=int, default=8, help="shapes samples per sampler (default 8)")
    parser.add_argument("--steps", type=int, default=100, help="NFE for the shapes samples (default 100)")
    parser.add_argument("--gaussian-n", type=int, default=500, help="Gaussian-oracle samples per run (default 500)")
    parser.add_argument("--gaussian-nfe", type=int, nargs="+", default=[10, 50], help="NFEs measured (default 10 50)")
    parser.add_argument("--sigma-max", type=float, default=100.0, help="σ(1) in [-1, 1] units (default 100)")
    parser.add_argument("--blur-max", type=float, default=None, help="blur σ_B(1) in pixels (default 0.36 · size)")
    parser.add_argument("--seed", type=int, default=0, help="first sample seed (default 0)")
    parser.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    args = parser.parse_args(argv)
    for name, value, low in (("--references", args.references, 3), ("--size", args.size, 4), ("--n", args.n, 1),
                             ("--steps", args.steps, 1), ("--gaussian-n", args.gaussian_n, 2),
                             ("--gaussian-nfe", min(args.gaussian_nfe), 1)):  # fmt: skip
        if value < low:
            parser.error(f"{name} must be >= {low} (got {value})")
    return args


def main(argv=None) -> dict:
    args = _parse_args(argv)
    threads = use_threads(args.threads, "softdiff.demo")
    print(f"softdiff.demo: {compute_summary(torch.device('cpu'), threads)}")
    out = Path(args.out)
    blur_max = default_blur_max(args.size, args.size) if args.blur_max is None else args.blur_max
    process = SoftDiffusionProcess(
        DCTBlur(), noise=GeometricNoise(0.02, args.sigma_max), levels=LevelSchedule.sin2(blur_max)
    )
    image_shape = (3, args.size, args.size)
    data = make_shapes(args.references, size=args.size)
    shapes_oracle = EmpiricalDenoiser(data, process)
    gaussian_oracle = GaussianDenoiser.power_law(process, image_shape)

    times = torch.linspace(0, 1, 9)
    strip = []
    for i in range(3):
        clean = data[i : i + 1].expand(len(times), -1, -1, -1)
        strip += [process.apply(clean, times), process.corrupt(clean, times, seed=len(times) * i)]
    save_image_grid(torch.cat(strip).clamp(-1, 1), out / "forward.png", columns=len(times), scale=3)

    seeds = list(range(args.seed, args.seed + args.n))
    rows, summary = [], {}
    print(
        f"Gaussian oracle {image_shape}: relative W2 of {args.gaussian_n} samples to the true law "
        f"(0 = exact; Monte Carlo floor ≈ {1 / (2 * args.gaussian_n) ** 0.5:.3f})"
    )
    print(
        f"{'sampler':>13} " + " ".join(f"{f'NFE={nfe}':>9}" for nfe in args.gaussian_nfe) + "   shapes: RMS to nearest"
    )
    for sampler in PAPER_SAMPLERS:
        start = time.perf_counter()
        images = sample(shapes_oracle, process, (args.n, *image_shape), steps=args.steps, sampler=sampler, seeds=seeds)
        seconds = time.perf_counter() - start
        nearest = torch.cdist(images.flatten(1).double(), data.flatten(1).double()).min(dim=1).values
        rms = (nearest / images[0].numel() ** 0.5).tolist()
        rows.append(images)
        w2 = {}
        for nfe in args.gaussian_nfe:
            draws = sample(
                gaussian_oracle,
                process,
                (args.gaussian_n, *image_shape),
                steps=nfe,
                sampler=sampler,
                seeds=range(args.gaussian_n),
            )
            w2[nfe] = gaussian_oracle.relative_w2(draws)
        summary[sampler] = {
            "shapes": {"nfe": args.steps, "seconds": round(seconds, 3), "rms_to_nearest": rms},
            "gaussian_w2_rel": w2,
        }
        print(
            f"{sampler:>13} "
            + " ".join(f"{w2[nfe]:9.4f}" for nfe in args.gaussian_nfe)
            + f"   max {max(rms):.2e} ({args.steps} NFE)"
        )
    save_image_grid(torch.cat(rows).clamp(-1, 1), out / "samples.png", columns=args.n, scale=3)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'forward.png'}, {out / 'samples.png'} and {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
