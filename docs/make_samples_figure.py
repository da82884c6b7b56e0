"""Make a figure of samples, a row per checkpoint, the same seeds in every row (e.g. docs/masking_gap.png).

    python docs/make_samples_figure.py --runs runs/masking-soft,runs/masking-ahead,runs/masking-cold \
        --n 12 --steps 50 --out docs/masking_gap.png

Row k: ``--n`` samples of the k-th checkpoint (EMA weights, seeds 0..n−1, ``--sampler`` with ``--steps`` network
evaluations; a class-conditional model draws the labels 0-9 cycled, no guidance), as ``python -m softdiff.sample``
draws them. The checkpoints must share the image shape.
"""

from __future__ import annotations

import argparse

import torch

import softdiff as sd
from softdiff.images import save_image_grid
from softdiff.loading import cycled, labels_to_draw, load_model


def samples_of(ckpt: str, n: int, steps: int, sampler: str) -> torch.Tensor:
    """``n`` samples ``[n, C, H, W]`` in [-1, 1] of the checkpoint ``ckpt`` (seeds 0..n−1)."""
    denoiser, process, config = load_model(ckpt, weights="ema", device=torch.device("cpu"))
    labels = cycled(labels_to_draw(None, denoiser.net.config.label_classes), n)
    shape = (n, denoiser.net.config.image_channels, config.resolution, config.resolution)
    return sd.sample(denoiser, process, shape, steps=steps, sampler=sampler, seeds=range(n), labels=labels)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="checkpoints or run folders, comma-separated: a row each")
    parser.add_argument("--n", type=int, default=12, help="samples (columns)")
    parser.add_argument("--steps", type=int, default=50, help="network evaluations per sample")
    parser.add_argument("--sampler", default="momentum", choices=sd.samplers.SAMPLERS)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    runs = [run for run in args.runs.split(",") if run]
    rows = torch.cat([samples_of(run, args.n, args.steps, args.sampler) for run in runs]).clamp(-1, 1)
    path = save_image_grid(rows, args.out, columns=args.n, scale=3)
    print(f"wrote {path}: rows " + " | ".join(runs))


if __name__ == "__main__":
    main()
