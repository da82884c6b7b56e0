"""The optimised time grid (softdiff.time_grids.optimized_grid): the closed form it descends is differentiable and
exact, the optimum against a brute-force search, reproducibility, the cache, monotonicity in the budget, the issue's
targets on the default process, and sd.sample(grid="optimized") on a process with a data spectrum."""

import itertools
import math

import pytest
import torch

import softdiff as sd
from softdiff import closed_form, time_grids
from softdiff.exponential_integrator import correction_weights
from softdiff.spectra import power_law_variance, relative_w2

pytestmark = pytest.mark.usefixtures("one_thread")


def blur_process(size=8, sigma_max=20.0):
    return sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.02, sigma_max),
                                   levels=sd.LevelSchedule.sin2(0.36 * size))  # fmt: skip


def w2_on(process, variance, times, sampler, start="prior"):
    return relative_w2(variance, closed_form.output_variance(variance, process, times.numel() - 1, sampler,
                                                             grid=times, t_start=float(times[0]),
                                                             start_variance=start))  # fmt: skip


@pytest.mark.parametrize("sampler", ["momentum", "heun3", "ancestral"])
def test_the_closed_form_gradient_in_the_times_matches_finite_differences(sampler):
    """What L-BFGS descends: d W2² / d t_i by autograd against central differences in float64."""
    process = blur_process()
    variance = power_law_variance((3, 8, 8))
    process.data_spectrum = sd.oracle.GaussianDenoiser.power_law(process, (3, 8, 8)).data_spectrum()
    base = torch.tensor([1.0, 0.81, 0.6, 0.43, 0.3, 0.12, 0.0], dtype=torch.float64)

    def objective(times):
        out = closed_form.output_variance_on(variance, process, times, sampler)
        return (out.sqrt() - variance.sqrt()).square().sum()

    times = base.clone().requires_grad_(True)
    objective(times).backward()
    for i in range(1, 6):
        step = torch.zeros_like(base)
        step[i] = 1e-6
        numeric = (objective(base + step) - objective(base - step)) / 2e-6
        assert float(times.grad[i]) == pytest.approx(float(numeric), rel=1e-5, abs=1e-9), i


def test_correction_weights_stay_finite_and_differentiable_where_a_log_snr_is_infinite():
    rho = torch.tensor([-math.inf, 0.3, 0.3, 0.2], dtype=torch.float64, requires_grad=True)
    rho_next = torch.tensor([0.1, 0.9, 0.9, 0.7], dtype=torch.float64, requires_grad=True)
    rho_a = torch.tensor([-0.2, -math.inf, 0.3, -0.1], dtype=torch.float64, requires_grad=True)
    rho_b = torch.tensor([-0.5, -0.4, -0.2, -0.3], dtype=torch.float64, requires_grad=True)
    weights = correction_weights(rho, rho_next, torch.ones(4, dtype=torch.float64), [rho_a, rho_b])
    assert [w[:3].tolist() for w in weights] == [[0.0, 0.0, 0.0]] * 2  # infinite ρ, infinite ρ_a, ρ_a = ρ
    assert all(float(w[3].detach()) != 0 for w in weights)
    sum(w.sum() for w in weights).backward()
    for tensor in (rho, rho_next, rho_a, rho_b):
        assert torch.isfinite(tensor.grad).all()


@pytest.mark.parametrize("sampler", ["momentum_ode", "heun", "momentum"])
def test_the_optimum_matches_a_brute_force_search(sampler):
    """N = 2 (one free time) against 999 lattice points, N = 3 (two) against a 59 × 59 lattice: the optimiser's W2 is
    no worse than the lattice's best, and its times lie within two lattice cells of the lattice's argmin."""
    process = blur_process()
    variance = power_law_variance((3, 8, 8))
    times = time_grids.optimized_grid(process, variance, 2, sampler=sampler)
    lattice = [(w2_on(process, variance, torch.tensor([1.0, t, 0.0], dtype=torch.float64), sampler), t)
               for t in (i / 1000 for i in range(1, 1000))]  # fmt: skip
    best, where = min(lattice)
    assert w2_on(process, variance, times, sampler) <= best + 1e-12
    assert abs(float(times[1]) - where) <= 2e-3
    times = time_grids.optimized_grid(process, variance, 3, sampler=sampler)
    points = [i / 60 for i in range(1, 60)]
    lattice = [(w2_on(process, variance, torch.tensor([1.0, a, b, 0.0], dtype=torch.float64), sampler), a, b)
               for a in points for b in points if b < a]  # fmt: skip
    best, a, b = min(lattice)
    assert w2_on(process, variance, times, sampler) <= best + 1e-12
    assert abs(float(times[1]) - a) <= 2 / 60 and abs(float(times[2]) - b) <= 2 / 60


def test_the_grid_is_reproducible_decreasing_and_beats_every_fixed_grid():
    process = blur_process()
    variance = power_law_variance((3, 8, 8))
    time_grids._CACHE.clear()
    first = time_grids.optimized_grid(process, variance, 7, sampler="heun")
    time_grids._CACHE.clear()
    second = time_grids.optimized_grid(process, variance, 7, sampler="heun")
    assert torch.equal(first, second) and first.dtype == torch.float64 and first.shape == (8,)
    assert float(first[0]) == 1.0 and float(first[-1]) == 0.0
    assert bool((first[1:] - first[:-1] <= -time_grids.MIN_STEP * (1 - 1e-9)).all())
    optimized = w2_on(process, variance, first, "heun")
    for grid in ("uniform", "edm", "information"):
        fixed = time_grids.resolve_grid(grid, process, (3, 8, 8), 7, 1.0)
        assert optimized < 0.5 * w2_on(process, variance, fixed, "heun"), grid


@pytest.mark.parametrize("sampler", ["momentum", "naive", "heun", "heun3"])
def test_the_optimized_w2_is_monotone_in_the_budget(sampler):
    process = blur_process()
    variance = power_law_variance((3, 8, 8))
    process.data_spectrum = sd.oracle.GaussianDenoiser.power_law(process, (3, 8, 8)).data_spectrum()
    w2 = [w2_on(process, variance, time_grids.optimized_grid(process, variance, n, sampler=sampler), sampler)
          for n in (2, 3, 4, 6, 8, 12)]  # fmt: skip
    assert all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(w2)), w2


def test_a_restoration_grid_starts_at_t_start_from_the_exact_marginal():
    process = blur_process()
    variance = power_law_variance((3, 8, 8))
    times = time_grids.optimized_grid(process, variance, 5, sampler="heun", t_start=0.6)
    assert float(times[0]) == 0.6 and float(times[-1]) == 0.0 and bool((times[1:] < times[:-1]).all())
    uniform = time_grids.uniform_grid(5, 0.6)
    assert w2_on(process, variance, times, "heun", "exact") < w2_on(process, variance, uniform, "heun", "exact")


def test_the_grid_is_cached_by_its_inputs(monkeypatch):
    process = blur_process()
    variance = power_law_variance((3, 8, 8))
    time_grids._CACHE.clear()
    calls = []
    optimize = time_grids._optimize
    monkeypatch.setattr(time_grids, "_optimize", lambda *args: calls.append(args) or optimize(*args))
    first = time_grids.optimized_grid(process, variance, 4, sampler="heun")
    first[1] = 0.5  # a returned grid is the caller's to change
    again = time_grids.optimized_grid(process, variance, 4, sampler="heun")
    assert len(calls) == 1 and float(again[1]) != 0.5
    time_grids.optimized_grid(process, variance * 2, 4, sampler="heun")
    time_grids.optimized_grid(process, variance, 4, sampler="multistep")
    time_grids.optimized_grid(process, variance, 5, sampler="heun")
    time_grids.optimized_grid(blur_process(sigma_max=30.0), variance, 4, sampler="heun")
    assert len(calls) == 5


def test_the_default_process_meets_the_few_nfe_targets():
    """Issue 25's targets, closed form on the default 3×32×32 process (σ 0.02 → 80, blur 11.52 sin²): relative
    W2 ≤ 0.02 at 20 NFE and ≤ 0.08 at 10 NFE (uniform grid: heun 0.073 and 0.290)."""
    process = blur_process(size=32, sigma_max=80.0)
    variance = power_law_variance((3, 32, 32))
    assert w2_on(process, variance, time_grids.optimized_grid(process, variance, 20, sampler="heun"), "heun") <= 0.02
    assert w2_on(process, variance, time_grids.optimized_grid(process, variance, 10, sampler="heun3"), "heun3") <= 0.08


def test_sample_on_the_optimized_grid_fits_it_to_the_data_spectrum():
    """sd.sample(grid="optimized") runs the grid fitted to the sampler, NFE and process.data_spectrum (the power law
    without one), sample for sample."""
    process = blur_process()
    oracle = sd.oracle.GaussianDenoiser.power_law(process, (1, 8, 8))
    generator = torch.Generator().manual_seed(5)
    spectrum = sd.oracle.GaussianDenoiser(torch.rand(1, 8, 8, generator=generator, dtype=torch.float64), process)
    for data_spectrum, variance in ((None, power_law_variance((1, 8, 8))), (spectrum.data_spectrum(), None)):
        process.data_spectrum = data_spectrum
        variance = process.data_spectrum.variance if variance is None else variance
        expected = time_grids.optimized_grid(process, variance, 5, sampler="heun")
        out = sd.sample(oracle, process, (2, 1, 8, 8), steps=5, sampler="heun", seeds=[1, 2], grid="optimized")
        reference = sd.sample(oracle, process, (2, 1, 8, 8), steps=5, sampler="heun", seeds=[1, 2], grid=expected)
        assert torch.equal(out, reference)
    other = time_grids.optimized_grid(process, power_law_variance((1, 8, 8)), 5, sampler="heun")
    assert not torch.allclose(expected, other)


def test_optimized_grid_names_what_is_wrong():
    process = blur_process()
    variance = power_law_variance((1, 8, 8))

    class Shift(sd.Operator):
        name = "test_shift_only"

        def apply(self, x, level):
            return x

    matrix_free = sd.SoftDiffusionProcess(Shift(), noise=sd.GeometricNoise(0.02, 5.0), levels=sd.LevelSchedule.zero())
    with pytest.raises(TypeError, match="optimized time grid"):
        time_grids.optimized_grid(matrix_free, variance, 4)
    with pytest.raises(TypeError, match="optimized time grid"):
        sd.sample(lambda x, t: x, matrix_free, (1, 1, 8, 8), steps=4, sampler="momentum", seeds=[0], grid="optimized")
    with pytest.raises(ValueError, match="sampler must be one of"):
        time_grids.optimized_grid(process, variance, 4, sampler="euler")
    with pytest.raises(ValueError, match="the ancestral sampler is exact for the Gaussian"):
        time_grids.optimized_grid(process, variance, 4, sampler="ancestral")
    with pytest.raises(ValueError, match="steps must be an int"):
        time_grids.optimized_grid(process, variance, 0)
    with pytest.raises(ValueError, match="t_start must be"):
        time_grids.optimized_grid(process, variance, 4, t_start=1.5)
    with pytest.raises(ValueError, match="variance must be"):
        time_grids.optimized_grid(process, torch.ones(8, 8), 4)
    with pytest.raises(ValueError, match="variance must be finite"):
        time_grids.optimized_grid(process, -variance, 4)
    with pytest.raises(ValueError, match="needs t_start = 1 and the zero-mean GaussianPrior"):
        time_grids.optimized_grid(process, variance, 4, t_start=0.5, start_variance="prior")
    with pytest.raises(ValueError, match="grid must be one of 'uniform', 'edm', 'information', 'optimized'"):
        sd.sample(lambda x, t: x, process, (1, 1, 8, 8), steps=4, sampler="momentum", seeds=[0], grid="optimised")
