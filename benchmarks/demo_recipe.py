"""Why the demo preset trains with ``precond="wiener"``, ``weighting="sigma2"`` and ``t_power=3``: short controlled
runs on the CPU, one per recipe, measuring what the network learned at each t.

Each run trains the ``tiny`` U-Net for ``--steps`` Adam steps (batch 32, lr 2e-3, 50 warm-up steps, gradient clip 1)
on ``shapes`` at ``--size`` px with the demo's process (DCT blur up to 0.36·size px, σ from 0.02 to 5), then
reports, on 256 held-out images, mse(D(x_t), x_0) / mse(W(x_t), x_0) at several t, where W is the per-coefficient
Wiener filter of the data spectrum (the ``"wiener"`` skip path alone). 1.000: the network outputs nothing beyond
the skip path; above 1: it is worse than W; below 1: it improves on W. Not every improvement is non-linear: the best
linear filter with the full covariance reaches 0.89–0.98 of W's mse at 16×16 (t = 0.1–0.5;
``benchmarks/restore_depth.py`` reports it beside its own ratios).

    python benchmarks/demo_recipe.py [--steps 300] [--size 16] [--out benchmarks/results]

Writes ``OUT/demo_recipe-<date>.md`` and ``.json``. About one minute per recipe on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import softdiff as sd
from softdiff.data import make_shapes
from softdiff.denoiser import Denoiser, data_second_moment
from softdiff.networks import build_unet
from softdiff.oracle import GaussianDenoiser
from softdiff.schedules import default_blur_max

EVAL_TIMES = (0.02, 0.1, 0.2, 0.3, 0.5, 0.7)

# (name, precond, weighting, t sampling); t sampling: "uniform", "power3", or "fixed0.02"
RECIPES = [
    ("EDM, λ=1/c_out², t uniform (paper presets)", "edm", "edm", "uniform"),
    ("EDM, λ=1/σ², t uniform", "edm", "sigma2", "uniform"),
    ("EDM, λ=1/c_out², t = u³", "edm", "edm", "power3"),
    ("Wiener, λ=1/σ², t uniform", "wiener", "sigma2", "uniform"),
    ("Wiener, λ=1/σ², t = u³ (demo preset)", "wiener", "sigma2", "power3"),
    ("EDM, λ=1/c_out², t = 0.02 only (reference)", "edm", "edm", "fixed0.02"),
]


def training_times(mode: str, batch: int, generator: torch.Generator) -> torch.Tensor:
    if mode.startswith("fixed"):
        return torch.full((batch,), float(mode[len("fixed") :]))
    power = 3.0 if mode == "power3" else 1.0
    return sd.stratified_times(batch, power=power, generator=generator)


def run_recipe(precond: str, weighting: str, times: str, *, steps: int, size: int, data, held_out) -> dict:
    torch.manual_seed(0)
    process = sd.SoftDiffusionProcess(
        sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 5.0), levels=sd.LevelSchedule.sin2(default_blur_max(size, size))
    )
    moment = data_second_moment(process.operator, data)
    net = build_unet("tiny", resolution=size, image_channels=3)
    denoiser = Denoiser(net, process, precond=precond, second_moment=moment if precond == "wiener" else None)
    linear = GaussianDenoiser(moment, process)  # the Wiener filter: posterior mean of N(0, diag(s_f)) in the DCT basis
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = 2e-3 * min(1.0, (step + 1) / 50)
        x0 = data[torch.randint(0, len(data), (32,), generator=generator)]
        t = training_times(times, 32, generator)
        loss = sd.soft_score_matching_loss(denoiser, x0, process, weighting=weighting, t=t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
    seconds = time.perf_counter() - start
    ratios = {}
    noise_generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for t_value in EVAL_TIMES:
            t = torch.full((len(held_out),), t_value)
            noise = torch.randn(held_out.shape, generator=noise_generator)
            x_t = process.corrupt(held_out, t, noise=noise)
            network = (denoiser(x_t, t) - held_out).square().mean()
            best_linear = (linear(x_t, t) - held_out).square().mean()
            ratios[str(t_value)] = float(network / best_linear)
    return {"ratios": ratios, "seconds": seconds}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="Adam steps per recipe")
    parser.add_argument("--size", type=int, default=16, help="image side in pixels")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output folder")
    args = parser.parse_args(argv)
    data = make_shapes(4096, size=args.size)
    held_out = make_shapes(256, size=args.size, seed=123)
    records = []
    for name, precond, weighting, times in RECIPES:
        result = run_recipe(precond, weighting, times, steps=args.steps, size=args.size, data=data, held_out=held_out)
        records.append({"recipe": name, "precond": precond, "weighting": weighting, "t": times, **result})
        cells = " ".join(f"{t}:{r:.3f}" for t, r in result["ratios"].items())
        print(f"{name:48s} {cells}  ({result['seconds']:.0f} s)", flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"date": stamp, "steps": args.steps, "size": args.size, "torch": torch.__version__,
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}  # fmt: skip
    (args.out / f"demo_recipe-{stamp}.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    lines = [f"# Demo recipe: what a short run learns ({stamp} UTC)", "",
             f"`python benchmarks/demo_recipe.py --steps {args.steps} --size {args.size}`; torch {torch.__version__}, "
             f"{meta['threads']} CPU threads. Cells: mse(D, x_0) / mse(W, x_0) on 256 held-out images at each t, W "
             "the per-coefficient Wiener filter (1.000 = nothing learned beyond it).", "",
             "| recipe | " + " | ".join(f"t={t}" for t in EVAL_TIMES) + " | seconds |",
             "|---|" + "---|" * (len(EVAL_TIMES) + 1)]  # fmt: skip
    for record in records:
        cells = " | ".join(f"{record['ratios'][str(t)]:.3f}" for t in EVAL_TIMES)
        lines.append(f"| {record['recipe']} | {cells} | {record['seconds']:.0f} |")
    (args.out / f"demo_recipe-{stamp}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}/demo_recipe-{stamp}.md and .json")


if __name__ == "__main__":
    main()
