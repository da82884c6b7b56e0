"""The paper's three claims measured on MNIST with the digit metric, on models with equal budgets.

Daras et al. report on CelebA-64 and CIFAR-10: (1) the Momentum Sampler beats the naive one (FID 1.85 vs 27.82);
(2) Soft Score Matching beats the plain clean-image loss of Cold Diffusion on the same corruption (1.85 vs 5.91);
(3) blur + noise reaches a given quality with far fewer network evaluations than Gaussian denoising diffusion. This
script trains, per training seed, three models of the ``demo`` preset (MNIST, the ``tiny`` U-Net, EDM's scalings
and weighting, σ 0.02 → 5) with the same steps, batch and optimiser, differing in one thing each:

    soft      DCT blur + noise, the soft loss ‖C_t(D(x_t) − x_0)‖²   (the method)
    cold      DCT blur + noise, ``--loss cold``: ‖D(x_t) − x_0‖²      (claim 2's ablation)
    gaussian  ``--operator identity`` (C = I): variance-exploding Gaussian diffusion with EDM's preconditioning and
              weighting, the recipe EDM tuned for it, and its own sampler (Heun) beside ours   (claim 3's baseline)

then samples each with the samplers of ``--plan`` at every NFE of ``--nfe`` (seeds 0..N−1 for every cell) and
scores the samples with the digit metric (confident share, class balance, feature Fréchet distance against held-out
digits beside its floor; not FID).

    python benchmarks/paper_claims.py                    # the recorded configuration (see --help for its time)
    python benchmarks/paper_claims.py --quick            # a smoke run of every step: tiny budget, numbers mean nothing

Resumable: finished training runs are reused and the scores already in ``OUT/paper_claims.json`` are kept, so the
same command continues after an interruption. Writes ``OUT/paper_claims.json`` (every cell), ``OUT/paper_claims.md``
(tables with the spread over seeds and a verdict per claim) and ``OUT/fd_vs_nfe.png`` (feature FD against NFE, one
panel per model, log x).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digit_cells  # benchmarks/digit_cells.py: train, score a cell, the resumable results file

from softdiff.loading import parse_seeds

MODELS = {
    "soft": [],
    "cold": ["--loss", "cold"],
    "gaussian": ["--operator", "identity"],
}
# Which samplers score which model. Claim 1 needs every sampler on the soft model; claim 2 compares the losses with
# the paper's sampler; claim 3 gives the Gaussian baseline EDM's Heun sampler as well as ours.
PLAN = {"soft": ("momentum", "naive", "momentum_ode", "heun"), "cold": ("momentum",), "gaussian": ("momentum", "heun")}
SCORES = {"feature_fd": "feature FD (lower is better)", "confident": "confident share", "balance": "class balance"}


def parse_plan(text: str) -> dict[str, tuple[str, ...]]:
    """'soft=momentum+naive,cold=momentum' -> {model: samplers}; every model of MODELS must appear."""
    from softdiff.samplers import SAMPLERS

    plan = {}
    for part in text.split(","):
        model, _, samplers = part.partition("=")
        names = tuple(s for s in samplers.split("+") if s)
        if model not in MODELS or not names or any(s not in SAMPLERS for s in names):
            raise argparse.ArgumentTypeError(f"{part!r}: expected MODEL=SAMPLER[+SAMPLER...], models {list(MODELS)}, "
                                             f"samplers {list(SAMPLERS)}")  # fmt: skip
        plan[model] = names
    if set(plan) != set(MODELS):
        raise argparse.ArgumentTypeError(f"the plan must name every model {list(MODELS)}; got {list(plan)}")
    return plan


def cell_key(model: str, seed: int, steps: int, sampler: str, nfe: int, samples: int) -> str:
    return f"{model}|seed{seed}|{steps}|{sampler}|{nfe}|{samples}"


def values(results: dict, model: str, sampler: str, nfe: int, score: str) -> list[float]:
    """The ``score`` of every seed's model in one cell, in seed order (missing seeds left out)."""
    cells = [r for r in results.values() if (r["model"], r["sampler"], r["nfe"]) == (model, sampler, nfe)]
    return [r[score] for r in sorted(cells, key=lambda r: r["seed"])]


def best_sampler(results: dict, model: str, samplers, nfe: int) -> tuple[str, list[float]]:
    """The sampler with the lowest mean feature FD for ``model`` at ``nfe``, and its per-seed FDs."""
    scored = [(s, values(results, model, s, nfe, "feature_fd")) for s in samplers]
    return min(((s, v) for s, v in scored if v), key=lambda item: statistics.mean(item[1]))


def compare(a: list[float], b: list[float], a_name: str, b_name: str) -> str:
    """How ``a`` compares with ``b`` in feature FD over the seeds: a verdict only when the seeds separate."""
    change = (statistics.mean(b) - statistics.mean(a)) / statistics.mean(b)
    if min(len(a), len(b)) < 2:  # one training seed has no spread to separate from: a lead, not a verdict
        lead = "lower" if statistics.mean(a) < statistics.mean(b) else "higher"
        outcome = f"one training seed, no verdict ({a_name} {lead})"
    elif digit_cells.separated(a, b):
        outcome = f"{a_name} better"
    elif digit_cells.separated(b, a):
        outcome = f"{a_name} worse"
    else:
        outcome = "no clear difference (the seeds overlap)"
    return f"{outcome}: {a_name} {digit_cells.mean_and_range(a)} vs {b_name} {digit_cells.mean_and_range(b)}, " \
           f"{abs(change):.0%} {'lower' if change >= 0 else 'higher'}"  # fmt: skip


def verdicts(results: dict, plan: dict, nfes: list[int]) -> list[str]:
    """One line per claim and NFE, in feature FD with the spread over seeds."""
    lines = []
    if {"momentum", "naive"} <= set(plan["soft"]):
        for nfe in nfes:
            momentum, naive = (values(results, "soft", s, nfe, "feature_fd") for s in ("momentum", "naive"))
            if momentum and naive:
                lines.append(f"- Claim 1 (momentum vs naive sampler, soft model), NFE {nfe}: "
                             + compare(momentum, naive, "momentum", "naive"))  # fmt: skip
    for nfe in nfes:
        soft, cold = (values(results, m, "momentum", nfe, "feature_fd") for m in ("soft", "cold"))
        if soft and cold:
            lines.append(f"- Claim 2 (soft vs cold loss, momentum sampler), NFE {nfe}: " + compare(soft, cold, "soft",
                                                                                                 "cold"))  # fmt: skip
    top = max(nfes)
    gaussian_sampler, gaussian_top = best_sampler(results, "gaussian", plan["gaussian"], top)
    target = statistics.mean(gaussian_top)
    reach = [n for n in nfes if statistics.mean(best_sampler(results, "soft", plan["soft"], n)[1]) <= target]
    where = f"reaches that mean at NFE {min(reach)}" if reach else f"does not reach it at any NFE of {nfes}"
    lines.append(f"- Claim 3 (blur + noise vs Gaussian, each with its best sampler): Gaussian's best at NFE {top} "
                 f"({gaussian_sampler}) has feature FD {digit_cells.mean_and_range(gaussian_top)}; blur + noise "
                 f"{where}.")  # fmt: skip
    for nfe in nfes:
        (soft_sampler, soft), (gauss_sampler, gauss) = (
            best_sampler(results, m, plan[m], nfe) for m in ("soft", "gaussian")
        )
        lines.append(f"- Claim 3 at NFE {nfe}: " + compare(soft, gauss, f"blur + noise ({soft_sampler})",
                                                          f"Gaussian ({gauss_sampler})"))  # fmt: skip
    return lines


def write_markdown(path: Path, results: dict, meta: dict, plan: dict, nfes: list[int]) -> None:
    lines = [f"# The paper's claims on MNIST, digit metric ({meta['date']} UTC)", "",
             f"`{meta['command']}`; torch {meta['torch']}, {meta['threads']} CPU threads ({meta['processor']}). "
             f"Models: `--preset demo` with {meta['steps']} steps each, training seeds {meta['seeds']}; "
             f"{meta['samples']} samples per cell (seeds 0..{meta['samples'] - 1}), EMA weights. Cells: the mean "
             "over training seeds (min–max). The digit metric's classifier has held-out accuracy "
             f"{meta.get('classifier_accuracy', float('nan')):.1%}; feature FD floor (as many real digits) "
             f"{meta.get('floor', float('nan')):.1f}. Not FID.", ""]  # fmt: skip
    for score, title in SCORES.items():
        lines += [f"## {title}", "", "| model | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
                  "|---|---|" + "---|" * len(nfes)]  # fmt: skip
        for model, samplers in plan.items():
            for sampler in samplers:
                cells = [values(results, model, sampler, n, score) for n in nfes]
                text = [digit_cells.mean_and_range(v) if v else "" for v in cells]
                lines.append(f"| {model} | {sampler} | " + " | ".join(text) + " |")
        lines.append("")
    lines += ["## Verdicts (feature FD)", "", *verdicts(results, plan, nfes), ""]
    seconds = ", ".join(f"{name} {s / 60:.1f} min" for name, s in sorted(meta["training_seconds"].items()))
    sampling = sum(r["sampling_seconds"] for r in results.values())
    lines += [f"Training time per model (from the logs): {seconds}. Sampling: {sampling / 60:.0f} min in all.", ""]
    path.write_text("\n".join(lines))


def plot(results: dict, plan: dict, nfes: list[int], path: Path) -> None:
    """Feature FD against NFE (log x), one panel per model, a line per sampler: the mean over seeds, bars to the
    range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(1, len(plan), figsize=(4.6 * len(plan), 4.0), sharey=True)
    for axis, (model, samplers) in zip(axes, plan.items(), strict=True):
        for sampler in samplers:
            points = [(n, values(results, model, sampler, n, "feature_fd")) for n in nfes]
            points = [(n, v) for n, v in points if v]
            if not points:
                continue
            means = [statistics.mean(v) for _, v in points]
            low = [m - min(v) for m, (_, v) in zip(means, points, strict=True)]
            high = [max(v) - m for m, (_, v) in zip(means, points, strict=True)]
            axis.errorbar([n for n, _ in points], means, yerr=[low, high], marker="o", markersize=4, capsize=3,
                          label=sampler)  # fmt: skip
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_xticks(nfes)
        axis.set_title({"soft": "blur + noise, soft loss", "cold": "blur + noise, cold loss",
                        "gaussian": "Gaussian (C = I)"}[model])  # fmt: skip
        axis.set_xlabel("NFE")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    axes[0].set_ylabel("feature FD of the digit classifier (not FID)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="mnist", help="an MNIST spec: mnist, mnist:5k or mnist:PATH")
    parser.add_argument("--seeds", type=parse_seeds, default=[0, 1], help="training seeds per model: 0,1 or 0-3")
    parser.add_argument("--steps", type=int, default=1200, help="training steps per model (the demo's)")
    parser.add_argument("--resolution", type=int, default=32, help="image side in pixels")
    parser.add_argument("--samples", type=int, default=1000, help="samples per cell")
    parser.add_argument("--nfe", default="5,10,20,50,100,200", help="NFE values (comma list)")
    parser.add_argument("--plan", type=parse_plan, default=PLAN,
                        help="samplers per model, MODEL=S+S,...; default " +
                             ",".join(f"{m}={'+'.join(s)}" for m, s in PLAN.items()))  # fmt: skip
    parser.add_argument("--runs", type=Path, default=Path("runs/paper_claims"), help="training outputs (resumable)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/paper_claims_mnist"), help="record")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 steps at 16 px, 32 samples, NFE 2,3")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.resolution, args.samples, args.nfe = 4, 16, 32, "2,3"
    nfes = sorted({int(n) for n in args.nfe.split(",")})
    from softdiff.metrics.digits import digit_reference

    reference = digit_reference(args.data)
    record = digit_cells.ResultsFile(args.out / "paper_claims.json", digit_cells.machine_meta(
        list(argv if argv is not None else sys.argv[1:]), "paper_claims.py"))  # fmt: skip
    record.meta |= {"steps": args.steps, "seeds": list(args.seeds), "samples": args.samples, "data": args.data,
                    "classifier_accuracy": reference.held_out_accuracy}  # fmt: skip
    record.meta.setdefault("training_seconds", {})
    evaluations = args.samples * sum(nfes) * len(args.seeds) * sum(len(s) for s in args.plan.values())
    print(f"paper_claims: {len(MODELS) * len(args.seeds)} models of {args.steps} steps; {evaluations:,} network "
          "evaluations of sampling", flush=True)  # fmt: skip
    for seed in args.seeds:
        for model, flags in MODELS.items():
            run = args.runs / f"{model}-seed{seed}"
            unscored = [(sampler, nfe) for sampler in args.plan[model] for nfe in nfes
                    if cell_key(model, seed, args.steps, sampler, nfe, args.samples) not in record]  # fmt: skip
            if not unscored:  # every cell scored: no need for the model (its training time is already recorded)
                continue
            digit_cells.train(run, [*flags, "--data", args.data, "--resolution", str(args.resolution), "--seed",
                                    str(seed)], steps=args.steps)  # fmt: skip
            record.meta["training_seconds"][run.name] = digit_cells.training_seconds(run)
            loaded = digit_cells.load(run)  # the checkpoint, read once for all of its cells
            for sampler, nfe in unscored:
                key = cell_key(model, seed, args.steps, sampler, nfe, args.samples)
                scores = digit_cells.score_cell(loaded, reference, n=args.samples, nfe=nfe, sampler=sampler)
                record.meta["floor"] = scores["floor"]
                record.put(key, {"model": model, "seed": seed, "steps": args.steps, **scores})
                print(f"  {model} seed {seed} {sampler:>12} NFE {nfe:3d}: feature FD {scores['feature_fd']:.1f}, "
                      f"confident {scores['confident']:.1%}, balance {scores['balance']:.3f} "
                      f"({scores['sampling_seconds']:.0f} s)", flush=True)  # fmt: skip
    record.save()
    cells = {
        k: r
        for k, r in record.results.items()
        if (r["steps"], r["samples"]) == (args.steps, args.samples) and r["seed"] in args.seeds
    }
    write_markdown(args.out / "paper_claims.md", cells, record.meta, args.plan, nfes)
    plot(cells, args.plan, nfes, args.out / "fd_vs_nfe.png")
    print((args.out / "paper_claims.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
