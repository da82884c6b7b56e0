"""Quality and wall time against NFE for every sampler (DESIGN §2.3).

    python benchmarks/nfe_speed.py [--out DIR] [--ckpt PATH]

Default (no checkpoint; CPU; a few minutes): the exact Gaussian oracle. Data x_0 ~ N(0, Σ) with Σ diagonal
in the DCT basis, λ_{kl} ∝ 1/(1 + k² + l²) over DCT indices with a mean pixel variance of 0.25, at 3×32×32,
denoised exactly (``sd.oracle.GaussianDenoiser``) under DCT blur + noise (σ from 0.02 to 80, the default
level schedule σ_B = 0.36·32 · sin²(πt/2)) and under the Gaussian baseline (``Identity``, the same σ). For
every sampler and NFE in {5, 10, 20, 35, 50, 100, 200, 500, 1000} the relative W2 distance of the output
law to the data law, ‖√v − √λ‖/‖√λ‖ over DCT coefficients, is computed

- in closed form (:mod:`softdiff.closed_form`, the per-coefficient variance recursion in float64), and
- by Monte Carlo through ``sd.sample`` (``--mc-samples`` draws at the NFE of ``--mc-nfe``), beside the
  value the closed form predicts for an estimate from that many draws (mean ± sd).

Wall time per sample is measured on the Monte Carlo runs (float32, ``--threads`` CPU threads) and
extrapolated linearly in NFE beyond them (records say which). Also computed: every sampler × time grid
× level schedule × NFE in closed form (the defaults, plus schedules designed with
:mod:`softdiff.schedule_design` on oracle draws), and the samplers' own cost per step without the network
(one step on 64×3×32×32) for the default backend and ``SOFTDIFF_BACKEND=torch``.

With ``--ckpt`` (a checkpoint file or run folder): for every sampler and NFE in ``--ckpt-nfe``, ``--ckpt-samples``
images from the trained model, their wall time per sample, and their quality against the training data
(``config.data``) or ``--ref``, scored by ``python -m softdiff.fid``: FID when ``--inception`` (or
``SOFTDIFF_INCEPTION``) names the Inception weights, the labelled proxies (SWD-proxy, RandFD-proxy)
otherwise.

Writes ``DIR/nfe_speed.json`` (``records``: operator, sampler, nfe, w2_rel, method ∈ {closed_form,
monte_carlo}, seconds, grid, levels, …), ``DIR/nfe_speed.md`` and ``DIR/nfe_speed.png`` (W2 against NFE,
log-log). DIR defaults to ``benchmarks/results/nfe_speed-<date>``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import softdiff as sd
import softdiff_kernels as sk
from softdiff import closed_form
from softdiff.spectra import relative_w2
from softdiff.time_grids import EXACT_FOR_THE_FIT, GRIDS, optimized_grid

NFES = (5, 10, 20, 35, 50, 100, 200, 500, 1000)
MC_NFES = (5, 10, 35)
EXPLORE_NFES = (5, 10, 20, 35, 50, 100, 200)
SIGMA_MIN, SIGMA_MAX = 0.02, 80.0
BLUR_FRACTION = 0.36  # σ_B,max = 0.36 · min(H, W) (DESIGN §1.1)
TARGET_NFE, AMBITION_W2 = 35, 0.02
FEW_NFE_TARGETS = {20: 0.02, 10: 0.08}  # relative W2 at NFE (issue 25), best sampler and grid
OPTIMIZED_NFE_MAX = 100  # optimised grids are fitted up to this NFE


def parse_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, e.g. 5,10,20; got {text!r}") from error
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected ints >= 1; got {text!r}")
    return values


def parse_samplers(text: str) -> tuple[str, ...]:
    names = tuple(text.split(","))
    unknown = [n for n in names if n not in sd.samplers.SAMPLERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown sampler(s) {unknown}; choose from {', '.join(sd.samplers.SAMPLERS)}")
    return names


# --- the oracle ----------------------------------------------------------------------------------------------


def oracle_process(operator: str, size: int, levels: sd.LevelSchedule | None = None) -> sd.SoftDiffusionProcess:
    """DCT blur + noise with the default schedule (or ``levels``), or the Gaussian baseline (Identity); its data
    spectrum (what the ancestral sampler reads) is the oracle's power law at 3×size×size."""
    noise = sd.GeometricNoise(SIGMA_MIN, SIGMA_MAX)
    if operator == "identity":
        process = sd.SoftDiffusionProcess(sd.Identity(), noise=noise, levels=sd.LevelSchedule.zero())
    else:
        levels = levels or sd.LevelSchedule.sin2(BLUR_FRACTION * size)
        process = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=noise, levels=levels)
    process.data_spectrum = sd.oracle.GaussianDenoiser.power_law(process, (3, size, size)).data_spectrum()
    return process


def default_levels_label(size: int) -> str:
    return f"sin2({BLUR_FRACTION * size:g}) [default]"


def levels_label(operator: str, size: int) -> str:
    return default_levels_label(size) if operator == "dct_blur" else "none (identity)"


def oracle_records(args) -> list[dict]:
    """Closed form at every NFE, Monte Carlo at ``args.mc_nfe``, seconds per sample, for both operators."""
    shape = (3, args.size, args.size)
    records = []
    for operator in ("dct_blur", "identity"):
        process = oracle_process(operator, args.size)
        oracle = sd.oracle.GaussianDenoiser.power_law(process, shape)
        sd.samplers.sample(oracle, process, (2, *shape), steps=3, sampler="heun", seeds=[0, 1])  # warm-up
        for sampler in sd.samplers.SAMPLERS:
            measured = {}  # nfe -> seconds per sample
            for nfe in sorted(set(args.mc_nfe)):
                start = time.perf_counter()
                x = sd.samplers.sample(oracle, process, (args.mc_samples, *shape), steps=nfe, sampler=sampler,
                                       seeds=range(args.mc_samples))  # fmt: skip
                measured[nfe] = (time.perf_counter() - start) / args.mc_samples
                predicted = closed_form.output_variance(oracle.variance, process, nfe, sampler)
                mean, std = closed_form.monte_carlo_w2_moments(oracle.variance, predicted, args.mc_samples)
                w2 = oracle.relative_w2(x)
                records.append(dict(operator=operator, sampler=sampler, nfe=nfe, w2_rel=w2, method="monte_carlo",
                                    seconds=measured[nfe], seconds_source="measured", grid="uniform",
                                    levels=levels_label(operator, args.size), samples=args.mc_samples,
                                    w2_rel_expected=math.sqrt(mean), z_score=(w2**2 - mean) / std))  # fmt: skip
                print(f"{operator:>8} {sampler:>12} NFE {nfe:4d} Monte Carlo W2 {w2:.4f} (closed form predicts "
                      f"{math.sqrt(mean):.4f}) {measured[nfe] * 1e3:.2f} ms/sample", flush=True)  # fmt: skip
            per_call = max(measured.items())[1] / max(measured)  # seconds per sample and network call
            for nfe in args.nfe:
                start = time.perf_counter()
                w2 = relative_w2(oracle.variance, closed_form.output_variance(oracle.variance, process, nfe, sampler))
                records.append(dict(operator=operator, sampler=sampler, nfe=nfe, w2_rel=w2, method="closed_form",
                                    seconds=measured.get(nfe, per_call * nfe),
                                    seconds_source="measured" if nfe in measured else "extrapolated",
                                    grid="uniform", levels=levels_label(operator, args.size),
                                    closed_form_seconds=time.perf_counter() - start))  # fmt: skip
            print(f"{operator:>8} {sampler:>12} closed form: " + " ".join(
                f"{r['nfe']}:{r['w2_rel']:.4f}" for r in records[-len(args.nfe):]), flush=True)  # fmt: skip
    return records


def level_schedules(size: int) -> dict[str, sd.LevelSchedule]:
    """The level schedules tried on the oracle: sin² at three maxima, linear, and designed (DESIGN §1.5)."""
    blur_max = BLUR_FRACTION * size
    schedules = {
        default_levels_label(size): sd.LevelSchedule.sin2(blur_max),
        f"sin2({blur_max / 2:g})": sd.LevelSchedule.sin2(blur_max / 2),
        f"sin2({2 * blur_max:g})": sd.LevelSchedule.sin2(2 * blur_max),
        f"linear(0..{blur_max:g})": sd.LevelSchedule.from_levels([0.0, blur_max]),
    }
    process = oracle_process("dct_blur", size)
    draws = sd.oracle.GaussianDenoiser.power_law(process, (3, size, size)).sample_data(
        2000, generator=torch.Generator().manual_seed(0)
    )
    for method in ("shortest_path", "equal_arc"):
        designed = sd.design_schedule(draws, sd.DCTBlur(), keep=32, method=method, level_max=blur_max)
        schedules[f"designed({method})"] = designed.level_schedule()
    return schedules


def exploration_records(args, seconds_per_call: dict[str, float]) -> list[dict]:
    """Closed form over sampler × time grid × level schedule × NFE on the DCT-blur oracle (part 3)."""
    records = []
    shape = (3, args.size, args.size)
    for label, levels in level_schedules(args.size).items():
        process = oracle_process("dct_blur", args.size, levels)
        variance = sd.oracle.GaussianDenoiser.power_law(process, shape).variance
        for grid in GRIDS:
            if grid == "optimized" and label != default_levels_label(args.size):
                continue  # fitted per sampler and NFE: the default process only (seconds to a minute each)
            for sampler in sd.samplers.SAMPLERS:
                values = []
                for nfe in args.explore_nfe:
                    if grid == "optimized" and (nfe > OPTIMIZED_NFE_MAX or sampler in EXACT_FOR_THE_FIT):
                        continue
                    start = time.perf_counter()
                    times = optimized_grid(process, variance, nfe, sampler=sampler) if grid == "optimized" else grid
                    grid_seconds = time.perf_counter() - start
                    output = closed_form.output_variance(variance, process, nfe, sampler, grid=times)
                    w2 = relative_w2(variance, output)
                    values.append(w2)
                    records.append(dict(operator="dct_blur", sampler=sampler, nfe=nfe, w2_rel=w2, method="closed_form",
                                        seconds=seconds_per_call[sampler] * nfe, seconds_source="extrapolated",
                                        grid=grid, levels=label, explored=True, grid_seconds=grid_seconds))  # fmt: skip
                if values:
                    print(f"{label:>38} {grid:>11} {sampler:>12}: " + " ".join(f"{v:.4f}" for v in values), flush=True)
    return records


# --- the sampler's own cost per step ------------------------------------------------------------------------


@contextlib.contextmanager
def forced_backend(name: str | None):
    previous = os.environ.get("SOFTDIFF_BACKEND")
    if name is None:
        os.environ.pop("SOFTDIFF_BACKEND", None)
    else:
        os.environ["SOFTDIFF_BACKEND"] = name
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("SOFTDIFF_BACKEND", None)
        else:
            os.environ["SOFTDIFF_BACKEND"] = previous


def median_ms(run, device: torch.device, repeats: int) -> float:
    run()  # warm-up (and compilation for a kernel backend)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def step_costs(args) -> list[dict]:
    """ms per sampler step (no network) at 64×3×32×32, default backend vs the PyTorch reference."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    process = oracle_process("dct_blur", 32)
    generator = torch.Generator().manual_seed(0)
    x_t, x0_hat, x0_other = (torch.randn(64, 3, 32, 32, generator=generator).to(device) for _ in range(3))
    t, t_next, t_previous = (torch.full((64,), v, dtype=torch.float64, device=device) for v in (0.5, 0.48, 0.52))
    seeds = torch.arange(64, device=device)
    steps = {
        "momentum": lambda: sd.momentum_step(process, x_t, x0_hat, t, t_next, seeds=seeds),
        "naive": lambda: sd.naive_step(process, x_t, x0_hat, t, t_next, seeds=seeds),
        "momentum_ode": lambda: sd.momentum_ode_step(process, x_t, x0_hat, t, t_next),
        "multistep": lambda: sd.samplers.second_order_step(process, x_t, x0_hat, t, t_next, x0_other, t_previous),
        "heun (two second-order steps)": lambda: (
            sd.samplers.second_order_step(process, x_t, x0_hat, t, t_next, x0_other, t_previous),
            sd.samplers.second_order_step(process, x_t, x0_hat, t, t_next, x0_other, t_next),
        ),
    }
    records = []
    default = sk.backend(device)
    for forced in dict.fromkeys([None, "torch"]):  # the default backend first, then the reference
        with forced_backend(forced):
            backend = sk.backend(device)
            if forced == "torch" and backend == default:
                note = "same backend as the default"
            else:
                note = ""
            for name, run in steps.items():
                ms = median_ms(run, device, args.repeats)
                records.append(dict(step=name, backend=backend, forced=forced, ms=ms, device=str(device),
                                    shape="64x3x32x32", note=note))  # fmt: skip
                print(f"step {name:>30} backend {backend:>6}{' (forced)' if forced else ''}: {ms:.3f} ms", flush=True)
    return records


# --- a trained checkpoint -------------------------------------------------------------------------------------


def checkpoint_records(args) -> list[dict]:
    """Quality and wall time per sampler and NFE of a trained model. The images of each (sampler, NFE) go to a
    temporary .npz scored by ``python -m softdiff.fid score`` (its ``--json`` ``results``): FID and KID when
    Inception weights are given, else the proxies SWD-proxy and RandFD-proxy (never called FID)."""
    try:
        from softdiff.cli import fid
    except ImportError as error:
        raise SystemExit(f"scoring a checkpoint needs softdiff.fid (python -m softdiff.fid): {error}") from error
    import numpy as np

    from softdiff.images import to_uint8
    from softdiff.loading import load_model

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    denoiser, process, config = load_model(args.ckpt, weights="ema", device=device)
    reference = args.ref or config.data
    shape = (denoiser.net.input.weight.shape[1], config.resolution, config.resolution)
    metrics = "fid,kid" if args.inception else "swd,randfd"
    sd.samplers.sample(denoiser, process, (1, *shape), steps=2, sampler="heun", seeds=[0], device=device)  # warm-up
    records = []
    with tempfile.TemporaryDirectory() as folder:
        for sampler in args.ckpt_samplers:
            if sampler in sd.samplers.NEEDS_DATA_SPECTRUM and process.data_spectrum is None:
                print(f"skipping {sampler}: the checkpoint stores no data spectrum (trained by an older version)")
                continue
            for nfe in args.ckpt_nfe:
                images = []
                start = time.perf_counter()
                for first in range(0, args.ckpt_samples, args.batch):
                    seeds = list(range(first, min(first + args.batch, args.ckpt_samples)))
                    x = sd.samplers.sample(denoiser, process, (len(seeds), *shape), steps=nfe, sampler=sampler,
                                           seeds=seeds, device=device)  # fmt: skip
                    images.append(to_uint8(x))  # [B, H, W, C]
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = (time.perf_counter() - start) / args.ckpt_samples
                samples_path, score_path = Path(folder) / f"{sampler}-{nfe}.npz", Path(folder) / f"{sampler}-{nfe}.json"
                np.savez(samples_path, arr_0=torch.cat(images).numpy())
                argv = ["score", str(samples_path), "--ref", reference, "--metrics", metrics, "--json", str(score_path),
                        "--device", str(device), "--no-progress"] + (["--inception", args.inception] if args.inception
                                                                      else [])  # fmt: skip
                code = fid.main(argv)
                if code != 0 or not score_path.exists():
                    raise SystemExit(f"scoring {sampler} at {nfe} NFE: python -m softdiff.fid {' '.join(argv)} failed "
                                     f"(exit {code})")  # fmt: skip
                for score in json.loads(score_path.read_text())["results"]:
                    records.append(dict(operator=process.operator.name, sampler=sampler, nfe=nfe, method="checkpoint",
                                        metric=score["metric"], value=score["value"], samples=score["n"],
                                        reference=reference, seconds=seconds, seconds_source="measured",
                                        grid="uniform", levels=repr(process.levels), device=str(device)))  # fmt: skip
                    print(f"{sampler:>12} NFE {nfe:4d} {score['metric']} {score['value']:.4g} (n={score['n']}) "
                          f"{seconds * 1e3:.1f} ms/sample", flush=True)  # fmt: skip
    return records


# --- conclusion, markdown, plot -------------------------------------------------------------------------------


def conclusion(records: list[dict], default_levels: str) -> dict:
    """Part 3's questions, answered from the closed-form records of the DCT-blur oracle."""

    def w2(sampler, nfe, grid="uniform", levels=default_levels):
        for r in records:
            if (r["operator"], r["method"], r["sampler"], r["nfe"], r["grid"], r["levels"]) == (
                "dct_blur", "closed_form", sampler, nfe, grid, levels):  # fmt: skip
                return r["w2_rel"]
        return None

    momentum, heun = w2("momentum", TARGET_NFE), w2("heun", TARGET_NFE)
    within = [r for r in records if r["operator"] == "dct_blur" and r["method"] == "closed_form"
              and r["nfe"] <= TARGET_NFE and r["levels"] == default_levels]  # fmt: skip
    reached = sorted((r for r in within if r["w2_rel"] <= AMBITION_W2), key=lambda r: (r["nfe"], r["w2_rel"]))
    best = min(within, key=lambda r: r["w2_rel"], default=None)
    any_levels = [r for r in records if r.get("explored") and r["nfe"] <= TARGET_NFE]
    best_any = min(any_levels, key=lambda r: r["w2_rel"], default=None)
    few = {}
    for nfe, target in FEW_NFE_TARGETS.items():
        cells = [r for r in records if (r["operator"], r["method"], r["nfe"], r["levels"]) == (
            "dct_blur", "closed_form", nfe, default_levels) and r["sampler"] not in EXACT_FOR_THE_FIT]  # fmt: skip
        top = min(cells, key=lambda r: r["w2_rel"], default=None)
        few[str(nfe)] = None if top is None else dict(target=target, met=top["w2_rel"] <= target,
                                                      **{k: top[k] for k in ("sampler", "grid", "w2_rel")})  # fmt: skip
    return {
        "few_nfe_targets": few,
        "momentum_w2_at_35": momentum,
        "heun_w2_at_35": heun,
        "heun_over_momentum_at_35": None if momentum is None or heun is None else heun / momentum,
        "target_half_met": None if momentum is None or heun is None else heun <= momentum / 2,
        "ambition_reached_by": [{k: r[k] for k in ("sampler", "grid", "nfe", "w2_rel")} for r in reached],
        "best_within_35": None if best is None else {k: best[k] for k in ("sampler", "grid", "nfe", "w2_rel")},
        "best_within_35_any_level_schedule": None
        if best_any is None
        else {k: best_any[k] for k in ("sampler", "grid", "levels", "nfe", "w2_rel")},
    }


def markdown(result: dict) -> str:
    info, records = result["environment"], result["records"]
    lines = [f"# NFE and speed: {info['device']}, {info['date']}", "",
             f"`{info['command']}`; torch {info['torch']}, python {info['python']}, backend `{info['backend']}`, "
             f"{info['threads']} CPU threads; {info['seconds']:.0f} s in all.", ""]  # fmt: skip
    if result.get("oracle"):
        o = result["oracle"]
        lines += ["## Gaussian oracle", "",
                  f"Data: N(0, Σ) at {o['shape']}, Σ diagonal in the DCT basis, λ ∝ 1/(1 + k² + l²), mean pixel "
                  f"variance 0.25; exact denoiser. σ from {SIGMA_MIN} to {SIGMA_MAX}; DCT blur with the default "
                  f"levels `{o['default_levels']}`, and Identity (the Gaussian baseline). Relative W2 = "
                  "‖√v − √λ‖/‖√λ‖ over DCT coefficients (0 = exact). The floor (≈ 0.002) is the prior "
                  "N(0, σ_1² I) standing in for the true law of x_1, and the last call at t_{N−1} > 0.",
                  ""]  # fmt: skip
        for operator in ("dct_blur", "identity"):
            lines += [f"### {operator}: closed form, uniform grid", "", _table(records, operator, "closed_form"), ""]
        lines += ["### Monte Carlo through `sd.sample` vs the closed form", "",
                  f"{o['mc_samples']} samples (float32) per cell; `expected` is the mean of the Monte Carlo "
                  "estimate the closed form predicts for that many samples (the estimate is biased up by "
                  f"≈ 1/√(2n) = {1 / math.sqrt(2 * o['mc_samples']):.3f} in quadrature), z its standardised "
                  "deviation.", "",
                  "| operator | sampler | NFE | closed form | Monte Carlo | expected | z |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for r in records:
            if r["method"] == "monte_carlo":
                exact = _find(records, r["operator"], "closed_form", r["sampler"], r["nfe"], "uniform", r["levels"])
                lines.append(f"| {r['operator']} | {r['sampler']} | {r['nfe']} | {exact:.4f} | {r['w2_rel']:.4f} | "
                             f"{r['w2_rel_expected']:.4f} | {r['z_score']:+.2f} |")  # fmt: skip
        lines += ["", "### Wall time per sample (ms)", "",
                  f"Batch {o['mc_samples']}, float32, on {info['device']}; measured at NFE "
                  f"{', '.join(map(str, o['mc_nfe']))}, extrapolated (*) linearly in NFE elsewhere.", "",
                  _seconds_table(records), ""]  # fmt: skip
        c = result["conclusion"]
        lines += ["## Fewer NFEs for the same quality (part 3)", "",
                  f"- First-order momentum at {TARGET_NFE} NFE (default schedule, uniform grid): "
                  f"W2 = {c['momentum_w2_at_35']:.4f}.",
                  f"- heun at {TARGET_NFE} NFE (uniform grid): W2 = {c['heun_w2_at_35']:.4f}, "
                  f"{c['heun_over_momentum_at_35']:.2f}× momentum's: target (≤ 0.5×) "
                  f"{'met' if c['target_half_met'] else 'NOT met'}.",
                  f"- W2 ≤ {AMBITION_W2} within {TARGET_NFE} NFE on the default process: "
                  + (", ".join(f"{r['sampler']}/{r['grid']} at {r['nfe']} NFE ({r['w2_rel']:.4f})"
                               for r in _first_per_combination(c["ambition_reached_by"])) or "nothing") + ".",
                  f"- Best within {TARGET_NFE} NFE: {c['best_within_35']['sampler']}/{c['best_within_35']['grid']} "
                  f"at {c['best_within_35']['nfe']} NFE, W2 = {c['best_within_35']['w2_rel']:.4f}.",
                  *(f"- Target W2 ≤ {v['target']} at {nfe} NFE: best {v['sampler']}/{v['grid']}, W2 = "
                    f"{v['w2_rel']:.4f}: {'met' if v['met'] else 'NOT met'} (ancestral left out: it is handed "
                    "this Gaussian's exact posterior variance)."
                    for nfe, v in c["few_nfe_targets"].items() if v is not None),
                  _best_any_line(c["best_within_35_any_level_schedule"]), "",
                  "Every combination tried (closed form, DCT-blur oracle; a level schedule other than the default is "
                  "a different process, i.e. a different trained model):", "",
                  _exploration_table(records, o["explore_nfe"]), ""]  # fmt: skip
    if result.get("step_costs"):
        lines += ["## The sampler's own cost per step (no network), 64×3×32×32 fp32", "",
                  "| step | backend | ms | note |", "| --- | --- | ---: | --- |"]  # fmt: skip
        for r in result["step_costs"]:
            backend = r["backend"] + (" (SOFTDIFF_BACKEND=torch)" if r["forced"] else " (default)")
            lines.append(f"| {r['step']} | {backend} | {r['ms']:.3f} | {r['note']} |")
        lines.append("")
    if result.get("checkpoint"):
        lines += ["## Trained checkpoint", "", f"`{result['checkpoint']['ckpt']}`, reference "
                  f"`{result['checkpoint']['reference']}`, scored by `python -m softdiff.fid` (FID/KID with Inception "
                  "weights; otherwise SWD-proxy and RandFD-proxy, which are NOT FID), uniform grid.", "",
                  "| sampler | NFE | metric | value | samples | ms/sample |",
                  "| --- | ---: | --- | ---: | ---: | ---: |"]  # fmt: skip
        for r in records:
            if r["method"] == "checkpoint":
                lines.append(f"| {r['sampler']} | {r['nfe']} | {r['metric']} | {r['value']:.4g} | {r['samples']} | "
                             f"{1e3 * r['seconds']:.1f} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def _best_any_line(best: dict | None) -> str:
    if best is None:
        return "- No other level schedule was tried."
    return (f"- Best within {TARGET_NFE} NFE over every level schedule tried (another process: the model would be "
            f"trained for it): {best['sampler']}/{best['grid']} with `{best['levels']}` at {best['nfe']} NFE, "
            f"W2 = {best['w2_rel']:.4f}.")  # fmt: skip


def _find(records, operator, method, sampler, nfe, grid, levels):
    for r in records:
        if (r["operator"], r["method"], r["sampler"], r["nfe"], r["grid"], r["levels"]) == (
            operator, method, sampler, nfe, grid, levels):  # fmt: skip
            return r["w2_rel"]
    return float("nan")


def _first_per_combination(rows: list[dict]) -> list[dict]:
    seen, first = set(), []
    for r in rows:
        if (r["sampler"], r["grid"]) not in seen:
            seen.add((r["sampler"], r["grid"]))
            first.append(r)
    return first


def _table(records: list[dict], operator: str, method: str) -> str:
    rows = [r for r in records if not r.get("explored") and r["operator"] == operator and r["method"] == method]
    nfes = sorted({r["nfe"] for r in rows})
    lines = ["| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "| --- |" + " ---: |" * len(nfes)]
    for sampler in sd.samplers.SAMPLERS:
        values = {r["nfe"]: r["w2_rel"] for r in rows if r["sampler"] == sampler}
        lines.append(f"| {sampler} | " + " | ".join(f"{values[n]:.4f}" if n in values else "" for n in nfes) + " |")
    return "\n".join(lines)


def _seconds_table(records: list[dict]) -> str:
    rows = [r for r in records if not r.get("explored") and r["method"] == "closed_form"]
    nfes = sorted({r["nfe"] for r in rows})
    lines = ["| operator | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "| --- | --- |" + " ---: |" * len(nfes)]  # fmt: skip
    for operator in ("dct_blur", "identity"):
        for sampler in sd.samplers.SAMPLERS:
            cells = {r["nfe"]: f"{1e3 * r['seconds']:.2f}" + ("" if r["seconds_source"] == "measured" else "*")
                     for r in rows if r["operator"] == operator and r["sampler"] == sampler}  # fmt: skip
            lines.append(f"| {operator} | {sampler} | " + " | ".join(cells.get(n, "") for n in nfes) + " |")
    return "\n".join(lines)


def _exploration_table(records: list[dict], nfes) -> str:
    rows = [r for r in records if r.get("explored")]
    lines = ["| level schedule | grid | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "| --- | --- | --- |" + " ---: |" * len(nfes)]  # fmt: skip
    combos = dict.fromkeys((r["levels"], r["grid"], r["sampler"]) for r in rows)
    for levels, grid, sampler in combos:
        key = (levels, grid, sampler)
        values = {r["nfe"]: r["w2_rel"] for r in rows if (r["levels"], r["grid"], r["sampler"]) == key}
        cells = (f"{values[n]:.4f}" if n in values else "" for n in nfes)
        lines.append(f"| {levels} | {grid} | {sampler} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """W2 against NFE, log-log: DCT blur and identity on the uniform grid, and DCT blur on the other grids (the
    optimised one reaches 1e-5: the axis goes down to it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    records = result["records"]
    default_levels = result["oracle"]["default_levels"]
    panels = [
        ("dct_blur", "uniform"),
        ("identity", "uniform"),
        ("dct_blur", "information"),
        ("dct_blur", "edm"),
        ("dct_blur", "optimized"),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), sharey=True)
    colours = dict(zip(sd.samplers.SAMPLERS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for axis, (operator, grid) in zip(axes, panels, strict=True):
        for sampler in sd.samplers.SAMPLERS:
            closed = sorted((r["nfe"], r["w2_rel"]) for r in records if r["method"] == "closed_form"
                            and r["operator"] == operator and r["sampler"] == sampler and r["grid"] == grid
                            and r["levels"] in (default_levels, "none (identity)"))  # fmt: skip
            if closed:
                axis.loglog(*zip(*dict(closed).items(), strict=True), "-", color=colours[sampler], label=sampler)
            carlo = sorted((r["nfe"], r["w2_rel"]) for r in records if r["method"] == "monte_carlo"
                           and r["operator"] == operator and r["sampler"] == sampler and r["grid"] == grid)  # fmt: skip
            if carlo:
                axis.loglog(*zip(*carlo, strict=True), "o", color=colours[sampler], markersize=4)
        axis.axhline(AMBITION_W2, color="grey", linestyle=":", linewidth=1)
        axis.axvline(TARGET_NFE, color="grey", linestyle=":", linewidth=1)
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_title(f"{operator}, {grid} grid")
        axis.set_xlabel("NFE")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("relative W2 (lines: closed form; dots: Monte Carlo)")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --- main -----------------------------------------------------------------------------------------------------


def environment(start: float, argv) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python benchmarks/nfe_speed.py", *argv]),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "backend": sk.backend(device),
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - start,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output folder (default benchmarks/results/nfe_speed-<date>)")
    parser.add_argument("--ckpt", default=None, help="a checkpoint file or run folder: benchmark the trained model")
    parser.add_argument("--nfe", type=parse_ints, default=NFES, help="NFE values of the closed form (comma-separated)")
    parser.add_argument("--mc-nfe", type=parse_ints, default=MC_NFES, help="NFE values run by Monte Carlo")
    parser.add_argument("--mc-samples", type=int, default=500, help="Monte Carlo samples per (sampler, NFE)")
    parser.add_argument("--explore-nfe", type=parse_ints, default=EXPLORE_NFES, help="NFE of the part-3 exploration")
    parser.add_argument("--size", type=int, default=32, help="oracle image size S (3×S×S)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repetitions of a sampler step")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: the oracle's small batches gain little from more)")  # fmt: skip
    parser.add_argument("--ckpt-nfe", type=parse_ints, default=(10, 20, 35, 50, 100), help="NFE values with --ckpt")
    parser.add_argument("--ckpt-samplers", type=parse_samplers, default=sd.samplers.SAMPLERS,
                        help="samplers with --ckpt (comma-separated; default all)")  # fmt: skip
    parser.add_argument("--ckpt-samples", type=int, default=1000, help="images per (sampler, NFE) with --ckpt")
    parser.add_argument("--batch", type=int, default=250, help="sampling batch with --ckpt")
    parser.add_argument("--ref", default=None, help="reference for --ckpt scores (default: the run's training data)")
    parser.add_argument("--inception", default=os.environ.get("SOFTDIFF_INCEPTION"), help="Inception weights: FID")
    parser.add_argument("--device", default=None, help="device for --ckpt (default: cuda when present)")
    args = parser.parse_args(argv)
    if args.mc_samples < 2 or args.size < 2 or args.repeats < 1 or args.threads < 1 or args.ckpt_samples < 2:
        parser.error("--mc-samples, --ckpt-samples and --size must be >= 2; --repeats and --threads >= 1")
    if args.ckpt is not None and not Path(args.ckpt).exists():
        parser.error(f"--ckpt: no such file or folder: {args.ckpt}")
    torch.set_num_threads(args.threads)
    argv = sys.argv[1:] if argv is None else list(argv)
    start = time.perf_counter()
    result: dict = {"records": []}
    if args.ckpt is None:
        result["records"] += oracle_records(args)
        seconds_per_call = {}
        for sampler in sd.samplers.SAMPLERS:
            measured = [r for r in result["records"] if r["method"] == "monte_carlo" and r["sampler"] == sampler
                        and r["operator"] == "dct_blur"]  # fmt: skip
            largest = max(measured, key=lambda r: r["nfe"])
            seconds_per_call[sampler] = largest["seconds"] / largest["nfe"]
        result["records"] += exploration_records(args, seconds_per_call)
        result["oracle"] = {"shape": f"3×{args.size}×{args.size}", "default_levels": default_levels_label(args.size),
                            "mc_samples": args.mc_samples, "mc_nfe": list(args.mc_nfe),
                            "explore_nfe": list(args.explore_nfe)}  # fmt: skip
        result["conclusion"] = conclusion(result["records"], default_levels_label(args.size))
    else:
        result["records"] += checkpoint_records(args)
        result["checkpoint"] = {"ckpt": args.ckpt, "reference": result["records"][0]["reference"]}
    result["step_costs"] = step_costs(args)
    result["environment"] = environment(start, argv)
    stamp = result["environment"]["date"][:16].replace(":", "")
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"nfe_speed-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "nfe_speed.json").write_text(json.dumps(result, indent=1))
    (out / "nfe_speed.md").write_text(markdown(result))
    if result.get("oracle"):
        plot(result, out / "nfe_speed.png")
    print(f"wrote {out}/nfe_speed.json, nfe_speed.md" + (", nfe_speed.png" if result.get("oracle") else ""))
    return result


if __name__ == "__main__":
    main()
