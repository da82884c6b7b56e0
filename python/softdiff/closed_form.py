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
    multistep     z' = a z + T (g° z° − g z),  T = d' ψ(h)/(ρ° − ρ), ρ = log(d/σ), h = ρ' − ρ, ψ(h) = h − 1 + e^{−h}
    heun          the multistep prediction, then the trapezoid redo of the previous step (see the samplers).

The deterministic samplers multiply the start by a per-coefficient gain (z_i = k_i z_start; the previous
calls are multiples of it too), so v_i = k_i² v_start; the stochastic ones carry v. The output is the last
call's x̂_0 = g z, of variance v_out = g² v, and

    W2(output law, data law) / ‖√λ‖ = ‖√v_out − √λ‖ / ‖√λ‖      (zero means; as GaussianDenoiser.relative_w2).

The start: the process's prior N(0, σ_1² I) (``start_variance="prior"``, what ``sd.sample`` draws), the exact
marginal d²λ + σ² at t_start (``"exact"``), or given variances. The time grid is the samplers' own
(:func:`softdiff.time_grids.resolve_grid`), so a closed-form result and a Monte Carlo run through ``sd.sample``
describe the same computation.
"""

from __future__ import annotations

import math

import torch

from .operators import require_basis
from .prior import GaussianPrior
from .samplers import SAMPLERS, log_snr
from .spectra import wiener_gain
from .time_grids import resolve_grid

STOCHASTIC = ("momentum", "naive", "ancestral")


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
        steps, sampler, grid, t_start: as for :func:`softdiff.sample`.
        start_variance: ``"prior"`` (the process's zero-mean ``GaussianPrior``: σ_1², t_start must be 1),
            ``"exact"`` (d²λ + σ² at t_start) or a tensor ``[C, H, W]``.
    Returns:
        v_out, float64 ``[C, H, W]``.
    """
    lam, times, coefficients = _setup(variance, process, steps, sampler, grid, t_start)
    start = _start_variance(start_variance, process, lam, float(times[0]), coefficients)
    if sampler in STOCHASTIC:
        return _stochastic(sampler, coefficients, times, start)
    return _deterministic(sampler, coefficients, times).square() * start


def deterministic_gain(
    variance: torch.Tensor, process, steps: int, sampler: str, *, grid="uniform", t_start: float = 1.0
) -> torch.Tensor:
    """The per-coefficient gain k of a deterministic sampler (momentum_ode, multistep, heun): the output is
    x̂_0 = Bᵀ(k ⊙ B x_start) for every start x_start (B: the operator's basis). Arguments as
    :func:`output_variance`; returns float64 ``[C, H, W]``."""
    if sampler in STOCHASTIC:
        raise ValueError(f"sampler {sampler!r} is stochastic: it has no deterministic gain (use output_variance)")
    _, times, coefficients = _setup(variance, process, steps, sampler, grid, t_start)
    return _deterministic(sampler, coefficients, times)


def _setup(variance, process, steps, sampler, grid, t_start):
    """Validate; return (λ float64 [C, H, W], the grid, the per-time coefficients)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(map(repr, SAMPLERS))}; got {sampler!r}")
    require_basis(process.operator, "the closed form")
    if not isinstance(variance, torch.Tensor) or variance.dim() != 3:
        raise ValueError("variance must be a [C, H, W] tensor of coefficient variances in the operator's basis")
    if not bool(torch.isfinite(variance).all()) or bool((variance < 0).any()):
        raise ValueError("variance must be finite and >= 0")
    lam = variance.detach().to("cpu", torch.float64)
    if sampler == "ancestral" and (process.data_spectrum is None or process.data_spectrum.variance.shape != lam.shape):
        raise ValueError("the ancestral sampler's closed form needs the process's data spectrum, of the variance's "
                         "shape (process.data_spectrum)")  # fmt: skip
    times = resolve_grid(grid, process, tuple(lam.shape), steps, float(t_start))
    return lam, times, _Coefficients(process, lam)


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


class _Coefficients:
    """Per-coefficient d_t, σ_t, the denoiser gain g_t and the log-SNR ρ_t at a time t, float64 ``[C, H, W]``."""

    def __init__(self, process, lam: torch.Tensor):
        self.process, self.lam = process, lam
        self.height, self.width = lam.shape[-2:]
        self.cache = {}

    def posterior(self, d: torch.Tensor, sigma: float) -> torch.Tensor:
        """P = v_s σ² / (d² v_s + σ²) with v_s the process's data spectrum (what the ancestral sampler adds)."""
        variance = self.process.data_spectrum.variance.to(torch.float64)
        return variance * sigma**2 / (d.square() * variance + sigma**2)

    def at(self, t: float) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
        if t not in self.cache:
            self.cache[t] = self._evaluate(t)
        return self.cache[t]

    def _evaluate(self, t: float) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
        time = torch.tensor([t], dtype=torch.float64)
        d = self.process.operator.spectrum(self.process.level(time), self.height, self.width)[0].expand_as(self.lam)
        sigma = float(self.process.sigma(time)[0])
        gain = wiener_gain(self.lam, d, sigma**2)
        rho = log_snr(self.process, time, self.height, self.width)[0].expand_as(self.lam)
        return d, sigma, gain, rho


def _start_variance(start, process, lam, t_start, coefficients) -> torch.Tensor:
    if isinstance(start, torch.Tensor):
        if start.shape != lam.shape:
            raise ValueError(f"start_variance must have shape {tuple(lam.shape)}; got {tuple(start.shape)}")
        return start.to(torch.float64)
    if start == "exact":
        d, sigma, _, _ = coefficients.at(t_start)
        return d.square() * lam + sigma**2
    if start != "prior":
        raise ValueError(f"start_variance must be 'prior', 'exact' or a tensor; got {start!r}")
    prior = process.prior
    zero_mean = isinstance(prior, GaussianPrior) and not bool(torch.as_tensor(prior.mean).any())
    if not zero_mean or t_start != 1.0:
        raise ValueError(
            "start_variance='prior' needs t_start = 1 and the zero-mean GaussianPrior; pass 'exact' or variances"
        )
    _, sigma, _, _ = coefficients.at(1.0)
    return torch.full_like(lam, sigma**2)


def _stochastic(sampler: str, coefficients: _Coefficients, times: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """momentum, naive: carry the variance v."""
    steps = times.numel() - 1
    for i in range(steps):
        d, sigma, gain, _ = coefficients.at(float(times[i]))
        if i == steps - 1:
            return gain.square() * v
        d_next, sigma_next, _, _ = coefficients.at(float(times[i + 1]))
        if sampler in ("momentum", "ancestral"):
            ratio = (sigma_next / sigma) ** 2
            v = (d_next * gain + ratio * (1 - d * gain)).square() * v
            if sampler == "momentum":
                v = v + max(sigma**2 - sigma_next**2, 0.0)
            else:
                posterior = coefficients.posterior(d, sigma)
                v = v + sigma_next**2 * max(1 - ratio, 0.0) + (d_next - ratio * d).square() * posterior
        else:
            v = (d_next * gain).square() * v + sigma_next**2
    raise AssertionError("unreachable")


def _deterministic(sampler: str, coefficients: _Coefficients, times: torch.Tensor) -> torch.Tensor:
    """momentum_ode, multistep, heun: the gain k of the output x̂_0 = k z_start (a float64 ``[C, H, W]``)."""
    steps = times.numel() - 1
    k = torch.ones_like(coefficients.lam)  # the state the network is called on, as a multiple of z_start
    previous = None  # (k of the state before its step, k of x̂_0, t) at the previous call
    for i in range(steps):
        t = float(times[i])
        _, _, gain, _ = coefficients.at(t)
        k_x0 = gain * k
        if i == steps - 1:
            return k_x0
        t_next = float(times[i + 1])
        if sampler == "momentum_ode" or previous is None:
            k_before, k = k, _ode(coefficients, k, k_x0, t, t_next)
            previous = (k_before, k_x0, t)
            continue
        k_previous, k_x0_previous, t_previous = previous
        if sampler == "heun":  # redo t_{i−1} → t_i with the trapezoid rule through both calls
            k = _ode(coefficients, k_previous, k_x0_previous, t_previous, t) + _slope(
                coefficients, t_previous, t, t, k_x0 - k_x0_previous
            )
        k_before = k
        k = _ode(coefficients, k, k_x0, t, t_next) + _slope(coefficients, t, t_next, t_previous, k_x0_previous - k_x0)
        previous = (k_before, k_x0, t)
    raise AssertionError("unreachable")


def _ode(coefficients, k, k_x0, t, t_next):
    """momentum_ode: z' = d' x̂_0 + (σ'/σ)(z − d x̂_0)."""
    d, sigma, _, _ = coefficients.at(t)
    d_next, sigma_next, _, _ = coefficients.at(t_next)
    return d_next * k_x0 + (sigma_next / sigma) * (k - d * k_x0)


def _slope(coefficients, t, t_next, t_other, difference):
    """d' ψ(h)/(ρ° − ρ) · (x̂_0° − x̂_0); 0 where that weight is not finite (as the sampler)."""
    _, _, _, rho = coefficients.at(t)
    d_next, _, _, rho_next = coefficients.at(t_next)
    _, _, _, rho_other = coefficients.at(t_other)
    h = rho_next - rho
    weight = d_next * (h - 1 + torch.exp(-h)) / (rho_other - rho)
    return torch.where(torch.isfinite(weight), weight, torch.zeros_like(weight)) * difference
