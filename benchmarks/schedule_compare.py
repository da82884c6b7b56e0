"""Designed blur levels against the default sin² schedule, with trained demo models (issue: schedule design).

Trains the shapes preset's recipe twice per seed, differing only in the level schedule:

    sin2      σ_B(t) = σ_B,max · sin²(πt/2)                         (the default)
    designed  ``--schedule-file shapes-32`` (Wasserstein shortest path, 32 levels; ``python -m softdiff.schedule``)

then samples every model with the momentum sampler at several NFE (same seeds for every model) and scores the
samples against the training data with the offline proxies of ``python -m softdiff.fid`` (SWD-proxy,
RandFD-proxy; not FID, lower is better). Two seeds per schedule give the run-to-run spread, which is what a
difference between the schedules has to exceed before it is called one.

    python benchmarks/schedule_compare.py [--seeds 0,1] [--steps 1200] [--samples 256] [--nfe 10,20,50]

Training goes through ``python -m softdiff.train`` into ``--runs`` (resumable). Writes ``OUT/schedule_compare.json``
and ``OUT/schedule_compare.md`` (per-seed table, means, spread and the verdict per NFE and metric). About 45 minutes on
a 2-core CPU with the defaults.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from softdiff.loading import parse_seeds

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paper_claims  # benchmarks/paper_claims.py: train, score, the shared options and results folder

SCHEDULES = ("sin2", "designed")  # designed: --schedule-file shapes-<resolution>, the shipped design
METRICS = paper_claims.METRICS


def values(records, schedule: str, nfe: int, metric: str) -> list[float]:
    """The scores of every seed's model, in seed order."""
    return [r["value"] for r in records if (r["schedule"], r["nfe"], r["metric"]) == (schedule, nfe, metric)]


def verdict(designed: list[float], sin2: list[float]) -> str:
    """'designed better' only when its worst seed beats sin²'s best (lower is better), 'worse' the other way round,
    otherwise 'no clear difference'; with how much lower (better) or higher designed's mean is."""
    lower = (statistics.mean(sin2) - statistics.mean(designed)) / statistics.mean(sin2)
    if max(designed) < min(sin2):
        outcome = "designed better"
    elif min(designed) > max(sin2):
        outcome = "designed worse"
    else:
        outcome = "no clear difference (the seeds overlap)"
    direction = "lower" if lower >= 0 else "higher"
    return f"{outcome}; designed's mean {abs(lower):.1%} {direction} than sin²'s"


def write_markdown(path: Path, records, meta, seeds, nfes) -> None:
    lines = [f"# Designed levels vs sin² with trained demo models ({meta['date']} UTC)", "",
             f"torch {meta['torch']}, {meta['threads']} CPU threads, {meta['processor']}; shapes preset, "
             f"{meta['steps']} steps per model, seeds {', '.join(map(str, seeds))}; momentum sampler, "
             f"{meta['samples']} samples (seeds 0..{meta['samples'] - 1}) per cell, scored against the training set "
             "with the offline proxies of `python -m softdiff.fid` (not FID; lower is better).", "", "```",
             f"python benchmarks/schedule_compare.py --seeds {','.join(map(str, seeds))} --steps {meta['steps']} "
             f"--samples {meta['samples']} --nfe {','.join(map(str, nfes))}", "```", ""]  # fmt: skip
    for metric in METRICS:
        lines += [f"## {metric}", "", "| schedule | seed | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
                  "|---|---|" + "---|" * len(nfes)]  # fmt: skip
        for schedule in SCHEDULES:
            for i, seed in enumerate(seeds):
                cells = " | ".join(f"{values(records, schedule, n, metric)[i]:.4g}" for n in nfes)
                lines.append(f"| {schedule} | {seed} | {cells} |")
            means = " | ".join(f"{statistics.mean(values(records, schedule, n, metric)):.4g}" for n in nfes)
            lines.append(f"| {schedule} | mean | {means} |")
        lines.append("")
    lines += ["## Verdicts", ""]
    for metric in METRICS:
        for n in nfes:
            outcome = verdict(values(records, "designed", n, metric), values(records, "sin2", n, metric))
            lines.append(f"- {metric}, NFE {n}: {outcome}")
    seconds = ", ".join(f"{name} {s:.0f} s" for name, s in meta["train_seconds"].items())
    lines += ["", f"Training wall time per model (this invocation; a finished run is reused): {seconds}", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=parse_seeds, default=[0, 1], help="training seeds per schedule: 0,1 or 0-3")
    paper_claims.add_budget_arguments(parser, nfe=[10, 20, 50], runs="runs/schedule_compare")
    args = parser.parse_args(argv)
    out, stamp = paper_claims.results_folder(args, "schedule_compare")
    train_seconds, records = {}, []
    for schedule in SCHEDULES:
        extra = ["--schedule-file", f"shapes-{args.resolution}"] if schedule == "designed" else []
        for seed in args.seeds:
            name = f"{schedule}-seed{seed}"
            _, train_seconds[name] = paper_claims.train(name, [*extra, "--seed", str(seed)], runs=args.runs,
                                                        steps=args.steps, resolution=args.resolution)  # fmt: skip
            scores = paper_claims.score(args.runs / name, args, samplers=("momentum",))
            records += [{"schedule": schedule, "seed": seed, **r} for r in scores]
    meta = paper_claims.run_meta(stamp, args, train_seconds)
    (out / "schedule_compare.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    write_markdown(out / "schedule_compare.md", records, meta, list(args.seeds), list(args.nfe))
    print((out / "schedule_compare.md").read_text())


if __name__ == "__main__":
    main()
