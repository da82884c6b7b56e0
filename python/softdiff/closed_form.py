"""The exact law of every sampler's output on Gaussian data, in float64 and without drawing a sample.

Data x_0 ~ N(0, Σ) with Σ diagonal in the operator's basis (:func:`~softdiff.spectra.gaussian_basis`: the DCT for
blur, identity and desaturation, the Haar basis for pixelation, the pixels for masking; variances λ per coefficient,
zero mean): per coefficient z_t = d_t z_0 + σ_t ξ, and the exact
denoiser (:class:`~softdiff.oracle.GaussianDenoiser`) is linear, x̂_0 = g_t z_t with g_t = λ d_t/(d_t² λ + σ_t²).
Every step of :mod:`softdiff.samplers` is then linear per coefficient, with r = σ'/σ:

    momentum      z' = a z + √(σ² − σ'²) ξ,  a = d' g + r² (1 − d g)   ⇒  v' = a² v + σ² − σ'²
    naive         z' = d' g z + σ' ξ                                   ⇒  v' = (d' g)² v + σ'²
    ancestral     z' = a z + σ' √(1 − r²) ξ + (d' − r² d) √P ξ₂,  a as momentum, P = v_s σ²/(d² v_s + σ²)
                  (v_s: the process's data spectrum)                 ⇒  v' = a² v + σ'² (1 − r²) + (d' − r² d)² P
    momentum_ode  z' = a z,                  a = d' g + r (1 − d g)
    multistep     z' = a z + W_a (g_a z_a − g z),  W_a = d' ψ₁(h)/(ρ_a − ρ), ρ = log(d/σ), h = ρ' − ρ (previous call a)
    multistep3    z' = a z + W_a (g_a z_a − g z) + W_b (g_b z_b − g_a z_a)  (the two previous calls a, b; the weights
                  of :mod:`softdiff.exponential_integrator`)
    heun, heun3   the multistep prediction, then the redo of the previous step through the call at its end.

The deterministic samplers multiply the start by a per-coefficient gain (z_i = k_i z_start; the previous
calls are multiples of it too), so v_i = k_i² v_start; the stochastic ones carry v. The output is the last
call's x̂_0 = g z, of variance v_out = g² v, and

    W2(output law, data law) / ‖√λ‖ = ‖√v_out − √λ‖ / ‖√λ‖      (zero means; as GaussianDenoiser.relative_w2).

The start: the process's prior N(0, σ_1² I) (``start_variance="prior"``, what ``sd.sample`` draws), the exact
marginal d²λ + σ² at t_start (``"exact"``), or given variances. The time grid is the samplers' own
(:func:`softdiff.fixed_grids.resolve_grid`, or explicit times), so a closed-form result and a Monte Carlo run through
``sd.sample`` describe the same computation. :func:`output_variance_on` takes the times as a tensor and is
differentiable in them: :func:`softdiff.time_grids.optimized_grid` descends its W2.
"""

from __future__ import annotations

import itertools
import math

import torch

from .exponential_integrator import correction_weights, log_snr
from .fixed_grids import resolve_grid
from .operators import require_basis
from .prior import GaussianPrior
from .sampler_kinds import CORRECTED, MULTISTEP_ORDER, SAMPLERS, STOCHASTIC
from .spectra import wiener_gain


def output_variance(
    variance: torch.Tensor,
    process,
    steps: int,
    sampler: str,
    *,
    grid="uniform",
    t_start: float = 1.0,
    start_variance: str | torch.Tensor = "prior",
) -> torch.Tensor:
    """Variances of the basis coefficients of ``sd.sample(oracle, process, ..., steps, sampler, grid=grid)``.

    Args:
        variance: λ, the data's coefficient variances ``[C, H, W]`` in the operator's basis (zero mean).
        process: a process whose operator has a basis (any BasisOperator).
        steps, sampler, t_start: as for :func:`softdiff.sample`.
        grid: ``"uniform"``, ``"edm"``, ``"information"`` or explicit times (an optimised grid: pass its times,
            :func:`softdiff.time_grids.optimized_grid`).
        start_variance: ``"prior"`` (the process's zero-mean ``GaussianPrior``: σ_1², t_start must be 1),
            ``"exact"`` (d²λ + σ² at t_start) or a tensor ``[C, H, W]``.
    Returns:
        v_out, float64 ``[C, H, W]``.
    """
    lam = _check_variance(variance, process, sampler)
    times = resolve_grid(grid, process, tuple(lam.shape), steps, float(t_start))
    return output_variance_on(lam, process, times, sampler, start_variance=start_variance)


def output_variance_on(
    variance: torch.Tensor, process, times: torch.Tensor, sampler: str, *, start_variance: str | torch.Tensor = "prior"
) -> torch.Tensor:
    """:func:`output_variance` on the grid ``times`` (float64 ``[N + 1]``, strictly decreasing to 0, unchecked),
    differentiable in them. Returns float64 ``[C, H, W]``."""
    lam = _check_variance(variance, process, sampler)
    coefficients = _GridCoefficients(process, lam, times)
    start = _start_variance(start_variance, process, lam, coefficients)
    if sampler in STOCHASTIC:
        return _stochastic(sampler, coefficients, start)
    return _deterministic(sampler, coefficients).square() * start


def deterministic_gain(
    variance: torch.Tensor, process, steps: int, sampler: str, *, grid="uniform", t_start: float = 1.0
) -> torch.Tensor:
    """The per-coefficient gain k of a deterministic sampler (momentum_ode and the multistep ones): the output is
    x̂_0 = Bᵀ(k ⊙ B x_start) for every start x_start (B: the operator's basis). Arguments as
    :func:`output_variance`; returns float64 ``[C, H, W]``."""
    if sampler in STOCHASTIC:
        raise ValueError(f"sampler {sampler!r} is stochastic: it has no deterministic gain (use output_variance)")
    lam = _check_variance(variance, process, sampler)
    times = resolve_grid(grid, process, tuple(lam.shape), steps, float(t_start))
    return _deterministic(sampler, _GridCoefficients(process, lam, times))


def _check_variance(variance, process, sampler) -> torch.Tensor:
    """Validate; return λ as float64 ``[C, H, W]`` on the CPU (gradients kept)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(map(repr, SAMPLERS))}; got {sampler!r}")
    require_basis(process.operator, "the closed form")
    if not isinstance(variance, torch.Tensor) or variance.dim() != 3:
        raise ValueError("variance must be a [C, H, W] tensor of coefficient variances in the operator's basis")
    if not bool(torch.isfinite(variance).all()) or bool((variance < 0).any()):
        raise ValueError("variance must be finite and >= 0")
    lam = variance.to("cpu", torch.float64)
    if sampler == "ancestral" and (process.data_spectrum is None or process.data_spectrum.variance.shape != lam.shape):
        raise ValueError("the ancestral sampler's closed form needs the process's data spectrum, of the variance's "
                         "shape (process.data_spectrum)")  # fmt: skip
    return lam


def monte_carlo_w2_moments(variance: torch.Tensor, output: torch.Tensor, samples: int) -> tuple[float, float]:
    """Mean and standard deviation of the squared relative W2 that ``GaussianDenoiser.relative_w2`` reports
    for ``samples`` draws of N(0, diag ``output``) (the law the closed form predicts) against λ = ``variance``.

    Each coefficient's estimate is s = √v̂ with n v̂ / v ~ χ²_n, so E[s^p] = v^{p/2} (2/n)^{p/2} Γ((n+p)/2)/Γ(n/2);
    the coefficients are independent, so the mean and variance of Σ_k (s_k − √λ_k)² add up over k.
    """
    if not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an int >= 2; got {samples!r}")
    root_v, root_lam = output.to(torch.float64).sqrt(), variance.to(torch.float64).sqrt()

    def moment(p: int) -> torch.Tensor:  # E[s^p]
        log_c = 0.5 * p * math.log(2 / samples) + math.lgamma((samples + p) / 2) - math.lgamma(samples / 2)
        return root_v.pow(p) * math.exp(log_c)

    m1, m2, m3, m4 = (moment(p) for p in (1, 2, 3, 4))
    a = root_lam
    second = m2 - 2 * a * m1 + a.square()  # E[(s − a)²]
    fourth = m4 - 4 * a * m3 + 6 * a.square() * m2 - 4 * a.pow(3) * m1 + a.pow(4)  # E[(s − a)⁴]
    norm_sq = float(root_lam.square().sum())
    mean = float(second.sum()) / norm_sq
    std = math.sqrt(float((fourth - second.square()).clamp_min(0).sum())) / norm_sq
    return mean, std


class _GridCoefficients:
    """d, σ, the denoiser gain g and the log-SNR ρ at every time of a grid ``[N + 1]``: N + 1 float64 tensors
    ``[C, H, W]`` each (σ: scalars), computed in one pass and differentiable in the times."""

    def __init__(self, process, lam: torch.Tensor, times: torch.Tensor):
        self.process, self.lam, self.times = process, lam, times
        height, width = lam.shape[-2:]
        shape = (times.numel(), *lam.shape)
        d = process.operator.spectrum(process.level(times), height, width).expand(shape)
        sigma = process.sigma(times)
        gain = wiener_gain(lam, d, sigma.square().view(-1, 1, 1, 1))
        rho = log_snr(process, times, height, width).expand(shape)
        # Per-time lists (unbind): indexing one big tensor N times would make its backward O(N²).
        self.d, self.sigma, self.gain, self.rho = d.unbind(0), sigma.unbind(0), gain.unbind(0), rho.unbind(0)

    @property
    def steps(self) -> int:
        return self.times.numel() - 1

    def posterior(self, i: int) -> torch.Tensor:
        """P = v_s σ² / (d² v_s + σ²) at time i, v_s the process's data spectrum (what the ancestral sampler adds)."""
        variance = self.process.data_spectrum.variance.to(torch.float64)
        sigma_sq = self.sigma[i].square()
        return variance * sigma_sq / (self.d[i].square() * variance + sigma_sq)


def _start_variance(start, process, lam, coefficients: _GridCoefficients) -> torch.Tensor:
    if isinstance(start, torch.Tensor):
        if start.shape != lam.shape:
            raise ValueError(f"start_variance must have shape {tuple(lam.shape)}; got {tuple(start.shape)}")
        return start.to(torch.float64)
    if start == "exact":
        return coefficients.d[0].square() * lam + coefficients.sigma[0].square()
    if start != "prior":
        raise ValueError(f"start_variance must be 'prior', 'exact' or a tensor; got {start!r}")
    zero_mean = isinstance(process.prior, GaussianPrior) and process.prior.zero_mean
    if not zero_mean or float(coefficients.times[0].detach()) != 1.0:
        raise ValueError(
            "start_variance='prior' needs t_start = 1 and the zero-mean GaussianPrior; pass 'exact' or variances"
        )
    return coefficients.sigma[0].square().expand_as(lam)


def _stochastic(sampler: str, c: _GridCoefficients, v: torch.Tensor) -> torch.Tensor:
    """momentum, naive, ancestral: carry the variance v."""
    for i in range(c.steps - 1):
        d, sigma, gain, d_next, sigma_next = c.d[i], c.sigma[i], c.gain[i], c.d[i + 1], c.sigma[i + 1]
        if sampler == "naive":
            v = (d_next * gain).square() * v + sigma_next.square()
            continue
        ratio = (sigma_next / sigma).square()
        v = (d_next * gain + ratio * (1 - d * gain)).square() * v
        if sampler == "momentum":
            v = v + (sigma.square() - sigma_next.square()).clamp_min(0.0)
        else:
            v = v + sigma_next.square() * (1 - ratio).clamp_min(0.0) + (d_next - ratio * d).square() * c.posterior(i)
    return c.gain[c.steps - 1].square() * v


def _deterministic(sampler: str, c: _GridCoefficients) -> torch.Tensor:
    """momentum_ode and the multistep samplers: the gain k of the output x̂_0 = k z_start (float64 ``[C, H, W]``).

    Mirrors :func:`softdiff.samplers._run_sampler`: ``states[j]`` is the state the step from call j starts from
    (corrected, for heun and heun3), ``calls[j]`` x̂_0 of call j; both as multiples of z_start."""
    order = MULTISTEP_ORDER.get(sampler, 1)
    k = torch.ones_like(c.lam)
    states, calls = [], []
    for i in range(c.steps):
        calls.append(c.gain[i] * k)
        if i == c.steps - 1:
            return calls[i]
        if sampler in CORRECTED and i >= 1:  # redo i − 1 → i through the call at i (and one more for heun3)
            k = _step(c, states[i - 1], calls, i - 1, i, [i, *range(i - 2, max(i - order, -1), -1)][: order - 1])
        states.append(k)
        k = _step(c, k, calls, i, i + 1, list(range(i - 1, max(i - order, -1), -1)))
    raise AssertionError("unreachable")


def _step(c: _GridCoefficients, k, calls, i: int, i_next: int, others: list[int]) -> torch.Tensor:
    """The step from grid time i to i_next of the state k with x̂_0 a polynomial in ρ through the calls i and
    ``others`` (none: momentum_ode, z' = d' x̂_0 + (σ'/σ)(z − d x̂_0))."""
    x0 = calls[i]
    k_next = c.d[i_next] * x0 + (c.sigma[i_next] / c.sigma[i]) * (k - c.d[i] * x0)
    if not others:
        return k_next
    weights = correction_weights(c.rho[i], c.rho[i_next], c.d[i_next], [c.rho[j] for j in others])
    chain = [i, *others]  # the differences of consecutive calls: x̂_a − x̂_0, x̂_b − x̂_a
    for weight, (j_from, j_to) in zip(weights, itertools.pairwise(chain), strict=True):
        k_next = k_next + weight * (calls[j_to] - calls[j_from])
    return k_next
