"""Make docs/restore.png: clean | corrupted at level t | restored, for held-out images of the built-in data set.

    python docs/make_restore_figure.py --ckpt runs/demo --t-start 0.4 --out docs/restore.png

The corrupted row is x_t = C_t x_0 + σ_t η (the model's own process, a fixed seed); the restored row runs the
sampler from x_t at t to 0, as ``python -m softdiff.sample --restore IMAGE --t-start T`` does for one image file.
The images come from the shapes generator past the training set (indices 100000 on), so the model never saw them.
"""

from __future__ import annotations

import argparse

import torch

import softdiff as sd
from softdiff.data import make_shapes
from softdiff.images import save_image_grid
from softdiff.loading import load_model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint file or run folder")
    parser.add_argument("--t-start", type=float, default=0.4, help="corruption level t in (0, 1]")
    parser.add_argument("--n", type=int, default=8, help="images (columns)")
    parser.add_argument("--steps", type=int, default=50, help="network evaluations of the restoration")
    parser.add_argument("--sampler", default="momentum", choices=sd.samplers.SAMPLERS)
    parser.add_argument("--out", default="docs/restore.png")
    args = parser.parse_args(argv)

    denoiser, process, config = load_model(args.ckpt, weights="ema", device=torch.device("cpu"))
    clean = make_shapes(args.n, size=config.resolution, start=100_000)  # [n, 3, H, W] in [-1, 1]
    t = torch.full((args.n,), args.t_start)
    corrupted = process.corrupt(clean, t, seed=torch.arange(args.n))
    restored = sd.sample(denoiser, process, tuple(clean.shape), steps=args.steps, sampler=args.sampler,
                         seeds=range(args.n), x_start=corrupted, t_start=args.t_start)  # fmt: skip
    rows = torch.cat([clean, corrupted, restored]).clamp(-1, 1)
    path = save_image_grid(rows, args.out, columns=args.n, scale=3)
    sigma, level = process.sigma(t[:1]).item(), process.level(t[:1]).item()
    print(f"wrote {path}: rows clean | corrupted (t={args.t_start}, σ={sigma:.3f}, blur σ_B={level:.2f} px) | restored")


if __name__ == "__main__":
    main()
