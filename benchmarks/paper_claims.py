"""The paper's three claims at small scale, on the built-in ``shapes`` data with the ``tiny`` U-Net and equal budgets.

Daras et al. report on CelebA-64: (1) the Momentum Sampler beats the naive one (FID 1.85 vs 27.82); (2) Soft Score
Matching beats the plain clean-image loss of Cold Diffusion (1.85 vs 5.91); (3) blur + noise reaches the quality of
Gaussian diffusion with far fewer network evaluations. This script trains three models with the shapes preset's
recipe and the same number of steps, differing in one thing each:

    soft      DCT blur + noise, soft loss           (the shapes preset)
    cold      DCT blur + noise, ``--loss cold``     (claim 2's ablation)
    gaussian  ``--operator identity`` (C = I)       (claim 3's baseline: plain variance-exploding diffusion)

then samples each with the momentum and naive samplers at several NFE and scores the samples against the training
data with the offline proxies of ``python -m softdiff.fid`` (SWD-proxy: sliced Wasserstein distance on
Laplacian-pyramid patches; RandFD-proxy: Fréchet distance of a fixed random network's features). These are not
FID; lower is better for both.

    python benchmarks/paper_claims.py [--steps 1200] [--samples 256] [--nfe 10,20,50,100] [--runs runs/paper_claims]

Training goes through ``python -m softdiff.train`` into ``--runs`` (resumable: run the command again after an
interruption). Writes ``OUT/paper_claims.json`` (one record per model, sampler, NFE and metric), ``OUT/paper_claims.md``
(the table, the commands and a verdict per claim). About 50 minutes on a 2-core CPU with the defaults.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nfe_speed  # benchmarks/nfe_speed.py: checkpoint_records scores a checkpoint per sampler and NFE

MODELS = {
    "soft": [],
    "cold": ["--loss", "cold"],
    "gaussian": ["--operator", "identity"],
}
SAMPLERS = ("momentum", "naive")
METRICS = ("SWD-proxy", "RandFD-proxy")
CLEAR_DIFFERENCE = 0.05  # relative differences at most this are reported as no clear difference


def train(name: str, extra: list[str], *, runs: Path, steps: int, resolution: int) -> tuple[list[str], float]:
    command = [sys.executable, "-m", "softdiff.train", "--preset", "shapes", "--out", str(runs / name),
               "--steps", str(steps), "--resolution", str(resolution), "--sample-every", str(steps),
               "--ckpt-every", "200", *extra]  # fmt: skip
    start = time.perf_counter()
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)
    return command, time.perf_counter() - start


def score(run: Path, args, samplers=SAMPLERS) -> list[dict]:
    """Proxy scores of ``args.samples`` images per (sampler, NFE in ``args.nfe``) from a run's newest checkpoint."""
    options = argparse.Namespace(ckpt=str(run), device="cpu", ref=None, inception=None, ckpt_samplers=samplers,
                                 ckpt_nfe=args.nfe, ckpt_samples=args.samples, batch=args.samples)  # fmt: skip
    return nfe_speed.checkpoint_records(options)


def add_budget_arguments(parser: argparse.ArgumentParser, *, nfe: list[int], runs: str) -> None:
    """The options every training benchmark shares: steps, resolution, samples, NFE, run and result folders."""
    parser.add_argument("--steps", type=int, default=1200, help="training steps per model (the demo's budget)")
    parser.add_argument("--resolution", type=int, default=32, help="image side in pixels")
    parser.add_argument("--samples", type=int, default=256, help="samples per (model, sampler, NFE)")
    parser.add_argument("--nfe", type=nfe_speed.parse_ints, default=nfe, help="NFE values")
    parser.add_argument("--runs", type=Path, default=Path(runs), help="training outputs (resumable)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results/...)")


def results_folder(args, name: str) -> tuple[Path, str]:
    """(``--out`` or benchmarks/results/NAME-<UTC stamp>, created; the stamp)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M")
    out = args.out or Path("benchmarks/results") / f"{name}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    return out, stamp


def run_meta(stamp: str, args, train_seconds: dict) -> dict:
    """What a results file records about the machine and the budget."""
    return {"date": stamp, "torch": torch.__version__, "threads": torch.get_num_threads(), "steps": args.steps,
            "samples": args.samples, "processor": platform.processor() or platform.machine(),
            "train_seconds": train_seconds}  # fmt: skip


def value(records, model, sampler, nfe, metric):
    for r in records:
        if (r["model"], r["sampler"], r["nfe"], r["metric"]) == (model, sampler, nfe, metric):
            return r["value"]
    return None


def relative(a: float, b: float) -> str:
    """How a compares with b: 'better by 12%' (lower), 'worse by 12%', or 'within 5%' (no clear difference)."""
    change = (b - a) / b
    if abs(change) <= CLEAR_DIFFERENCE:
        return f"within {CLEAR_DIFFERENCE:.0%}"
    return f"{'better' if change > 0 else 'worse'} by {abs(change):.0%}"


def verdicts(records: list[dict], nfes: list[int]) -> list[str]:
    """One plain sentence per claim and metric, from the proxies (lower is better)."""
    top = max(nfes)
    lines = []
    for metric in METRICS:
        pairs = [
            (n, value(records, "soft", "momentum", n, metric), value(records, "soft", "naive", n, metric)) for n in nfes
        ]
        cells = ", ".join(f"NFE {n}: {relative(momentum, naive)}" for n, momentum, naive in pairs)
        lines.append(f"- Claim 1, momentum vs naive sampler (soft model), {metric}: momentum is {cells}.")
    for metric in METRICS:
        soft, cold = value(records, "soft", "momentum", top, metric), value(records, "cold", "momentum", top, metric)
        lines.append(f"- Claim 2, soft vs plain (cold) loss, {metric} at {top} NFE (momentum): soft {soft:.4g}, "
                     f"cold {cold:.4g}: soft is {relative(soft, cold)}.")  # fmt: skip
    for metric in METRICS:
        target = value(records, "gaussian", "momentum", top, metric)
        reach = [n for n in nfes if value(records, "soft", "momentum", n, metric) <= target]
        where = f"reaches it at NFE {min(reach)}" if reach else f"does not reach it at any of NFE {nfes}"
        lines.append(f"- Claim 3, blur + noise vs Gaussian, {metric}: Gaussian at {top} NFE scores {target:.4g}; "
                     f"blur + noise (momentum) {where}.")  # fmt: skip
    return lines


def write_markdown(path: Path, records, commands, meta, nfes) -> None:
    lines = [f"# Paper claims at small scale ({meta['date']} UTC)", "",
             f"torch {meta['torch']}, {meta['threads']} CPU threads, {meta['processor']}; {meta['samples']} "
             "samples per cell, scored against the training set with the offline proxies of "
             "`python -m softdiff.fid` (not FID; lower is better).", "", "Commands:", "", "```"]  # fmt: skip
    lines += [" ".join(["python", "-m", *c[2:]]) for c in commands]
    lines += [f"python benchmarks/paper_claims.py --steps {meta['steps']} --samples {meta['samples']} "
              f"--nfe {','.join(map(str, nfes))}", "```", ""]  # fmt: skip
    for metric in METRICS:
        lines += [f"## {metric}", "", "| model | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
                  "|---|---|" + "---|" * len(nfes)]  # fmt: skip
        for model in MODELS:
            for sampler in SAMPLERS:
                cells = " | ".join(f"{value(records, model, sampler, n, metric):.4g}" for n in nfes)
                lines.append(f"| {model} | {sampler} | {cells} |")
        lines.append("")
    lines += ["## Verdicts", "", *verdicts(records, nfes), ""]
    lines += ["Training wall time: " + ", ".join(f"{m} {s:.0f} s" for m, s in meta["train_seconds"].items()), ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_budget_arguments(parser, nfe=[10, 20, 50, 100], runs="runs/paper_claims")
    args = parser.parse_args(argv)
    out, stamp = results_folder(args, "paper_claims")
    commands, train_seconds, records = [], {}, []
    for name, extra in MODELS.items():
        command, seconds = train(name, extra, runs=args.runs, steps=args.steps, resolution=args.resolution)
        commands.append(command)
        train_seconds[name] = seconds
    for name in MODELS:
        for record in score(args.runs / name, args):
            records.append({"model": name, **record})
    meta = run_meta(stamp, args, train_seconds)
    (out / "paper_claims.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    write_markdown(out / "paper_claims.md", records, commands, meta, list(args.nfe))
    print((out / "paper_claims.md").read_text())


if __name__ == "__main__":
    main()
