"""Restoration by trained models, one per operator: the error against the per-coefficient Wiener filter, and a figure.

    python benchmarks/restore_operators.py --runs blur=runs/blur,pixelate=runs/pixelate,masking=runs/masking \
        --out benchmarks/results/restore_operators-DATE --figure docs/operators.png

For each run (a checkpoint trained with ``--operator ...``, unconditional) and each t in ``--times``: ``--n`` training
images x_0 (the checkpoint's data, a seeded random subset) are corrupted to y = C_t x_0 + σ_t η (seeded), then restored

- blind: ``--t-start auto`` (the maximum-likelihood level of each y, :mod:`softdiff.restoration`), the sampler from
  the estimated start, ``--nfe`` steps; and
- by the Wiener filter of the data spectrum at the true (ℓ, σ): per coefficient x̂ = m + v d/(d² v + σ²)(z − d m),
  the posterior mean of Gaussian data with the checkpoint's per-coefficient means and variances.

Scores: the root-mean-square error to x_0 over pixels in [-1, 1] units (the Wiener filter minimises it among linear
estimators of Gaussian data; a sampler draws one plausible image, so its RMS error is expected higher, up to √2 of
the posterior spread), and the share of restorations the digit metric's classifier gives x_0's label with
confidence ≥ 0.9 (MNIST runs). Writes ``DIR/restore_operators.json`` and ``.md``; ``--figure``: a row per run,
clean | corrupted | restored for 6 digits at t = ``--figure-t``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

import softdiff as sd
from softdiff.data.loaders import load_data
from softdiff.images import save_image_grid, to_model_range
from softdiff.loading import load_model
from softdiff.restoration import estimate_corruption, start_at_estimate
from softdiff.spectra import gaussian_basis
from softdiff_kernels import seeded_normal

NOISE_STREAM = 2**32 - 2
SUBSET_SEED = 0  # which training images are corrupted and restored


def wiener(process, y: torch.Tensor, t: float) -> torch.Tensor:
    """The data spectrum's posterior mean of x_0 given y at the true (ℓ(t), σ_t): ``[B, C, H, W]`` float64."""
    basis, spectrum = gaussian_basis(process.operator), process.data_spectrum
    time = torch.tensor([t], dtype=torch.float64)
    d = process.operator.spectrum(process.level(time), *y.shape[-2:])
    sigma2 = float(process.sigma(time)) ** 2
    z = basis.forward(y.double())
    gain = spectrum.variance * d / (d.square() * spectrum.variance + sigma2)
    return basis.inverse(spectrum.mean + gain * (z - d * spectrum.mean))


def restore(denoiser, process, y: torch.Tensor, seeds: list[int], nfe: int, sampler: str) -> torch.Tensor:
    """Blind restoration of each image of y ``[B, C, H, W]``, from its own estimated start."""
    out = []
    for image, seed in zip(y, seeds, strict=True):
        estimate = estimate_corruption(process, image[None])
        noise = seeded_normal(torch.tensor([seed]), tuple(image.shape), NOISE_STREAM)
        x_start = start_at_estimate(process, image[None].float(), estimate, noise)
        out.append(sd.sample(denoiser, process, x_start.shape, steps=nfe, sampler=sampler, seeds=[seed],
                             x_start=x_start, t_start=estimate.t_start))  # fmt: skip
    return torch.cat(out).clamp(-1, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="name=checkpoint-or-run-folder, comma-separated")
    parser.add_argument("--times", default="0.3,0.5,0.7", help="corruption times t")
    parser.add_argument("--n", type=int, default=64, help="images per (run, t)")
    parser.add_argument("--nfe", type=int, default=50)
    parser.add_argument("--sampler", default="momentum", choices=sd.samplers.SAMPLERS)
    parser.add_argument("--out", required=True)
    parser.add_argument("--figure", default=None, help="PNG: clean | corrupted | restored, a row per run")
    parser.add_argument("--figure-t", type=float, default=0.5)
    args = parser.parse_args(argv)
    runs = dict(item.split("=", 1) for item in args.runs.split(","))
    times = [float(v) for v in args.times.split(",")]
    records, rows = [], []
    classifier = None
    for name, ckpt in runs.items():
        denoiser, process, config = load_model(ckpt, weights="ema", device=torch.device("cpu"))
        data = load_data(config.data, size=config.resolution)
        if process.data_spectrum is None:  # a checkpoint from before the spectrum was stored: fit it here
            process.fit_data_spectrum(data.images)
        # a seeded random subset: the files are ordered (MNIST's first 32 digits are zeros and ones)
        chosen = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(SUBSET_SEED))[: args.n]
        x0 = to_model_range(data.images[chosen])
        labels = data.labels[chosen] if config.data.startswith("mnist") else None
        if labels is not None and classifier is None:
            from softdiff.metrics.digits import _predict, as_digits, digit_reference

            reference = digit_reference(config.data)
            classifier = lambda images, model=reference.model: _predict(model, as_digits(images))[0]  # noqa: E731
        for t in times:
            seeds = list(range(args.n))
            noise = seeded_normal(torch.tensor(seeds), tuple(x0.shape[1:]), NOISE_STREAM - 1)
            t_batch = torch.full((args.n,), t)
            y = process.apply(x0, t_batch) + process.sigma(t_batch).view(-1, 1, 1, 1) * noise
            restored = restore(denoiser, process, y, seeds, args.nfe, args.sampler)
            linear = wiener(process, y, t).float().clamp(-1, 1)
            record = dict(run=name, operator=process.operator.label, t=t, n=args.n, nfe=args.nfe, sampler=args.sampler,
                          level=float(process.level(torch.tensor([t]))), sigma=float(process.sigma(torch.tensor([t]))),
                          rms_restored=float((restored - x0).square().mean().sqrt()),
                          rms_wiener=float((linear - x0).square().mean().sqrt()))  # fmt: skip
            if labels is not None:
                for key, images in (("label_kept_restored", restored), ("label_kept_wiener", linear)):
                    probabilities = classifier(images)
                    confident = probabilities.max(dim=1).values >= 0.9
                    record[key] = float((confident & (probabilities.argmax(dim=1) == labels)).float().mean())
            records.append(record)
            print(json.dumps(record), flush=True)
            if args.figure and abs(t - args.figure_t) < 1e-9:
                rows += [x0[:6], y[:6].clamp(-1, 1), restored[:6]]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv),
            "torch": torch.__version__}  # fmt: skip
    (out / "restore_operators.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    lines = ["| run | t | level | σ | RMS restored | RMS Wiener | label kept, restored | label kept, Wiener |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in records:
        kept = [f"{100 * r[k]:.0f}%" if k in r else "" for k in ("label_kept_restored", "label_kept_wiener")]
        lines.append(f"| {r['run']} | {r['t']:g} | {r['level']:.3g} | {r['sigma']:.3g} | {r['rms_restored']:.3f} | "
                     f"{r['rms_wiener']:.3f} | {kept[0]} | {kept[1]} |")  # fmt: skip
    (out / "restore_operators.md").write_text("\n".join(lines) + "\n")
    if args.figure:
        # a row per run: 6 clean | 6 corrupted | 6 restored (grey runs shown in RGB beside colour ones)
        channels = max(part.shape[1] for part in rows)
        rows = [part.expand(-1, channels, -1, -1) for part in rows]
        grid = torch.cat([torch.cat(rows[i : i + 3]) for i in range(0, len(rows), 3)])
        save_image_grid(grid, Path(args.figure), scale=2, columns=18)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
