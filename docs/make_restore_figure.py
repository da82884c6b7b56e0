"""Make docs/restore.png: clean | corrupted at level t | restored, for images of the model's data set.

    python docs/make_restore_figure.py --ckpt runs/demo --t-start 0.4 --out docs/restore.png

The corrupted row is x_t = C_t x_0 + σ_t η (the model's own process, a fixed seed); the restored row runs the
sampler from x_t at t to 0, as ``python -m softdiff.sample --restore IMAGE --t-start T`` does for one image file.
For a model trained on ``shapes`` the images come from the generator past the training set (indices 100000 on),
so the model never saw them. For one trained on MNIST they are one digit of each class, the last of each in the
data (the digit metric's held-out part): with ``--data mnist`` the model trained on all 5000, so it has seen
them; with the IDX files give ``--images mnist:PATH:split=test`` for digits it never saw. A class-conditional model
restores blind, with the unconditional branch ∅ (the class of an image to restore is unknown), and a fourth row
restores with each digit's true label.
"""

from __future__ import annotations

import argparse

import torch

import softdiff as sd
from softdiff.conditioning import NO_LABEL
from softdiff.data import make_shapes, to_model_range
from softdiff.data.loaders import load_data
from softdiff.images import save_image_grid
from softdiff.loading import load_model


def figure_images(spec: str, resolution: int, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``count`` images ``[n, C, H, W]`` in [-1, 1] and their labels ``[n]`` (None without): shapes past any
    training set, or the last digit of each class of a labelled set (cycling through the classes)."""
    if spec.startswith("shapes"):
        return make_shapes(count, size=resolution, start=100_000), None
    data = load_data(spec, size=resolution)
    if data.labels is None:
        return to_model_range(data.images[-count:]), None
    picks = torch.stack([torch.nonzero(data.labels == k % data.classes).flatten()[-1 - k // data.classes]
                         for k in range(count)])  # fmt: skip
    return to_model_range(data.images[picks]), data.labels[picks]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint file or run folder")
    parser.add_argument("--t-start", type=float, default=0.4, help="corruption level t in (0, 1]")
    parser.add_argument("--n", type=int, default=8, help="images (columns)")
    parser.add_argument("--steps", type=int, default=50, help="network evaluations of the restoration")
    parser.add_argument("--sampler", default="momentum", choices=sd.samplers.SAMPLERS)
    parser.add_argument("--images", default=None, help="a labelled data spec to take the digits from (MNIST models)")
    parser.add_argument("--out", default="docs/restore.png")
    args = parser.parse_args(argv)

    denoiser, process, config = load_model(args.ckpt, weights="ema", device=torch.device("cpu"))
    clean, labels = figure_images(args.images or config.data, config.resolution, args.n)
    t = torch.full((args.n,), args.t_start)
    corrupted = process.corrupt(clean, t, seed=torch.arange(args.n))

    def restore(given: torch.Tensor | None) -> torch.Tensor:
        return sd.sample(denoiser, process, tuple(clean.shape), steps=args.steps, sampler=args.sampler,
                         seeds=range(args.n), x_start=corrupted, t_start=args.t_start, labels=given)  # fmt: skip

    conditional = denoiser.net.config.label_classes > 0
    rows = [clean, corrupted, restore(torch.full((args.n,), NO_LABEL) if conditional else None)]
    if conditional and labels is not None:
        rows.append(restore(labels))
    rows = torch.cat(rows).clamp(-1, 1)
    path = save_image_grid(rows, args.out, columns=args.n, scale=3)
    sigma, level = process.sigma(t[:1]).item(), process.level(t[:1]).item()
    last = " | restored with the true label" if len(rows) > 3 * args.n else ""
    print(
        f"wrote {path}: rows clean | corrupted (t={args.t_start}, σ={sigma:.3f}, blur σ_B={level:.2f} px) | "
        f"restored{last}"
    )


if __name__ == "__main__":
    main()
