"""Where along t a trained model stops knowing the data: two measurements on held-out images of the built-in set.

1. Denoiser: ‖C_t(D(x_t) − x_0)‖² / ‖C_t(W(x_t) − x_0)‖² at each t, with W the per-coefficient Wiener filter of
   the data spectrum (each DCT coefficient estimated from its own corrupted value: the ``wiener`` skip path). This
   is the soft loss's own error measure. For reference, the same ratio for L, the best linear filter of all
   (the full D × D second-moment matrix of the shapes in the DCT basis, D = C·H·W ≤ 4096, from 8·D fresh images of
   the generator): it uses the correlations between coefficients and channels that W ignores, so only a denoiser
   ratio below L's shows that the network learned what no linear filter can.
2. Sampler: corrupt each image to x_{t_s} = C x_0 + σ η, run the sampler from t_s to 0 (round(nfe · t_s) steps) with
   the network and, for reference, with W (a Gaussian model of the data), and report mse(restored, x_0) of the
   network over W's. Rows of the PNG: the clean images, then the network's restorations from each t_s. Where the
   restorations turn from the original shapes into other outlines, generation depends on what the network learned
   at that t.

    python benchmarks/restore_depth.py --ckpt runs/shapes [--n 256] [--times 0.1,0.2,0.3,0.4,0.5,0.7] [--nfe 50]
        [--device cuda]

Writes ``OUT/restore_depth.md``, ``.json`` and ``.png`` (OUT: ``--out`` or benchmarks/results/restore_depth-<date>).
The images are the shapes generator's past the training set (indices 100000 on), so the model never saw them.
About four minutes for the demo model (256 images) on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import torch

import softdiff as sd
import softdiff_kernels as sk
from softdiff.data import load_images, make_shapes
from softdiff.denoiser import data_second_moment
from softdiff.images import save_image_grid
from softdiff.loading import load_model
from softdiff.oracle import GaussianDenoiser
from softdiff.schedule_design import FrechetW2

HELD_OUT_START = 100_000


def parse_times(text: str) -> list[float]:
    times = [float(part) for part in text.split(",") if part.strip()]
    if not times or not all(0 < t <= 1 for t in times):
        raise argparse.ArgumentTypeError(f"times must be comma-separated numbers in (0, 1]; got {text!r}")
    return times


def soft_error(denoiser, process, clean: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> float:
    """mean ‖C_t(D(x_t) − x_0)‖² over images and pixels."""
    return float(process.apply(denoiser(x_t, t) - clean, t).square().mean())


class FullLinearDenoiser:
    """The best linear estimate of x_0 from x_t for data with second-moment matrix M = E[z zᵀ] in the DCT basis
    (z = DCT2(x_0) flattened, D = C·H·W): ẑ_0 = M C_t (C_t M C_t + σ_t² I)⁻¹ z_t. Per t, one D × D solve in float64.
    M must come from many more images than D (8·D here), or the filter fits their noise.

    Args:
        data: images ``[N, C, H, W]`` in [-1, 1] whose second moments define the filter (any float dtype).
        process: the diffusion process (its blur is diagonal in the DCT basis).
    """

    MAX_DIMENSION = 4096
    FIT_START = 200_000  # shapes generator indices of the fitting images: past training and held-out ones

    def __init__(self, data: torch.Tensor, process, *, batch_size: int = 1024):
        self.image_shape = tuple(data.shape[1:])
        fit = FrechetW2.from_data(data, sd.DCTBlur(), max_dimension=self.MAX_DIMENSION, batch_size=batch_size)
        self.second_moment = fit.covariance + fit.mean[:, None] * fit.mean[None, :]  # E[z zᵀ] = S + μ μᵀ
        self.process = process

    @classmethod
    def for_shapes(cls, size: int, process, *, device=None):
        """Fitted to 8·D shapes images of side ``size`` (None when D = 3·size² exceeds MAX_DIMENSION)."""
        dimension = 3 * size * size
        if dimension > cls.MAX_DIMENSION:
            return None
        return cls(make_shapes(8 * dimension, size=size, start=cls.FIT_START).to(device), process)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t ``[B, C, H, W]`` at one common t ``[B]`` -> x̂_0 ``[B, C, H, W]`` (dtype of x_t)."""
        if not bool((t == t[0]).all()):
            raise ValueError("FullLinearDenoiser takes one t per call")
        channels, height, width = self.image_shape
        moment = self.second_moment.to(x_t.device)
        level, sigma = (v.to(torch.float64) for v in (self.process.level(t[:1]), self.process.sigma(t[:1])))
        d = self.process.operator.spectrum(level, height, width)[0].expand(channels, height, width).flatten()
        identity = torch.eye(d.numel(), dtype=torch.float64, device=moment.device)
        system = d[:, None] * moment * d[None, :] + float(sigma) ** 2 * identity
        z_t = sk.dct2(x_t.to(torch.float64)).flatten(1)  # [B, D]
        z_0 = torch.linalg.solve(system, z_t.T).T @ (d[:, None] * moment)  # z_t (C M C + σ² I)⁻¹ C M
        return sk.idct2(z_0.view(-1, channels, height, width)).to(x_t.dtype)


def format_ratio(record: dict) -> str:
    return "–" if record["full_linear_ratio"] is None else f"{record['full_linear_ratio']:.3f}"


def measure(
    denoiser, linear, process, clean: torch.Tensor, t_value: float, *, nfe: int, sampler: str, full_linear=None
) -> tuple[dict, torch.Tensor]:
    """Both ratios at one t for held-out images ``clean`` ``[N, C, H, W]`` (and the full linear filter's denoiser
    ratio when given): (the record, the network's restorations ``[N, C, H, W]``)."""
    count = clean.shape[0]
    t = torch.full((count,), t_value, device=clean.device)
    x_t = process.corrupt(clean, t, seed=torch.arange(count, device=clean.device))
    steps = max(1, round(nfe * t_value))
    options = dict(steps=steps, sampler=sampler, seeds=range(count), x_start=x_t, t_start=t_value)
    restored = {
        name: sd.sample(model, process, tuple(clean.shape), **options)
        for name, model in (("network", denoiser), ("linear", linear))
    }
    restore_mse = {name: float((images.clamp(-1, 1) - clean).square().mean()) for name, images in restored.items()}
    linear_error = soft_error(linear, process, clean, x_t, t)
    full_linear_ratio = None
    if full_linear is not None:
        full_linear_ratio = soft_error(full_linear, process, clean, x_t, t) / linear_error
    record = {
        "t": t_value,
        "steps": steps,
        "sigma": float(process.sigma(t[:1])),
        "blur_px": float(process.level(t[:1])),
        "denoiser_ratio": soft_error(denoiser, process, clean, x_t, t) / linear_error,
        "full_linear_ratio": full_linear_ratio,
        "restore_mse_network": restore_mse["network"],
        "restore_mse_linear": restore_mse["linear"],
        "restore_ratio": restore_mse["network"] / restore_mse["linear"],
    }
    return record, restored["network"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint file or run folder of a model trained on shapes")
    parser.add_argument("--n", type=int, default=256, help="held-out images measured")
    parser.add_argument("--show", type=int, default=None, help="images (columns) in the PNG (default min(12, n))")
    parser.add_argument("--times", type=parse_times, default=parse_times("0.1,0.2,0.3,0.4,0.5,0.7"), help="t values")
    parser.add_argument("--nfe", type=int, default=50, help="network evaluations of a restoration from t = 1")
    parser.add_argument("--sampler", default="momentum", choices=sd.samplers.SAMPLERS)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    if args.show is None:
        args.show = min(12, args.n)
    if args.n < 1 or args.nfe < 1 or not 1 <= args.show <= args.n:
        raise SystemExit("restore_depth: need --n >= 1, --nfe >= 1 and 1 <= --show <= --n")

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    denoiser, process, config = load_model(args.ckpt, weights="ema", device=device)
    if not config.data.startswith("shapes"):
        raise SystemExit(f"restore_depth: the model was trained on {config.data!r}; this measures shapes models only")
    size = config.resolution
    moment = denoiser.second_moment
    if moment is None:  # not a Wiener-preconditioned model: the data spectrum of its training set
        moment = data_second_moment(process.operator, load_images(config.data, size=size))
    linear = GaussianDenoiser(moment, process)  # the Wiener filter: posterior mean of N(0, diag(s_f)) in the DCT basis
    full_linear = FullLinearDenoiser.for_shapes(size, process, device=device)
    clean = make_shapes(args.n, size=size, start=HELD_OUT_START).to(device)

    rows, records = [clean[: args.show].cpu()], []
    with torch.no_grad():
        for t_value in args.times:
            record, restored = measure(denoiser, linear, process, clean, t_value, nfe=args.nfe, sampler=args.sampler,
                                       full_linear=full_linear)  # fmt: skip
            rows.append(restored[: args.show].cpu())
            records.append(record)
            print(f"t={t_value:<5} denoiser {record['denoiser_ratio']:.3f} (best linear {format_ratio(record)})  "
                  f"restore {record['restore_ratio']:.3f}", flush=True)  # fmt: skip

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M")
    out = args.out or Path("benchmarks/results") / f"restore_depth-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    grid = torch.cat(rows).clamp(-1, 1)
    save_image_grid(grid, out / "restore_depth.png", columns=args.show, scale=max(1, 64 // size))
    trained = ("data", "resolution", "net", "steps", "precond", "weighting", "t_power", "sigma_max")
    meta = {"date": stamp, "ckpt": str(args.ckpt), "device": str(device), "torch": torch.__version__, "n": args.n,
            "nfe": args.nfe, "sampler": args.sampler, "config": {k: getattr(config, k) for k in trained}}  # fmt: skip
    (out / "restore_depth.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    lines = [f"# Restore depth ({stamp} UTC)", "",
             f"`python benchmarks/restore_depth.py --ckpt {args.ckpt} --n {args.n} --nfe {args.nfe}`; model: "
             f"{config.net} net, {config.resolution}x{config.resolution}, {config.steps} steps, precond "
             f"{config.precond}. {args.n} held-out images. Denoiser: ‖C_t(D − x_0)‖² over the per-coefficient Wiener "
             "filter's (1 = nothing beyond it); best linear: the same ratio for the full-covariance linear filter of "
             "the shapes (below it = beyond any linear filter; – when C·H·W > 4096). Restore: mse(sampled "
             "from x_t, x_0), network over the Wiener filter used as the denoiser.", "",
             "| t | σ | blur σ_B (px) | steps | denoiser ratio | best linear | restore mse: network | linear | ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in records:
        cells = [f"{r['sigma']:.3f}", f"{r['blur_px']:.2f}", str(r["steps"]), f"{r['denoiser_ratio']:.3f}"]
        cells.append(format_ratio(r))
        cells += [f"{r['restore_mse_network']:.4f}", f"{r['restore_mse_linear']:.4f}", f"{r['restore_ratio']:.3f}"]
        lines.append(f"| {r['t']} | " + " | ".join(cells) + " |")
    lines += ["", "restore_depth.png: row 1 the clean images, then the network's restorations from each t above."]
    (out / "restore_depth.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}/restore_depth.md, .json and .png")


if __name__ == "__main__":
    main()
