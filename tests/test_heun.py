"""Multistep samplers (second order: multistep, heun; third order: multistep3, heun3) and time grids: the steps
against a quadrature of the probability-flow ODE, their order of accuracy against the exact flow of Gaussian data,
the drivers' NFE accounting, the grids."""

import itertools
import math

import numpy as np
import pytest
import scipy.fft
import torch

import softdiff as sd
from softdiff import time_grids
from softdiff.sampler_kinds import MULTISTEP_ORDER
from tests.conftest import TOLERANCE, assert_close

SHAPE = (3, 2, 7, 9)


pytestmark = pytest.mark.usefixtures("one_thread")


def blur_process(sigma_max=20.0, blur_max=3.0):
    return sd.SoftDiffusionProcess(
        sd.DCTBlur(), noise=sd.GeometricNoise(0.02, sigma_max), levels=sd.LevelSchedule.sin2(blur_max)
    )


def identity_process():
    return sd.SoftDiffusionProcess(sd.Identity(), noise=sd.GeometricNoise(0.02, 20.0), levels=sd.LevelSchedule.zero())


def quadrature_step(process, x_t, x0_hat, x0_other, t, t_next, t_other):
    """x_{t'}/σ' = x_t/σ + ∫_ρ^ρ' e^s x̂_0(s) ds per DCT coefficient (scipy DCT), x̂_0 linear in s through
    (ρ_t, x̂_0), (ρ_°, x̂_0°): :func:`polynomial_quadrature_step` with one other call."""
    return polynomial_quadrature_step(process, x_t, x0_hat, t, t_next, [(x0_other, t_other)])


def polynomial_quadrature_step(process, x_t, x0_hat, t, t_next, others):
    """x_{t'}/σ' = x_t/σ + ∫_ρ^ρ' e^s x̂_0(s) ds per DCT coefficient (scipy DCT), x̂_0 the Lagrange polynomial in s
    through (ρ_t, x̂_0) and (ρ_j, x̂_j) for (x̂_j, t_j) in ``others``, integrated with Simpson's rule on 4001 points:
    float64 numpy [B, C, H, W]."""
    height, width = x_t.shape[-2:]
    dct = lambda v: scipy.fft.dctn(v.double().numpy(), type=2, norm="ortho", axes=(-2, -1))  # noqa: E731

    def log_snr(time):  # ρ = log d − log σ, d = exp(−σ_B² (ω_k² + ω_l²)/2) for the blur, 1 for the identity
        level = process.level(time).numpy()[:, None, None, None]
        omega = (np.pi * np.arange(height) / height)[:, None] ** 2 + (np.pi * np.arange(width) / width)[None] ** 2
        log_d = -0.5 * level**2 * omega if isinstance(process.operator, sd.DCTBlur) else 0 * level
        return log_d - np.log(process.sigma(time).numpy())[:, None, None, None]

    rho, rho_next = log_snr(t), log_snr(t_next)
    nodes = [(rho, dct(x0_hat)), *((log_snr(time), dct(x0)) for x0, time in others)]
    fraction = np.linspace(0.0, 1.0, 4001)[:, None, None, None, None]
    s = rho + fraction * (rho_next - rho)  # [P, B, 1, H, W]
    polynomial = 0.0
    for j, (rho_j, z0_j) in enumerate(nodes):
        basis = 1.0
        for m, (rho_m, _) in enumerate(nodes):
            if m != j:
                basis = basis * (s - rho_m) / (rho_j - rho_m)
        polynomial = polynomial + basis * z0_j
    integrand = np.exp(s) * polynomial
    weights = np.ones(4001)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    integral = (rho_next - rho) * np.tensordot(weights, integrand, axes=1) / (3 * 4000)
    sigma, sigma_next = (process.sigma(v).numpy()[:, None, None, None] for v in (t, t_next))
    z_next = sigma_next * (dct(x_t) / sigma + integral)
    return scipy.fft.idctn(z_next, type=2, norm="ortho", axes=(-2, -1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("other", ["next", "previous"])
@pytest.mark.parametrize("make", [blur_process, identity_process])
def test_second_order_step_is_the_exact_integral_with_x0_linear_in_log_snr(make, other, dtype, generator):
    process = make()
    x_t, x0_hat, x0_other = (torch.randn(SHAPE, generator=generator, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([0.9, 0.5, 0.31], dtype=torch.float64)
    t_next = torch.tensor([0.8, 0.45, 0.2], dtype=torch.float64)
    t_other = t_next if other == "next" else torch.tensor([0.97, 0.55, 0.4], dtype=torch.float64)
    expected = quadrature_step(process, x_t, x0_hat, x0_other, t, t_next, t_other)
    out = sd.samplers.second_order_step(
        process, x_t.to(dtype), x0_hat.to(dtype), t, t_next, x0_other.to(dtype), t_other
    )
    assert out.dtype == dtype
    assert_close(out, expected, dtype, scale=1e3 if dtype == torch.float64 else 10)  # Simpson's error ~1e-8


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("others", ["previous two", "next and previous"])
@pytest.mark.parametrize("make", [blur_process, identity_process])
def test_third_order_step_is_the_exact_integral_with_x0_quadratic_in_log_snr(make, others, dtype, generator):
    """multistep3's step (the two previous calls) and heun3's redo (the call at the step's end and the previous
    one) against Simpson's rule on e^s times the quadratic through the three calls."""
    process = make()
    x_t, x0_hat, x0_a, x0_b = (torch.randn(SHAPE, generator=generator, dtype=torch.float64) for _ in range(4))
    t = torch.tensor([0.9, 0.5, 0.31], dtype=torch.float64)
    t_next = torch.tensor([0.8, 0.45, 0.2], dtype=torch.float64)
    previous = torch.tensor([0.97, 0.55, 0.4], dtype=torch.float64)
    t_a, t_b = (previous, torch.tensor([0.99, 0.6, 0.5], dtype=torch.float64)) if others == "previous two" else (
        t_next, previous)  # fmt: skip
    expected = polynomial_quadrature_step(process, x_t, x0_hat, t, t_next, [(x0_a, t_a), (x0_b, t_b)])
    cast = [v.to(dtype) for v in (x_t, x0_hat, x0_a, x0_b)]
    out = sd.samplers.third_order_step(process, cast[0], cast[1], t, t_next, cast[2], t_a, cast[3], t_b)
    assert out.dtype == dtype
    assert_close(out, expected, dtype, scale=1e3 if dtype == torch.float64 else 10)
    # x̂_b on the line through x̂_0 and x̂_a: the quadratic term vanishes and the step is the second-order one
    on_line = x0_hat + (x0_a - x0_hat) * (t_b - t).view(-1, 1, 1, 1) / (t_a - t).view(-1, 1, 1, 1)
    if make is identity_process:  # ρ is affine in t for the identity (log σ is), so the line in t is one in ρ
        linear = sd.samplers.third_order_step(process, x_t, x0_hat, t, t_next, x0_a, t_a, on_line, t_b)
        second = sd.samplers.second_order_step(process, x_t, x0_hat, t, t_next, x0_a, t_a)
        assert_close(linear, second, torch.float64, scale=100)


def test_second_order_step_with_equal_predictions_is_momentum_ode(generator):
    process = blur_process()
    x_t, x0_hat = (torch.randn(SHAPE, generator=generator, dtype=torch.float64) for _ in range(2))
    t, t_next = torch.tensor([0.9, 0.5, 0.3]), torch.tensor([0.7, 0.4, 0.0])
    out = sd.samplers.second_order_step(process, x_t, x0_hat, t, t_next, x0_hat, t_next)
    assert_close(out, sd.momentum_ode_step(process, x_t, x0_hat, t, t_next), torch.float64, scale=10)


def test_second_order_step_falls_back_to_first_order_where_the_log_snr_is_infinite(generator):
    """Masking: a pixel masked at t (d = 0, ρ = −∞) gets the momentum_ode step, the others the full one."""
    process = sd.SoftDiffusionProcess(
        sd.Masking(seed=3), noise=sd.GeometricNoise(0.05, 5.0), levels=sd.LevelSchedule.from_levels([0.0, 0.9])
    )
    x_t, x0_hat, x0_other = (torch.randn(SHAPE, generator=generator, dtype=torch.float64) for _ in range(3))
    t, t_next = torch.full((3,), 0.6, dtype=torch.float64), torch.full((3,), 0.4, dtype=torch.float64)
    out = sd.samplers.second_order_step(process, x_t, x0_hat, t, t_next, x0_other, t_next)
    first = sd.momentum_ode_step(process, x_t, x0_hat, t, t_next)
    masked_at_t = process.apply(torch.ones(3, 1, 7, 9, dtype=torch.float64), t) == 0
    kept_at_next = process.apply(torch.ones(3, 1, 7, 9, dtype=torch.float64), t_next) == 1
    assert torch.isfinite(out).all()
    assert torch.equal(out.expand_as(out)[masked_at_t.expand_as(out)], first[masked_at_t.expand_as(out)])
    both = (~masked_at_t & kept_at_next).expand_as(out)
    assert not torch.allclose(out[both], first[both])


class GaussianFlow:
    """Gaussian data, DCT-diagonal, and the exact denoiser: the probability-flow ODE maps each DCT coefficient
    z_t to z_t · s_{t'}/s_t, s_t² = d_t² λ + σ_t² (a linear flow that keeps the marginals N(0, s_t²))."""

    def __init__(self, process, shape=(2, 8, 8)):
        self.process = process
        self.oracle = sd.oracle.GaussianDenoiser.power_law(process, shape)

    def exact(self, x, t, t_next):
        def scale(time):
            d = self.process.operator.spectrum(self.process.level(time), *x.shape[-2:])
            return torch.sqrt(d.square() * self.oracle.variance + self.process.sigma(time).square().view(-1, 1, 1, 1))

        return sd.oracle.sk.idct2(sd.oracle.sk.dct2(x) * scale(t_next) / scale(t))


@pytest.mark.parametrize("make", [blur_process, identity_process])
def test_local_error_is_second_order_for_heun_and_multistep_first_for_momentum_ode(make, generator):
    """One step of size Δ from a point of the exact flow: error O(Δ²) for momentum_ode, O(Δ³) for the second-order
    steps (the multistep with its previous call at t + Δ on the exact flow, heun's corrector with the call at
    the predicted point)."""
    flow = GaussianFlow(make(sigma_max=5.0) if make is blur_process else make())
    x = torch.randn(16, 2, 8, 8, generator=generator, dtype=torch.float64)
    t0 = torch.full((16,), 0.6, dtype=torch.float64)
    errors = {"momentum_ode": [], "multistep": [], "heun": []}
    for delta in (0.04, 0.02, 0.01):
        t, t_next, t_previous = t0, t0 - delta, t0 + delta
        x_previous = flow.exact(x, t, t_previous)
        exact = flow.exact(x, t, t_next)
        x0_hat = flow.oracle(x, t)
        first = sd.momentum_ode_step(flow.process, x, x0_hat, t, t_next)
        multistep = sd.samplers.second_order_step(
            flow.process, x, x0_hat, t, t_next, flow.oracle(x_previous, t_previous), t_previous
        )
        heun = sd.samplers.second_order_step(flow.process, x, x0_hat, t, t_next, flow.oracle(first, t_next), t_next)
        for name, out in (("momentum_ode", first), ("multistep", multistep), ("heun", heun)):
            errors[name].append(float((out - exact).norm()))
    orders = {name: [math.log2(a / b) for a, b in itertools.pairwise(e)] for name, e in errors.items()}
    assert all(1.7 < p < 2.3 for p in orders["momentum_ode"]), orders
    for name in ("multistep", "heun"):
        assert all(2.6 < p < 3.4 for p in orders[name]), orders


@pytest.mark.parametrize("make", [blur_process, identity_process])
def test_local_error_is_third_order_for_the_quadratic_steps(make, generator):
    """One step of size Δ from a point of the exact flow with x̂_0 quadratic through three calls on it: error O(Δ⁴),
    for multistep3's calls (t + Δ, t + 2Δ) and heun3's redo (t − Δ, t + Δ)."""
    flow = GaussianFlow(make(sigma_max=5.0) if make is blur_process else make())
    x = torch.randn(16, 2, 8, 8, generator=generator, dtype=torch.float64)
    t0 = torch.full((16,), 0.6, dtype=torch.float64)
    errors = {"multistep3": [], "heun3": []}
    for delta in (0.04, 0.02, 0.01):
        t, t_next = t0, t0 - delta
        exact = flow.exact(x, t, t_next)
        call = {offset: flow.oracle(flow.exact(x, t, t + offset * delta), t + offset * delta) for offset in (1, 2, -1)}
        x0_hat = flow.oracle(x, t)
        multistep3 = sd.samplers.third_order_step(flow.process, x, x0_hat, t, t_next, call[1], t + delta, call[2],
                                                  t + 2 * delta)  # fmt: skip
        heun3 = sd.samplers.third_order_step(flow.process, x, x0_hat, t, t_next, call[-1], t_next, call[1], t + delta)
        for name, out in (("multistep3", multistep3), ("heun3", heun3)):
            errors[name].append(float((out - exact).norm()))
    orders = {name: [math.log2(a / b) for a, b in itertools.pairwise(e)] for name, e in errors.items()}
    for name in errors:
        assert all(3.5 < p < 4.5 for p in orders[name]), orders


class RecordingOracle:
    def __init__(self, oracle):
        self.oracle, self.times = oracle, []

    def __call__(self, x, t):
        self.times.append(float(t[0]))
        return self.oracle(x, t)


@pytest.mark.parametrize("sampler", sd.samplers.SAMPLERS)
@pytest.mark.parametrize("grid", ["edm", "information", "explicit"])
def test_sample_calls_the_network_once_per_grid_time(sampler, grid):
    process = blur_process()
    gaussian = sd.oracle.GaussianDenoiser.power_law(process, (1, 6, 6))
    process.data_spectrum = gaussian.data_spectrum()  # for the ancestral sampler
    oracle = RecordingOracle(gaussian)
    steps = 7
    times = (
        [1.0, 0.9, 0.5, 0.45, 0.3, 0.1, 0.05, 0.0]
        if grid == "explicit"
        else time_grids.resolve_grid(grid, process, (1, 6, 6), steps, 1.0).tolist()
    )
    out = sd.sample(oracle, process, (2, 1, 6, 6), steps=steps, sampler=sampler, seeds=[0, 1],
                    grid=times if grid == "explicit" else grid)  # fmt: skip
    np.testing.assert_allclose(oracle.times, times[:-1], rtol=0, atol=1e-6)
    assert out.shape == (2, 1, 6, 6) and torch.isfinite(out).all()


@pytest.mark.parametrize(("predictor", "corrected"), [("multistep", "heun"), ("multistep3", "heun3")])
def test_heun_differs_from_multistep_by_its_corrector_only(predictor, corrected):
    """Up to the second call both samplers coincide; from the third call on the corrector moves x."""
    process = blur_process()
    oracle = sd.oracle.GaussianDenoiser.power_law(process, (1, 6, 6))
    out = {
        (s, n): sd.sample(oracle, process, (3, 1, 6, 6), steps=n, sampler=s, seeds=[4, 5, 6], dtype=torch.float64)
        for s in (predictor, corrected)
        for n in (2, 3)
    }
    assert torch.equal(out[predictor, 2], out[corrected, 2])
    assert not torch.allclose(out[predictor, 3], out[corrected, 3])


def test_third_order_samplers_start_as_the_second_order_ones():
    """multistep3 takes momentum_ode, then the two-call step, then the three-call one: its first three calls are
    multistep's (two steps); heun3's redo of its second step is heun's, so they differ from the fourth call on."""
    process = blur_process()
    oracle = sd.oracle.GaussianDenoiser.power_law(process, (1, 6, 6))

    def run(sampler, steps):
        return sd.sample(oracle, process, (3, 1, 6, 6), steps=steps, sampler=sampler, seeds=[4, 5, 6],
                         dtype=torch.float64)  # fmt: skip

    for second, third in (("multistep", "multistep3"), ("heun", "heun3")):
        assert torch.equal(run(second, 3), run(third, 3))
        assert not torch.allclose(run(second, 4), run(third, 4))


def test_uniform_grid_is_the_design_grid():
    assert torch.equal(time_grids.uniform_grid(5, 0.5), sd.time_grid(5, 0.5))
    np.testing.assert_allclose(sd.time_grid(4).numpy(), [1.0, 0.75, 0.5, 0.25, 0.0])


def test_edm_grid_is_rho_spaced_in_sigma():
    process = blur_process(sigma_max=80.0)
    times = time_grids.edm_grid(process, 6, 0.9)
    sigma = process.sigma(times).numpy()
    s_start, s_min = float(process.sigma(torch.tensor([0.9], dtype=torch.float64))), 0.02
    expected = (s_start ** (1 / 7) + np.arange(7) / 6 * (s_min ** (1 / 7) - s_start ** (1 / 7))) ** 7
    np.testing.assert_allclose(sigma, expected, rtol=1e-12)
    assert float(times[0]) == 0.9 and float(times[-1]) == 0.0


def test_information_grid_spends_its_steps_where_frequencies_are_resolved():
    """Nodes are denser where the W2 between the laws of x̂_0(t) changes fastest, and a share u stays uniform."""
    process = blur_process(sigma_max=80.0, blur_max=0.36 * 16)
    times = time_grids.information_grid(process, (3, 16, 16), 40)
    assert float(times[0]) == 1.0 and float(times[-1]) == 0.0 and bool((times[1:] < times[:-1]).all())
    gaps = -(times[1:] - times[:-1])
    assert float(gaps.min()) >= 0.5 / 40 - 1e-12  # the uniform share: no gap below u/N
    ones = time_grids.information_grid(process, (3, 16, 16), 40, uniform_share=1.0)
    torch.testing.assert_close(ones, time_grids.uniform_grid(40), rtol=0, atol=1e-12)
    # With data whose variance sits in one coefficient, the nodes crowd where that coefficient's SNR crosses 1.
    variance = torch.zeros(3, 16, 16, dtype=torch.float64)
    variance[:, 0, 0] = 1.0
    crowded = time_grids.information_grid(process, (3, 16, 16), 40, variance=variance, uniform_share=0.1)
    snr = 1.0 / process.sigma(crowded).square()  # d_00 = 1
    crossing = int(torch.argmin((snr.log()).abs()))
    assert float(crowded[crossing - 1] - crowded[crossing + 1]) < 0.5 * 2 / 40


def information_nodes_reference(sigma_min, sigma_max, blur_max, variance, steps, t_start, uniform_share):
    """The information grid from its definition, in float64 numpy, sharing no code with softdiff: per DCT coefficient
    snr_k(t) = λ_k d_k(t)² / σ_t² with d_k = exp(−σ_B(t)² (ω_k² + ω_l²) / 2), σ_B(t) = blur_max sin²(πt/2),
    σ_t = σ_min (σ_max/σ_min)^t and m_k = √(snr_k / (1 + snr_k)); the arc length A(t) = ∫_0^t ‖dm/ds‖_λ ds with the
    speed from its closed form, ‖dm/dt‖_λ = √(Σ_k λ_k (dm_k/dt)²), dm_k/dt = √snr_k / (2 (1 + snr_k)^{3/2})
    · d(log snr_k)/dt, integrated by the trapezoidal rule on 2^15 intervals; then S(t) = (1 − u) A(t)/A(t_start)
    + u t/t_start inverted at S = 1 − i/N."""
    _, height, width = variance.shape
    omega2 = (np.pi * np.arange(height) / height)[:, None] ** 2 + (np.pi * np.arange(width) / width)[None, :] ** 2
    t = np.linspace(0.0, t_start, 2**15 + 1)
    log_ratio = np.log(sigma_max / sigma_min)
    speed = np.empty_like(t)
    for start in range(0, t.size, 1024):
        s = t[start : start + 1024, None, None, None]
        level = blur_max * np.sin(0.5 * np.pi * s) ** 2
        level_rate = blur_max * 0.5 * np.pi * np.sin(np.pi * s)  # d level / dt
        sigma = sigma_min * np.exp(s * log_ratio)
        snr = variance * np.exp(-(level**2) * omega2) / sigma**2
        log_snr_rate = -2 * level * level_rate * omega2 - 2 * log_ratio
        rate = np.sqrt(snr) / (2 * (1 + snr) ** 1.5) * log_snr_rate
        speed[start : start + 1024] = np.sqrt((variance * rate**2).sum(axis=(1, 2, 3)))
    arc = np.concatenate([[0.0], np.cumsum(0.5 * (speed[1:] + speed[:-1]) * np.diff(t))])
    progress = (1 - uniform_share) * arc / arc[-1] + uniform_share * t / t_start
    return np.interp(np.linspace(1.0, 0.0, steps + 1), progress, t)


@pytest.mark.parametrize(("t_start", "uniform_share", "spectrum"), [(1.0, 0.5, "power_law"), (0.8, 0.2, "random"),
                                                                    (1.0, 0.05, "random")])  # fmt: skip
def test_information_grid_nodes_are_equal_steps_of_the_w2_arc_length(t_start, uniform_share, spectrum):
    """The nodes against an independent construction of their definition (the module docstring): the W2 arc length
    of the law of x̂_0(t), integrated from its closed-form speed, blended with t and inverted. The grid's own
    lattice of 1024 intervals keeps it within 1e-5 in t; a measure without the square root in the W2 distance moves
    the nodes by several hundredths."""
    sigma_min, sigma_max, blur_max = 0.02, 80.0, 0.36 * 16
    process = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(sigma_min, sigma_max),
                                      levels=sd.LevelSchedule.sin2(blur_max))  # fmt: skip
    if spectrum == "power_law":  # the default λ: ∝ 1/(1 + k² + l²), mean pixel variance 0.25
        k, l = np.arange(16)[:, None], np.arange(16)[None, :]  # noqa: E741 - the paper's index name
        profile = 1.0 / (1.0 + k**2 + l**2)
        variance = np.broadcast_to(0.25 * profile / profile.mean(), (3, 16, 16)).copy()
        times = time_grids.information_grid(process, (3, 16, 16), 30, t_start, uniform_share=uniform_share)
    else:
        variance = np.random.default_rng(19).uniform(0.0, 2.0, (3, 16, 16)) ** 3
        times = time_grids.information_grid(process, (3, 16, 16), 30, t_start, uniform_share=uniform_share,
                                            variance=torch.from_numpy(variance))  # fmt: skip
    expected = information_nodes_reference(sigma_min, sigma_max, blur_max, variance, 30, t_start, uniform_share)
    assert times.dtype == torch.float64 and times.shape == (31,)
    np.testing.assert_allclose(times.numpy(), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ("cosine", "grid must be one of"),
        (3.0, "grid must be one of"),
        ([1.0, 0.5, 0.0], "steps \\+ 1 = 5 times"),
        ([1.0, 0.6, 0.7, 0.2, 0.0], "strictly decreasing"),
        ([1.0, 0.6, 0.4, 0.2, 0.1], "run from t_start = 1 to 0"),
        ([0.9, 0.6, 0.4, 0.2, 0.0], "run from t_start = 1 to 0"),
        ([1.0, float("nan"), 0.4, 0.2, 0.0], "NaN"),
        (torch.ones(2, 5), "steps \\+ 1 = 5 times"),
    ],
)
def test_bad_grid_gives_a_clear_error(grid, message):
    process = blur_process()
    oracle = sd.oracle.GaussianDenoiser.power_law(process, (1, 4, 4))
    with pytest.raises((ValueError, TypeError), match=message):
        sd.sample(oracle, process, (1, 1, 4, 4), steps=4, sampler="heun", seeds=[0], grid=grid)


def test_grid_helpers_validate_their_arguments():
    process = blur_process()
    constant = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.3, 0.3), levels=sd.LevelSchedule.zero())
    with pytest.raises(ValueError, match="sigma_max > sigma_min"):
        time_grids.edm_grid(constant, 4)
    with pytest.raises(ValueError, match="rho must be"):
        time_grids.edm_grid(process, 4, rho=0)
    with pytest.raises(ValueError, match="uniform_share must lie in"):
        time_grids.information_grid(process, (1, 4, 4), 4, uniform_share=0.0)
    with pytest.raises(ValueError, match="variance must be a tensor of shape"):
        time_grids.information_grid(process, (1, 4, 4), 4, variance=torch.ones(4, 4))
    with pytest.raises(ValueError, match="variance must be finite"):
        time_grids.information_grid(process, (1, 4, 4), 4, variance=-torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="image_shape must be"):
        time_grids.information_grid(process, (4, 4), 4)
    with pytest.raises(ValueError, match="steps must be an int"):
        time_grids.resolve_grid("uniform", process, (1, 4, 4), 0, 1.0)


def test_second_order_step_checks_its_inputs(generator):
    process = blur_process()
    x = torch.randn(SHAPE, generator=generator)
    with pytest.raises(ValueError, match="x0_hat_other must have the shape of x_t"):
        sd.samplers.second_order_step(process, x, x, 0.5, 0.4, x[:1], 0.4)
    with pytest.raises(ValueError, match="t_other must lie in"):
        sd.samplers.second_order_step(process, x, x, 0.5, 0.4, x, 1.5)


def test_second_order_samplers_in_half_precision_match_float32(generator):
    process = blur_process()
    oracle = sd.oracle.GaussianDenoiser.power_law(process, (1, 6, 6))
    for sampler in MULTISTEP_ORDER:
        full = sd.sample(oracle, process, (2, 1, 6, 6), steps=6, sampler=sampler, seeds=[1, 2])
        half = sd.sample(oracle, process, (2, 1, 6, 6), steps=6, sampler=sampler, seeds=[1, 2], dtype=torch.float16)
        assert half.dtype == torch.float16
        assert float((half.float() - full).abs().max()) < 50 * TOLERANCE[torch.float16] * float(full.abs().max())


def test_global_error_order_of_the_multistep_samplers_on_the_exact_flow():
    """The drivers (start-up steps, which calls each step uses, heun's redo) against the exact flow of Gaussian data:
    the closed-form gain of the state called at t = 0.3 after M uniform steps from t = 1, against z_0.3 = (s_0.3/s_1)
    z_1. Halving the step divides the error by ≈ 2^order: 4 for multistep, 8 for multistep3, 16 for heun3."""
    from softdiff import closed_form

    process = blur_process(sigma_max=80.0, blur_max=11.52 / 2)
    variance = sd.oracle.GaussianDenoiser.power_law(process, (1, 16, 16)).variance

    def law(t):
        time = torch.tensor([t], dtype=torch.float64)
        d = process.operator.spectrum(process.level(time), 16, 16)[0]
        return d, float(process.sigma(time)), (d.square() * variance + process.sigma(time).square()).sqrt()

    d, sigma, spread = law(0.3)
    exact = variance * d / (d.square() * variance + sigma**2) * spread / law(1.0)[2]  # x̂_0 = g z_0.3, z ∝ spread

    def error(sampler, steps):
        grid = torch.cat(
            [torch.linspace(1.0, 0.3, steps + 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)]
        )
        gain = closed_form.deterministic_gain(variance, process, steps + 1, sampler, grid=grid)
        return float(((gain - exact) / exact).abs().max())

    ratios = {s: error(s, 64) / error(s, 128) for s in ("multistep", "multistep3", "heun3")}
    assert 3.5 < ratios["multistep"] < 4.6 and 6.5 < ratios["multistep3"] < 9.5 and ratios["heun3"] > 11, ratios
