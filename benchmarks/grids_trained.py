"""Time grids on a trained MNIST model: does a grid fitted to the exact closed form win on a real network?

    python benchmarks/grids_trained.py --ckpt runs/demo [--nfe 10,20,35,50] [--samplers heun,momentum]
        [--grids uniform,information,optimized] [--samples 1000] [--out DIR]

For every sampler × grid × NFE: ``--samples`` images from the checkpoint (EMA weights, seeds 0..n−1; a conditional
model draws the labels 0-9 cycled, no guidance), scored by the digit metric (:mod:`softdiff.metrics.digits`: the
confident share, the class balance and the feature Fréchet distance against held-out digits, with its floor; not
FID), beside the relative W2 the closed form predicts for that grid on the checkpoint's data spectrum
(``process.data_spectrum``, the Gaussian the optimised grid is fitted to). ``optimized`` is
``sd.time_grids.optimized_grid`` for that sampler and NFE. Resumable (a rerun skips the cells it has). Writes
``OUT/grids_trained.json`` and ``OUT/grids_trained.md``; OUT defaults to
``benchmarks/results/grids_trained-<date>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digit_cells  # benchmarks/digit_cells.py: load a model, score a cell, the resumable results file

from softdiff import closed_form
from softdiff.spectra import relative_w2
from softdiff.time_grids import GRIDS, resolve_grid, sampling_variance


def parse_list(text: str, kind=str) -> list:
    return [kind(v) for v in text.split(",") if v]


def predicted_w2(process, shape, grid: str, nfe: int, sampler: str) -> tuple[float, float]:
    """(the closed-form relative W2 of the grid on the data spectrum, the seconds the grid took to make)."""
    start = time.perf_counter()
    times = resolve_grid(grid, process, shape, nfe, 1.0, sampler=sampler)
    seconds = time.perf_counter() - start
    variance = sampling_variance(process, shape)
    output = closed_form.output_variance(variance, process, nfe, sampler, grid=times, start_variance="exact")
    return relative_w2(variance, output), seconds


def write_markdown(path: Path, results: dict, meta: dict) -> None:
    floor = next(iter(results.values()))["floor"] if results else float("nan")
    lines = [f"# Time grids on a trained model, digit metric ({meta['date']} UTC)", "",
             f"`{meta['command']}`; torch {meta['torch']}, {meta['threads']} CPU threads ({meta['processor']}). "
             f"Checkpoint `{meta['ckpt']}`, {meta['samples']} samples per cell"
             f"{', labels 0-9 cycled' if meta['conditional'] else ''}, EMA weights. Cells: confident share / class "
             f"balance / feature FD (floor {floor:.1f}; lower is better). W2: the closed form's relative W2 of that "
             "grid on the checkpoint's data spectrum (a Gaussian; the optimised grid minimises it).", ""]  # fmt: skip
    nfes = sorted({r["nfe"] for r in results.values()})
    samplers = list(dict.fromkeys(r["sampler"] for r in results.values()))  # every invocation's cells, in order
    grids = [g for g in GRIDS if any(r["time_grid"] == g for r in results.values())]
    lines += ["| sampler | grid | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
              "| --- | --- |" + " --- |" * len(nfes)]  # fmt: skip
    for sampler in samplers:
        for grid in grids:
            cells = {r["nfe"]: r for r in results.values() if (r["sampler"], r["time_grid"]) == (sampler, grid)}
            row = [f"{100 * c['confident']:.1f}% / {c['balance']:.3f} / **{c['feature_fd']:.0f}** (W2 "
                   f"{c['predicted_w2']:.3f})" if (c := cells.get(n)) else "" for n in nfes]  # fmt: skip
            lines.append(f"| {sampler} | {grid} | " + " | ".join(row) + " |")
    lines += ["", "Best feature FD per sampler and NFE:", ""]
    for sampler in samplers:
        for nfe in nfes:
            cells = [r for r in results.values() if (r["sampler"], r["nfe"]) == (sampler, nfe)]
            if cells:
                best = min(cells, key=lambda r: r["feature_fd"])
                lines.append(f"- {sampler}, NFE {nfe}: {best['time_grid']} ({best['feature_fd']:.0f})")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint file or run folder of an MNIST model")
    parser.add_argument("--nfe", type=lambda v: parse_list(v, int), default=[10, 20, 35, 50])
    parser.add_argument("--samplers", type=parse_list, default=["heun", "momentum"])
    parser.add_argument("--grids", type=parse_list, default=["uniform", "information", "optimized"])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    unknown = [g for g in args.grids if g not in GRIDS]
    if unknown:
        parser.error(f"unknown grid(s) {unknown}; choose from {', '.join(GRIDS)}")
    from softdiff.metrics.digits import digit_reference

    model = digit_cells.load(Path(args.ckpt))
    denoiser, process, config = model
    shape = (denoiser.net.config.image_channels, config.resolution, config.resolution)
    conditional = denoiser.net.config.label_classes is not None
    meta = digit_cells.machine_meta(sys.argv[1:] if argv is None else argv, "grids_trained.py")
    out = Path(args.out or f"benchmarks/results/grids_trained-{meta['date'][:10]}")
    meta |= {"ckpt": args.ckpt, "samples": args.samples, "conditional": conditional,
             "samplers": args.samplers, "grids": args.grids, "nfe": args.nfe}  # fmt: skip
    results = digit_cells.ResultsFile(out / "grids_trained.json", meta)
    reference = digit_reference(config.data)
    labels = torch.arange(args.samples) % 10 if conditional else None
    for sampler in args.samplers:
        for nfe in args.nfe:
            for grid in args.grids:
                key = f"{sampler}/{grid}/{nfe}"
                if key in results:
                    continue
                w2, grid_seconds = predicted_w2(process, shape, grid, nfe, sampler)
                scores = digit_cells.score_cell(model, reference, n=args.samples, nfe=nfe, sampler=sampler,
                                                labels=labels, time_grid=grid)  # fmt: skip
                results.put(key, scores | {"predicted_w2": w2, "grid_seconds": grid_seconds})
                print(
                    f"{key}: confident {scores['confident']:.3f} balance {scores['balance']:.3f} feature FD "
                    f"{scores['feature_fd']:.1f} (W2 {w2:.4f}; {scores['sampling_seconds']:.0f} s)",
                    flush=True,
                )
    write_markdown(out / "grids_trained.md", results.results, results.meta)
    print(f"wrote {out}")
    return results.results


if __name__ == "__main__":
    main()
