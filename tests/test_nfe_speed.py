"""The closed-form output law of every sampler (softdiff.closed_form) against Monte Carlo through sd.sample, its
limits, the W2 estimator's moments, and benchmarks/nfe_speed.py end to end on a small problem."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

import softdiff as sd
import softdiff_kernels as sk
from softdiff import closed_form
from softdiff.sampler_kinds import MULTISTEP_ORDER
from softdiff.spectra import relative_w2

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def blur_process(sigma_min=0.02, sigma_max=20.0, size=16):
    return sd.SoftDiffusionProcess(
        sd.DCTBlur(), noise=sd.GeometricNoise(sigma_min, sigma_max), levels=sd.LevelSchedule.sin2(0.36 * size)
    )


def identity_process():
    return sd.SoftDiffusionProcess(sd.Identity(), noise=sd.GeometricNoise(0.02, 20.0), levels=sd.LevelSchedule.zero())


@pytest.mark.parametrize(
    ("make", "grid", "samples"),
    [(blur_process, "uniform", 1000), (identity_process, "edm", 600), (blur_process, "information", 600)],
)
def test_closed_form_matches_monte_carlo_through_sample_for_every_sampler(make, grid, samples):
    """The samples of the exact Gaussian oracle are Gaussian with independent DCT coefficients, so n v̂_k / v_k
    ~ χ²_n for every coefficient k when the closed form v_k is right: (1) every per-frequency variance ratio
    (pooled over the 3 channels, 3n draws) lies inside its χ² quantiles at a Bonferroni-corrected level 1e-6;
    (2) the squared relative W2 that GaussianDenoiser.relative_w2 reports lies within 5 standard deviations of
    the mean the closed form predicts for n samples."""
    process = make()
    oracle = sd.oracle.GaussianDenoiser.power_law(process, (3, 16, 16))
    process.data_spectrum = oracle.data_spectrum()  # the ancestral sampler's: exact for this law
    steps = 5
    draws = 3 * samples
    frequencies = 16 * 16
    low, high = scipy.stats.chi2.ppf([1e-6 / (2 * frequencies), 1 - 1e-6 / (2 * frequencies)], draws) / draws
    for sampler in sd.samplers.SAMPLERS:
        x = sd.sample(oracle, process, (samples, 3, 16, 16), steps=steps, sampler=sampler, seeds=range(samples),
                      dtype=torch.float64, grid=grid)  # fmt: skip
        predicted = closed_form.output_variance(oracle.variance, process, steps, sampler, grid=grid)
        ratio = (sk.dct2(x).square().mean(dim=(0, 1)) / predicted.mean(dim=0)).numpy()
        assert low < ratio.min() and ratio.max() < high, (sampler, ratio.min(), ratio.max(), low, high)
        mean, std = closed_form.monte_carlo_w2_moments(oracle.variance, predicted, samples)
        w2 = oracle.relative_w2(x)
        assert abs(w2**2 - mean) < 5 * std, (sampler, w2, math.sqrt(mean), std)


@pytest.mark.parametrize("grid", ["uniform", "information"])
@pytest.mark.parametrize("make", [blur_process, identity_process])
def test_deterministic_samplers_are_the_closed_form_gain_sample_by_sample(make, grid):
    """momentum_ode, multistep and heun map each DCT coefficient of x_1 linearly: out = IDCT2(k ⊙ DCT2(x_1))."""
    process = make()
    oracle = sd.oracle.GaussianDenoiser.power_law(process, (2, 12, 10))
    seeds = [3, 1, 4, 1_000_000]
    start = sk.dct2(process.sample_prior((2, 12, 10), seeds, dtype=torch.float64))
    for sampler in ("momentum_ode", *MULTISTEP_ORDER):
        out = sd.sample(oracle, process, (4, 2, 12, 10), steps=7, sampler=sampler, seeds=seeds, dtype=torch.float64,
                        grid=grid)  # fmt: skip
        gain = closed_form.deterministic_gain(oracle.variance, process, 7, sampler, grid=grid)
        torch.testing.assert_close(sk.dct2(out), gain * start, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="stochastic"):
        closed_form.deterministic_gain(oracle.variance, process, 7, "momentum")


def test_monte_carlo_w2_moments_match_simulated_chi_square_draws(generator):
    """Mean and sd of Σ_k (√v̂_k − √λ_k)² / Σ λ against 4000 simulated estimates v̂ = v χ²_n / n."""
    lam = torch.rand(40, generator=generator, dtype=torch.float64) + 0.1
    v = lam * (1 + 0.3 * torch.randn(40, generator=generator, dtype=torch.float64)).abs()
    n = 7
    chi2 = torch.distributions.Chi2(torch.full((40,), float(n), dtype=torch.float64))
    torch.manual_seed(0)
    estimates = v * chi2.sample((4000,)) / n
    simulated = (estimates.sqrt() - lam.sqrt()).square().sum(dim=1) / lam.sum()
    mean, std = closed_form.monte_carlo_w2_moments(lam, v, n)
    assert abs(float(simulated.mean()) - mean) < 4 * std / math.sqrt(4000)
    assert abs(float(simulated.std()) / std - 1) < 0.08


@pytest.mark.parametrize("sampler", ["momentum", "momentum_ode", *MULTISTEP_ORDER])
def test_consistent_samplers_converge_to_the_data_law_at_their_order(sampler):
    """From the exact marginal at t = 1 and with σ_min → 0, every consistent sampler's output law tends to the
    data law (so the ODE and SDE the steps discretise have the right marginals), by a factor ≈ 4 from 100 to
    400 NFE at first order and ≈ 16 at second order; naive does not converge."""
    process = blur_process(sigma_min=1e-4, sigma_max=40.0)
    lam = sd.oracle.GaussianDenoiser.power_law(process, (1, 16, 16)).variance
    w2 = [
        relative_w2(lam, closed_form.output_variance(lam, process, n, sampler, start_variance="exact"))
        for n in (100, 400)
    ]
    if sampler in MULTISTEP_ORDER:
        assert w2[1] < w2[0] / 8 and w2[1] < 0.002, w2
    else:
        assert 3.5 < w2[0] / w2[1] < 4.5 and w2[1] < 0.03, w2
    naive = closed_form.output_variance(lam, process, 400, "naive", start_variance="exact")
    assert relative_w2(lam, naive) > 0.2


def test_second_order_samplers_beat_first_order_at_equal_nfe_on_the_default_oracle():
    """The issue's target, on the default 32×32 oracle: heun at 35 NFE ≤ half of momentum's W2 at 35 NFE."""
    process = blur_process(sigma_max=80.0, size=32)
    oracle = sd.oracle.GaussianDenoiser.power_law(process, (1, 32, 32))
    process.data_spectrum, lam = oracle.data_spectrum(), oracle.variance
    w2 = {s: relative_w2(lam, closed_form.output_variance(lam, process, 35, s)) for s in sd.samplers.SAMPLERS}
    assert w2["heun"] <= 0.5 * w2["momentum"] and w2["multistep"] <= 0.5 * w2["momentum"], w2
    assert w2["heun"] <= 0.02, w2


def test_closed_form_rejects_what_it_cannot_describe():
    lam = torch.ones(1, 4, 4, dtype=torch.float64)

    class Shift(sd.Operator):  # known by apply() alone
        def apply(self, x, level):
            return torch.roll(x, 1, dims=-1)

    shift = sd.SoftDiffusionProcess(Shift(), noise=sd.GeometricNoise(0.1, 1.0), levels=sd.LevelSchedule.zero())
    with pytest.raises(TypeError, match="the closed form needs an operator diagonal in an orthonormal basis"):
        closed_form.output_variance(lam, shift, 4, "heun")
    with pytest.raises(ValueError, match="sampler must be one of"):
        closed_form.output_variance(lam, blur_process(), 4, "euler")
    with pytest.raises(ValueError, match="variance must be a \\[C, H, W\\]"):
        closed_form.output_variance(torch.ones(4, 4), blur_process(), 4, "heun")
    with pytest.raises(ValueError, match="variance must be finite"):
        closed_form.output_variance(-lam, blur_process(), 4, "heun")
    with pytest.raises(ValueError, match="needs t_start = 1"):
        closed_form.output_variance(lam, blur_process(), 4, "heun", t_start=0.5)
    with pytest.raises(ValueError, match="start_variance must be"):
        closed_form.output_variance(lam, blur_process(), 4, "heun", start_variance="fitted")
    with pytest.raises(ValueError, match="start_variance must have shape"):
        closed_form.output_variance(lam, blur_process(), 4, "heun", start_variance=torch.ones(2, 4, 4))
    with pytest.raises(ValueError, match="samples must be an int >= 2"):
        closed_form.monte_carlo_w2_moments(lam, lam, 1)


def load_benchmark():
    spec = importlib.util.spec_from_file_location("nfe_speed", ROOT / "benchmarks" / "nfe_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nfe_speed_benchmark_writes_json_markdown_and_plot(tmp_path):
    benchmark = load_benchmark()
    result = benchmark.main(["--out", str(tmp_path), "--size", "8", "--mc-samples", "40", "--mc-nfe", "3,4",
                             "--nfe", "3,4,35", "--explore-nfe", "4", "--repeats", "1"])  # fmt: skip
    saved = json.loads((tmp_path / "nfe_speed.json").read_text())
    assert saved["records"] == json.loads(json.dumps(result["records"]))
    assert (tmp_path / "nfe_speed.png").stat().st_size > 10_000
    markdown = (tmp_path / "nfe_speed.md").read_text()
    assert "## Fewer NFEs for the same quality" in markdown and "cost per step" in markdown
    records = saved["records"]
    for record in records:
        assert {"operator", "sampler", "nfe", "w2_rel", "method", "seconds"} <= set(record)
        assert record["operator"] in ("dct_blur", "identity") and record["method"] in ("closed_form", "monte_carlo")
        assert record["w2_rel"] >= 0 and record["seconds"] > 0
    main = [r for r in records if not r.get("explored")]
    assert {(r["operator"], r["sampler"], r["nfe"]) for r in main if r["method"] == "closed_form"} == {
        (o, s, n) for o in ("dct_blur", "identity") for s in sd.samplers.SAMPLERS for n in (3, 4, 35)
    }
    carlo = [r for r in main if r["method"] == "monte_carlo"]
    assert {r["nfe"] for r in carlo} == {3, 4} and all(abs(r["z_score"]) < 5 for r in carlo)
    # The closed-form records are the closed form itself.
    process = benchmark.oracle_process("dct_blur", 8)
    lam = sd.oracle.GaussianDenoiser.power_law(process, (3, 8, 8)).variance
    heun_35 = next(r for r in main if (r["operator"], r["sampler"], r["nfe"], r["method"]) == (
        "dct_blur", "heun", 35, "closed_form"))  # fmt: skip
    expected = relative_w2(lam, closed_form.output_variance(lam, process, 35, "heun"))
    assert heun_35["w2_rel"] == pytest.approx(expected, rel=1e-12)
    explored = {(r["levels"], r["grid"], r["sampler"]) for r in records if r.get("explored")}
    assert {g for _, g, _ in explored} == set(sd.time_grids.GRIDS) and len({lv for lv, _, _ in explored}) >= 4
    # The optimised grid is fitted on the default process only, and never loses to the grids it starts from.
    optimized = [r for r in records if r.get("explored") and r["grid"] == "optimized"]
    assert {r["levels"] for r in optimized} == {benchmark.default_levels_label(8)}
    assert {r["sampler"] for r in optimized} == set(sd.samplers.SAMPLERS) - {"ancestral"}  # exact: refused
    for r in optimized:
        fixed = [f["w2_rel"] for f in records if f.get("explored") and f["grid"] != "optimized" and
                 (f["levels"], f["sampler"], f["nfe"]) == (r["levels"], r["sampler"], r["nfe"])]  # fmt: skip
        assert len(fixed) == 3 and r["w2_rel"] <= min(fixed) * (1 + 1e-12), (r, fixed)
    assert {r["step"] for r in saved["step_costs"]} >= {"momentum", "multistep"}
    conclusion = saved["conclusion"]
    assert conclusion["heun_w2_at_35"] == pytest.approx(heun_35["w2_rel"])
    assert conclusion["target_half_met"] == (conclusion["heun_w2_at_35"] <= conclusion["momentum_w2_at_35"] / 2)
    assert set(conclusion["few_nfe_targets"]) == {"10", "20"}  # no cell at those NFE in this small run
    assert all(v is None for v in conclusion["few_nfe_targets"].values())


def test_nfe_speed_benchmark_scores_a_checkpoint_with_the_proxies(tmp_path):
    """--ckpt: every sampler and NFE sampled from the model and scored by python -m softdiff.fid (proxies here,
    no Inception weights). An untrained tiny U-Net saved in the training checkpoint format stands in."""
    from dataclasses import asdict

    from softdiff.training.build import build_network
    from softdiff.training.config import TrainConfig

    config = TrainConfig(data="shapes:24", resolution=16, net="tiny", sigma_max=5.0)
    process = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 5.0),
                                      levels=sd.LevelSchedule.sin2(0.36 * 16))  # fmt: skip
    torch.manual_seed(0)
    net = build_network(config, 3)
    state = {"config": asdict(config), "process": process.to_dict(), "ema": net.state_dict(),
             "model": net.state_dict(), "step": 0}  # fmt: skip
    torch.save(state, tmp_path / "ckpt.pt")
    benchmark = load_benchmark()
    result = benchmark.main(["--ckpt", str(tmp_path / "ckpt.pt"), "--ckpt-samplers", "momentum,heun",
                             "--ckpt-nfe", "2,3", "--ckpt-samples", "16",
                             "--batch", "16", "--out", str(tmp_path / "out"), "--repeats", "1"])  # fmt: skip
    records = result["records"]
    assert {(r["sampler"], r["nfe"]) for r in records} == {(s, n) for s in ("momentum", "heun") for n in (2, 3)}
    assert {r["metric"] for r in records} == {"SWD-proxy", "RandFD-proxy"}
    assert all(r["method"] == "checkpoint" and r["samples"] == 16 and r["seconds"] > 0 for r in records)
    assert all(math.isfinite(r["value"]) and r["value"] >= 0 for r in records)
    markdown = (tmp_path / "out" / "nfe_speed.md").read_text()
    assert "NOT FID" in markdown and "| heun | 3 | SWD-proxy |" in markdown
    # The benchmark leaves the public sampling function in place, and it still samples.
    assert sd.sample is sd.samplers.sample
    drawn = sd.sample(lambda x, t: 0.5 * x, process, (2, 3, 16, 16), steps=2, seeds=[1, 2])
    assert drawn.shape == (2, 3, 16, 16) and bool(torch.isfinite(drawn).all())
    assert torch.equal(drawn, sd.samplers.sample(lambda x, t: 0.5 * x, process, (2, 3, 16, 16), steps=2, seeds=[1, 2]))


def test_nfe_speed_benchmark_rejects_bad_options(tmp_path, capsys):
    benchmark = load_benchmark()
    for argv, message in ((["--nfe", "3,x"], "comma-separated ints"), (["--mc-samples", "1"], "must be >= 2"),
                          (["--ckpt", str(tmp_path / "missing.pt")], "no such file"),
                          (["--ckpt-samplers", "heun,euler"], "unknown sampler")):  # fmt: skip
        with pytest.raises(SystemExit):
            benchmark.main(["--out", str(tmp_path), *argv])
        assert message in capsys.readouterr().err


def test_nfe_speed_oracle_processes_are_the_documented_ones():
    """The module docstring's problem: σ from 0.02 to 80 (EDM's range) for blur and the Gaussian baseline alike, and
    the default level schedule σ_B = 0.36 · size · sin²(πt/2)."""
    benchmark = load_benchmark()
    assert (benchmark.SIGMA_MIN, benchmark.SIGMA_MAX, benchmark.BLUR_FRACTION) == (0.02, 80.0, 0.36)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    for operator, kind in (("dct_blur", sd.DCTBlur), ("identity", sd.Identity)):
        process = benchmark.oracle_process(operator, 32)
        assert isinstance(process.operator, kind)
        np.testing.assert_allclose(process.sigma(t).numpy(), 0.02 * 4000.0 ** t.numpy(), rtol=1e-12)
    levels = benchmark.oracle_process("dct_blur", 32).level(t).numpy()
    np.testing.assert_allclose(levels, 0.36 * 32 * np.sin(np.pi * t.numpy() / 2) ** 2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(benchmark.oracle_process("identity", 32).level(t).numpy(), 0.0)
