"""Designed blur levels against the default sin² schedule, with trained models on MNIST scored by the digit metric.

Trains the ``demo`` preset twice per training seed, differing only in the level schedule:

    sin2      σ_B(t) = σ_B,max · sin²(πt/2)                         (the default)
    designed  ``--schedule-file mnist-32`` (Wasserstein shortest path on MNIST, 32 levels; ``python -m
              softdiff.schedule --data mnist``)

then samples every model with the momentum sampler at several NFE (seeds 0..N−1 for every model) and scores the
samples with the digit metric (feature Fréchet distance against held-out digits, confident share, class balance;
not FID). Two seeds per schedule give the run-to-run spread, which a difference between the schedules has to
exceed before it is called one.

    python benchmarks/schedule_compare.py [--seeds 0,1] [--steps 1200] [--samples 1000] [--nfe 10,20,50]
    python benchmarks/schedule_compare.py --quick        # a smoke run: tiny budget, the numbers mean nothing

Resumable like ``paper_claims.py``. Writes ``OUT/schedule_compare.json`` and ``OUT/schedule_compare.md`` (per-seed
table, means, spread and the verdict per NFE).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digit_cells  # benchmarks/digit_cells.py: train, score a cell, the resumable results file

from softdiff.loading import parse_seeds

SCHEDULES = ("sin2", "designed")


def values(results: dict, schedule: str, nfe: int, score: str = "feature_fd") -> list[float]:
    """The scores of every seed's model, in seed order."""
    cells = [r for r in results.values() if (r["schedule"], r["nfe"]) == (schedule, nfe)]
    return [r[score] for r in sorted(cells, key=lambda r: r["seed"])]


def verdict(designed: list[float], sin2: list[float]) -> str:
    """'designed better' only when its worst seed beats sin²'s best (lower is better), 'worse' the other way round,
    otherwise 'no clear difference'; with how much lower (better) or higher designed's mean is."""
    lower = (statistics.mean(sin2) - statistics.mean(designed)) / statistics.mean(sin2)
    if digit_cells.separated(designed, sin2):
        outcome = "designed better"
    elif digit_cells.separated(sin2, designed):
        outcome = "designed worse"
    else:
        outcome = "no clear difference (the seeds overlap)"
    direction = "lower" if lower >= 0 else "higher"
    return f"{outcome}; designed's mean {abs(lower):.1%} {direction} than sin²'s"


def write_markdown(path: Path, results: dict, meta: dict, seeds: list[int], nfes: list[int]) -> None:
    lines = [f"# Designed levels vs sin² on MNIST, digit metric ({meta['date']} UTC)", "",
             f"`{meta['command']}`; torch {meta['torch']}, {meta['threads']} CPU threads ({meta['processor']}). "
             f"`--preset demo`, {meta['steps']} steps per model, training seeds {', '.join(map(str, seeds))}; "
             f"designed: `--schedule-file {meta['schedule']}`. Momentum sampler, {meta['samples']} samples per cell, "
             f"EMA weights. Feature FD floor (as many real digits) {meta.get('floor', float('nan')):.1f}. Not FID.",
             ""]  # fmt: skip
    for score, title in (("feature_fd", "feature FD (lower is better)"), ("confident", "confident share")):
        lines += [f"## {title}", "", "| schedule | seed | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
                  "|---|---|" + "---|" * len(nfes)]  # fmt: skip
        for schedule in SCHEDULES:
            for i, seed in enumerate(seeds):
                cells = " | ".join(f"{values(results, schedule, n, score)[i]:.4g}" for n in nfes)
                lines.append(f"| {schedule} | {seed} | {cells} |")
            means = " | ".join(f"{statistics.mean(values(results, schedule, n, score)):.4g}" for n in nfes)
            lines.append(f"| {schedule} | mean | {means} |")
        lines.append("")
    lines += ["## Verdicts (feature FD)", ""]
    for n in nfes:
        lines.append(f"- NFE {n}: {verdict(values(results, 'designed', n), values(results, 'sin2', n))}")
    seconds = ", ".join(f"{name} {s / 60:.1f} min" for name, s in sorted(meta["training_seconds"].items()))
    lines += ["", f"Training time per model (from the logs): {seconds}", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="mnist", help="an MNIST spec: mnist, mnist:5k or mnist:PATH")
    parser.add_argument("--seeds", type=parse_seeds, default=[0, 1], help="training seeds per schedule: 0,1 or 0-3")
    parser.add_argument("--steps", type=int, default=1200, help="training steps per model (the demo's)")
    parser.add_argument("--resolution", type=int, default=32, help="image side in pixels")
    parser.add_argument("--schedule", default=None, help="the designed schedule file (default mnist-<resolution>)")
    parser.add_argument("--samples", type=int, default=1000, help="samples per cell")
    parser.add_argument("--nfe", default="10,20,50", help="NFE values (comma list)")
    parser.add_argument("--runs", type=Path, default=Path("runs/schedule_compare"), help="training outputs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/schedule_compare_mnist"), help="record")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 steps at 16 px, 32 samples, NFE 3")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.resolution, args.samples, args.nfe = 4, 16, 32, "3"
    schedule_file = args.schedule or f"mnist-{args.resolution}"
    nfes = sorted({int(n) for n in args.nfe.split(",")})
    from softdiff.metrics.digits import digit_reference

    reference = digit_reference(args.data)
    record = digit_cells.ResultsFile(args.out / "schedule_compare.json", digit_cells.machine_meta(
        list(argv if argv is not None else sys.argv[1:]), "schedule_compare.py"))  # fmt: skip
    record.meta |= {"steps": args.steps, "samples": args.samples, "data": args.data, "schedule": schedule_file}
    record.meta.setdefault("training_seconds", {})
    for seed in args.seeds:
        for schedule in SCHEDULES:
            run = args.runs / f"{schedule}-seed{seed}"
            extra = ["--schedule-file", schedule_file] if schedule == "designed" else []
            digit_cells.train(run, [*extra, "--data", args.data, "--resolution", str(args.resolution), "--seed",
                                    str(seed)], steps=args.steps)  # fmt: skip
            record.meta["training_seconds"][run.name] = digit_cells.training_seconds(run)
            loaded = None  # the checkpoint, read once for all of its cells
            for nfe in nfes:
                key = f"{schedule}|seed{seed}|{args.steps}|{nfe}|{args.samples}|{schedule_file}"
                if key in record:
                    continue
                loaded = loaded if loaded is not None else digit_cells.load(run)
                scores = digit_cells.score_cell(loaded, reference, n=args.samples, nfe=nfe)
                record.meta["floor"] = scores["floor"]
                record.put(key, {"schedule": schedule, "seed": seed, "steps": args.steps,
                                 "schedule_file": schedule_file, **scores})  # fmt: skip
                print(f"  {schedule} seed {seed} NFE {nfe}: feature FD {scores['feature_fd']:.1f}, confident "
                      f"{scores['confident']:.1%}", flush=True)  # fmt: skip
    record.save()
    cells = {k: r for k, r in record.results.items() if r["seed"] in args.seeds and (r["steps"], r["samples"],
             r["schedule_file"]) == (args.steps, args.samples, schedule_file)}  # fmt: skip
    write_markdown(args.out / "schedule_compare.md", cells, record.meta, list(args.seeds), nfes)
    print((args.out / "schedule_compare.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
