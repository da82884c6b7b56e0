"""Does the demo learn digits, and how fast? The digit metric against minutes of CPU training, for the recipe the
``demo`` preset ships and for the paper's (Soft Score Matching) beside it, unconditional and conditional.

Each run is ``python -m softdiff.train --preset demo`` with the recipe's flags, alone on the machine (torch's default
threads), checkpointing every ``--ckpt-every`` steps; it stops once its *training* time (the log's ``seconds``:
checkpoints and grids excluded) passes the last mark. At each mark (default 2.5, 5, 10 and 20 minutes) the
checkpoint at or just before it is sampled (``--n`` images, ``--nfe`` network evaluations, each of ``--samplers``; the
conditional runs with the labels 0-9 cycled, at guidance 1 and ``--guidance``) and scored with the digit metric
(:mod:`softdiff.metrics.digits`: confident share, class balance, feature Fréchet distance with its floor).

    python benchmarks/demo_mnist.py                              # about 2 hours on a 2-core CPU
    python benchmarks/demo_mnist.py --quick                      # 2 short runs, a smoke check (3 minutes)

Resumable: a run that already reached its last mark is not trained again, and scores already in ``results.json``
are kept. Writes ``OUT/results.json``, ``OUT/results.md`` (the tables) and
``OUT/<run>-<sampler>-g<guidance>-grid.png`` (the last mark's samples, a row per digit for the conditional runs).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digit_cells  # benchmarks/digit_cells.py: score a checkpoint with the digit metric

RECIPES = {
    # what the demo preset ships: EDM's scalings, λ = 1/c_out², t uniform and the cold loss ‖D(x_t) − x_0‖²
    # (docs/training.md says why not the soft loss), bf16 where native
    "demo": [],
    # the paper's: the same with Soft Score Matching ‖C_t (D(x_t) − x_0)‖²
    "paper": ["--precond", "edm", "--weighting", "edm", "--t-power", "1", "--loss", "soft"],
    # the recipe tuned on shapes (docs/training_shapes.md): per-coefficient Wiener preconditioning, λ = 1/σ², t = ε + u³
    "wiener": ["--precond", "wiener", "--weighting", "sigma2", "--t-power", "3", "--loss", "soft"],
}
CONDITIONINGS = ("none", "class")


def train_until(run: Path, flags: list[str], minutes: float, ckpt_every: int) -> list[tuple[int, float]]:
    """Train (or resume) ``run`` until its training time passes ``minutes``; returns its (step, seconds) log."""
    points = digit_cells.training_log(run)
    if points and points[-1][1] >= minutes * 60:
        return points
    command = [sys.executable, "-m", "softdiff.train", "--preset", "demo", *flags, "--out", str(run),
               "--steps", "1000000", "--log-every", str(ckpt_every), "--ckpt-every", str(ckpt_every),
               "--keep", "100000", "--sample-every", "1000000"]  # fmt: skip
    print("  " + " ".join(command[1:]), flush=True)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        while process.poll() is None:
            time.sleep(2)
            points = digit_cells.training_log(run)
            if points and points[-1][1] >= minutes * 60:
                break
    finally:
        if process.poll() is None:  # checkpoints are written atomically: stopping between two loses nothing saved
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
    if not digit_cells.training_log(run):
        raise SystemExit(f"training {run} failed:\n{process.stderr.read()[-3000:]}")
    return digit_cells.training_log(run)


def checkpoint_at(run: Path, points: list[tuple[int, float]], minutes: float) -> tuple[Path, int, float] | None:
    """(checkpoint, step, training seconds) of the last checkpoint trained within ``minutes`` (+1% slack)."""
    within = [(step, seconds) for step, seconds in points if seconds <= minutes * 60 * 1.01]
    for step, seconds in reversed(within):
        path = run / "checkpoints" / f"ckpt-{step:08d}.pt"
        if path.exists():
            return path, step, seconds
    return None


def write_notes(out: Path, results: dict, meta: dict) -> None:
    lines = [f"# The demo on MNIST: digit metric against minutes of CPU training ({meta['date']} UTC)", "",
             f"`{meta['command']}`; torch {meta['torch']}, {meta['threads']} CPU threads ({meta['processor']}). "
             f"Digit metric of {meta['n']} samples per cell ({meta['nfe']} NFE, EMA weights; "
             "the conditional runs with labels 0-9 cycled). Minutes: training time from the run's log (checkpoints "
             "and grids excluded), the checkpoint at or just before the mark. The classifier's held-out accuracy "
             f"is {meta.get('classifier_accuracy', float('nan')):.1%}; feature FD floor (real digits) "
             f"{meta.get('floor', float('nan')):.1f}.", "",
             "| run | sampler | guidance | minutes (step) | confident | balance | feature FD | label match |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key in sorted(results, key=lambda k: (results[k]["run"], results[k]["sampler"], results[k]["guidance"],
                                              results[k]["minutes"])):  # fmt: skip
        r = results[key]
        match = "" if r.get("label_match") is None else f"{r['label_match']:.1%}"
        lines.append(f"| {r['run']} | {r['sampler']} | {r['guidance']:g} | {r['minutes']:g} ({r['step']}) | "
                     f"{r['confident']:.1%} | {r['balance']:.3f} | {r['feature_fd']:.1f} | {match} |")  # fmt: skip
    (out / "results.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", default="2.5,5,10,20", help="marks, minutes of training (comma list)")
    parser.add_argument("--paper-minutes", default="2.5,5,10", help="marks of the paper recipe's runs")
    parser.add_argument("--runs", default="demo-none,demo-class,paper-none,paper-class",
                        help="RECIPE-COND runs, recipes: " + ", ".join(RECIPES))  # fmt: skip
    parser.add_argument("--n", type=int, default=256, help="samples per score (default 256)")
    parser.add_argument("--nfe", type=int, default=50, help="network evaluations per sample (default 50)")
    parser.add_argument("--samplers", default="momentum", help="samplers scored at each mark (comma list)")
    parser.add_argument("--guidance", type=float, default=2.0, help="the guided score of conditional runs (W)")
    parser.add_argument("--ckpt-every", type=int, default=25, help="checkpoint (and log) every N steps")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/demo_mnist"), help="record folder")
    parser.add_argument("--work", type=Path, default=None, help="run folders (default runs/demo_mnist; not committed)")
    parser.add_argument("--quick", action="store_true", help="0.5-minute runs of demo-class and paper-none")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.paper_minutes, args.n, args.nfe = "0.25,0.5", "0.25,0.5", 64, 10
        args.runs = "demo-class,paper-none"
    from softdiff.metrics.digits import digit_reference

    reference = digit_reference("mnist")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path("runs/demo_mnist")
    record_path = args.out / "results.json"
    saved = json.loads(record_path.read_text()) if record_path.exists() else {}
    results = saved.get("results", {})
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M"), "torch": torch.__version__,
            "command": "python benchmarks/demo_mnist.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine(),
            "n": args.n, "nfe": args.nfe, "classifier_accuracy": reference.held_out_accuracy}  # fmt: skip
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    for name in [r.strip() for r in args.runs.split(",") if r.strip()]:
        recipe, _, cond = name.partition("-")
        if recipe not in RECIPES or cond not in CONDITIONINGS:
            raise SystemExit(f"--runs: {name!r} is not RECIPE-COND with RECIPE in {list(RECIPES)}, COND in "
                             f"{list(CONDITIONINGS)}")  # fmt: skip
        marks = [float(m) for m in (args.paper_minutes if recipe == "paper" else args.minutes).split(",")]
        print(f"{name}: training to {max(marks):g} min", flush=True)
        run = work / name
        points = train_until(run, [*RECIPES[recipe], "--cond", cond], max(marks), args.ckpt_every)
        guidances = (1.0, args.guidance) if cond == "class" else (1.0,)
        for minutes in marks:
            found = checkpoint_at(run, points, minutes)
            if found is None:
                continue
            checkpoint, step, seconds = found
            model = None  # read once for every cell of the mark (and not at all when all are scored)
            for sampler, guidance in itertools.product(samplers, guidances):
                key = f"{name}|{minutes:g}|{sampler}|{guidance:g}|{args.n}|{args.nfe}"
                if key in results:
                    continue
                last = minutes == max(marks)
                grid = args.out / f"{name}-{sampler}-g{guidance:g}-grid.png" if last else None
                labels = torch.arange(args.n) % 10 if cond == "class" else None
                model = model if model is not None else digit_cells.load(checkpoint)
                scores = digit_cells.score_cell(model, reference, n=args.n, nfe=args.nfe, sampler=sampler,
                                                labels=labels, guidance=guidance, grid=grid)  # fmt: skip
                results[key] = {"run": name, "minutes": minutes, "step": step, "training_seconds": seconds,
                                "guidance": guidance, "flags": RECIPES[recipe] + ["--cond", cond],
                                **scores}  # fmt: skip
                meta["floor"] = scores["floor"]
                print(f"  {minutes:g} min (step {step}) {sampler} guidance {guidance:g}: confident "
                      f"{scores['confident']:.1%}, balance {scores['balance']:.3f}, feature FD "
                      f"{scores['feature_fd']:.1f} (floor {scores['floor']:.1f})", flush=True)  # fmt: skip
                record_path.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    record_path.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    write_notes(args.out, results, meta)
    print(f"wrote {args.out}/results.md and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
