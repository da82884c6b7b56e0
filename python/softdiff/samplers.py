"""Samplers (DESIGN §1.3). With x̂_0 = D(x_t, t), C = C_t, C' = C_{t'}, σ = σ_t, σ' = σ_{t'}, t' < t:

    naive         x_{t'} = C' x̂_0 + σ' η                                            (paper, Algorithm 1)
    momentum      x_{t'} = C' x̂_0 + (σ'²/σ²)(x_t − C x̂_0) + √(σ² − σ'²) η          (Algorithm 2, closed form)
    momentum_ode  x_{t'} = C' x̂_0 + (σ'/σ)(x_t − C x̂_0)                            (probability flow)

Limits: with C ≡ I momentum is the variance-exploding reverse-diffusion step of Song et al. and momentum_ode
is DDIM (Euler for VE); with σ' = σ momentum is Cold Diffusion's improved step x_t + (C' − C) x̂_0.

Every step is one fused op: Σ_j w_j C(level_j) x̂_0 + α x_t + β η with (w, α, β) from the table above.

Ancestral (beyond the paper). Couple the noises of t' < t as x_t = C x_0 + σ' ε + √(σ² − σ'²) ε₂,
x_{t'} = C' x_0 + σ' ε. Then given x_0, x_{t'} | x_t ~ N(C' x_0 + r² (x_t − C x_0), σ'² (1 − r²) I), r = σ'/σ,
and averaging x_0 over its posterior (mean x̂_0, covariance Σ) gives the exact reverse transition's mean and covariance:
    mean C' x̂_0 + r² (x_t − C x̂_0),   covariance σ'² (1 − r²) I + (C' − r² C) Σ (C' − r² C)ᵀ.
Momentum takes that mean with a noise of √(σ² − σ'²) and no posterior term. ``ancestral`` takes both, with Σ the
posterior covariance of Gaussian data whose variances per coefficient of the operator's basis are the process's
data spectrum v (``process.data_spectrum``): diagonal, P = v σ² / (d² v + σ²), so
    ancestral     x_{t'} = C' x̂_0 + r² (x_t − C x̂_0) + σ' √(1 − r²) η + Bᵀ[(d' − r² d) √P ⊙ ξ].
It is exact at any NFE for such Gaussian data (with the exact x̂_0). The posterior term matters where C' − r² C stays
large however small the step: a coefficient revealed within the step (d: 0 → 1, as masked pixels) has no
information in x_t, and the mean x̂_0 alone would reveal it without its spread (the variance analogue of Bao et al.'s
Analytic-DPM, 2022, per coefficient of C's basis). Two ops: the momentum-like fused op, and the posterior term.

Second order (beyond the paper). The probability-flow ODE of x_t = C_t x_0 + σ_t η is the mean of the
conditional velocity Ċ_t x_0 + σ̇_t η given x_t:
    dx/dt = Ċ_t x̂_0 + (σ̇_t/σ_t)(x − C_t x̂_0),   so   d(x/σ_t)/dt = (d/dt)(C_t/σ_t) x̂_0.
Per coefficient k of the operator's basis (eigenvalue d_k of C_t), with the log signal-to-noise ratio
ρ_k = log(d_k/σ_t):  x_{t'}/σ' = x_t/σ + ∫_ρ^ρ' e^ρ x̂_0(ρ) dρ  exactly. Frozen x̂_0 gives momentum_ode.
Taking x̂_0 linear in ρ through two network calls (x̂_0 at t, x̂_0° at t°) gives (:func:`second_order_step`)
    x_{t'} = C' x̂_0 + (σ'/σ)(x_t − C x̂_0) + d' ψ(h)/(ρ° − ρ) ⊙ (x̂_0° − x̂_0),   h = ρ' − ρ,  ψ(h) = h − 1 + e^{−h}
(an exponential integrator; for C ≡ I it is DPM-Solver++'s data-prediction form):
    multistep     t° = the previous grid time (Adams–Bashforth 2; the first step is momentum_ode).
    heun          the multistep step predicts x̃_{i+1}; the network is called there, and the step i → i+1 is
                  redone with the trapezoid (Heun) rule, t° = t_{i+1}; the call at x̃_{i+1} is reused for the
                  next step, as in UniPC (Zhao et al. 2023), so Heun costs one call per step, not two.
Third order (:func:`third_order_step`): x̂_0 quadratic in ρ through three calls, the weights of
:mod:`.exponential_integrator`:
    multistep3    the two previous grid times (Adams–Bashforth 3; the first two steps are of order 1 and 2).
    heun3         the multistep3 prediction, then the redo of the step i → i+1 through the calls at t_i, t_{i+1}
                  and t_{i−1}; one call per step.
All four are deterministic and call the network N times for N steps, at the grid times. A multistep step is one
fused op for the momentum_ode step, then one per-coefficient table filter per earlier call (of the difference of
consecutive calls).

All samplers share the time grid (default t_i = t_start (1 − i/N), i = 0..N; see :mod:`.time_grids`;
NFE = N): the network is called at t_0 … t_{N−1} and the last call's x̂_0 is returned. Each sample's noise
comes from its own seed (step i uses stream i + 1; the prior stream 0), so a sample does not depend on the
batch it was drawn in.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable, Sequence

import torch

from softdiff_kernels import compute_dtype, seeded_normal

from ._checks import ValueChecks, as_times, check_choice, check_images, check_values_enabled, trusted_values
from .conditioning import check_labels, guided_denoiser
from .exponential_integrator import correction_weights, log_snr
from .operators import require_basis
from .sampler_kinds import CORRECTED, MULTISTEP_ORDER, NEEDS_DATA_SPECTRUM, SAMPLERS
from .spectra import gaussian_basis
from .time_grids import resolve_grid, uniform_grid

__all__ = ["SAMPLERS", "ancestral_step", "momentum_ode_step", "momentum_step", "naive_step", "sample",
           "second_order_step", "third_order_step", "time_grid"]  # fmt: skip
POSTERIOR_STREAM_OFFSET = 2**31  # ancestral's ξ at step i: stream i + 1 + 2^31 (η: i + 1; the prior: 0)


def _step_inputs(process, x_t, x0_hat, t, t_next, noise, seeds, *, stochastic: bool):
    """Validate a step's arguments; return (t, t_next, σ, σ', level, level') as float64 ``[B]``."""
    check_images("x_t", x_t)
    check_images("x0_hat", x0_hat, like=x_t, like_name="x_t")
    batch = x_t.shape[0]
    t = as_times("t", t, batch, device=x_t.device, images_dtype=x_t.dtype).to(torch.float64)
    t_next = as_times("t_next", t_next, batch, device=x_t.device, images_dtype=x_t.dtype).to(torch.float64)
    if check_values_enabled() and bool((t_next > t).any()):
        raise ValueError("t_next must be <= t (samplers run from t = 1 towards t = 0)")
    if stochastic:
        if (noise is None) == (seeds is None):
            raise ValueError("a stochastic step needs exactly one of noise (a tensor like x_t) and seeds")
        if noise is not None:
            check_images("noise", noise, like=x_t, like_name="x_t")
    sigma, sigma_next = process.sigma(t), process.sigma(t_next)
    return sigma, sigma_next, process.level(t), process.level(t_next)


def naive_step(process, x_t, x0_hat, t, t_next, noise=None, *, seeds=None, stream=1):
    """x_{t'} = C' x̂_0 + σ' η (Algorithm 1). ``noise`` ``[B, C, H, W]``, or ``seeds`` int64 ``[B]`` and
    ``stream``. Shapes: x_t, x0_hat ``[B, C, H, W]``; t, t_next ``[B]`` or floats. Returns ``[B, C, H, W]``."""
    _, sigma_next, level, level_next = _step_inputs(process, x_t, x0_hat, t, t_next, noise, seeds, stochastic=True)
    return process.operator.combine(
        x0_hat, [level_next], [torch.ones_like(level)], beta=sigma_next, noise=noise, seeds=seeds, stream=stream
    )


def momentum_step(process, x_t, x0_hat, t, t_next, noise=None, *, seeds=None, stream=1):
    """x_{t'} = C' x̂_0 + (σ'²/σ²)(x_t − C x̂_0) + √(σ² − σ'²) η (Algorithm 2). Arguments as
    :func:`naive_step`."""
    sigma, sigma_next, level, level_next = _step_inputs(process, x_t, x0_hat, t, t_next, noise, seeds, stochastic=True)
    ratio = (sigma_next / sigma).square()
    beta = (sigma.square() - sigma_next.square()).clamp_min(0).sqrt()
    return process.operator.combine(
        x0_hat,
        [level_next, level],
        [torch.ones_like(ratio), -ratio],
        alpha=ratio,
        c=x_t,
        beta=beta,
        noise=noise,
        seeds=seeds,
        stream=stream,
    )


def ancestral_step(process, x_t, x0_hat, t, t_next, noise=None, *, seeds=None, stream=1):
    """x_{t'} = C' x̂_0 + r² (x_t − C x̂_0) + σ' √(1 − r²) η + Bᵀ[(d' − r² d) √P ⊙ ξ], r = σ'/σ (module docstring):
    the exact transition for Gaussian data whose coefficient variances are the process's data spectrum.

    ``noise``: a pair (η, ξ) of ``[B, C, H, W]`` tensors (ξ: coefficients in the basis B), or ``seeds`` int64 ``[B]``
    and ``stream`` (η from ``stream``, ξ from ``stream`` + :data:`POSTERIOR_STREAM_OFFSET`). Shapes as
    :func:`naive_step`.
    """
    eta, xi = (None, None) if noise is None else _noise_pair(noise)
    sigma, sigma_next, level, level_next = _step_inputs(process, x_t, x0_hat, t, t_next, eta, seeds, stochastic=True)
    if xi is not None:
        check_images("noise[1]", xi, like=x_t, like_name="x_t")
    basis, variance = _posterior_setup(process, x_t)
    ratio = (sigma_next / sigma).square()
    first = process.operator.combine(x0_hat, [level_next, level], [torch.ones_like(ratio), -ratio], alpha=ratio,
                                     c=x_t, beta=sigma_next * (1 - ratio).clamp_min(0).sqrt(), noise=eta, seeds=seeds,
                                     stream=stream)  # fmt: skip
    height, width = x_t.shape[-2:]
    d = process.operator.spectrum(level, height, width)
    d_next = process.operator.spectrum(level_next, height, width)
    sigma_sq = sigma.square().view(-1, 1, 1, 1)
    posterior = variance * sigma_sq / (d.square() * variance + sigma_sq)  # Var[z_0 | z_t], Gaussian with spectrum v
    weight = (d_next - ratio.view(-1, 1, 1, 1) * d) * posterior.sqrt()  # [B, C, H, W]
    if xi is None:
        xi = seeded_normal(seeds, tuple(x_t.shape[1:]), stream + POSTERIOR_STREAM_OFFSET)
    dtype = compute_dtype(x_t.dtype)
    extra = basis.inverse(weight.to(dtype) * xi.to(dtype))
    return (first.to(dtype) + extra).to(x_t.dtype)


def momentum_ode_step(process, x_t, x0_hat, t, t_next, noise=None, *, seeds=None, stream=1):
    """x_{t'} = C' x̂_0 + (σ'/σ)(x_t − C x̂_0), deterministic (``noise``, ``seeds``, ``stream`` are ignored;
    they are accepted so that every step has the same signature)."""
    sigma, sigma_next, level, level_next = _step_inputs(process, x_t, x0_hat, t, t_next, None, None, stochastic=False)
    ratio = sigma_next / sigma
    return process.operator.combine(x0_hat, [level_next, level], [torch.ones_like(ratio), -ratio], alpha=ratio, c=x_t)


def second_order_step(process, x_t, x0_hat, t, t_next, x0_hat_other, t_other):
    """x_{t'} = C' x̂_0 + (σ'/σ)(x_t − C x̂_0) + d' ψ₁(h)/(ρ° − ρ) ⊙ (x̂_0° − x̂_0) (module docstring): the exact
    integral of the probability-flow ODE from t to t' = ``t_next`` with x̂_0 linear in each coefficient's log-SNR
    ρ = log(d/σ) through x̂_0 = ``x0_hat`` at t and x̂_0° = ``x0_hat_other`` at t° = ``t_other`` (≠ t).

    Shapes: x_t, x0_hat, x0_hat_other ``[B, C, H, W]``; t, t_next, t_other ``[B]`` or floats. Coefficients
    whose log-SNR is not finite (an eigenvalue exactly 0, as masked pixels) take the first-order step.
    Returns ``[B, C, H, W]``.
    """
    return _polynomial_step(process, x_t, x0_hat, t, t_next, [("x0_hat_other", x0_hat_other, "t_other", t_other)])


def third_order_step(process, x_t, x0_hat, t, t_next, x0_hat_a, t_a, x0_hat_b, t_b):
    """The step of :func:`second_order_step` with x̂_0 quadratic in each coefficient's log-SNR through three calls:
    x̂_0 at t, x̂_a = ``x0_hat_a`` at ``t_a`` and x̂_b = ``x0_hat_b`` at ``t_b`` (three distinct times):
    x_{t'} = C' x̂_0 + (σ'/σ)(x_t − C x̂_0) + W_a ⊙ (x̂_a − x̂_0) + W_b ⊙ (x̂_b − x̂_a), the weights of
    :mod:`softdiff.exponential_integrator`. Shapes as :func:`second_order_step`; where a log-SNR is not finite
    the step is first order."""
    others = [("x0_hat_a", x0_hat_a, "t_a", t_a), ("x0_hat_b", x0_hat_b, "t_b", t_b)]
    return _polynomial_step(process, x_t, x0_hat, t, t_next, others)


def _polynomial_step(process, x_t, x0_hat, t, t_next, others):
    """momentum_ode from t to t_next, then the polynomial correction through the ``others`` (name of x̂_0, x̂_0,
    name of its time, time): one filter in the operator's basis per other call."""
    require_basis(process.operator, "a multistep step")
    for name, x0_other, _, _ in others:
        check_images(name, x0_other, like=x_t, like_name="x_t")
    x = momentum_ode_step(process, x_t, x0_hat, t, t_next)
    batch, _, height, width = x_t.shape

    def rho_at(name, value):
        time = as_times(name, value, batch, device=x_t.device, images_dtype=x_t.dtype).to(torch.float64)
        return log_snr(process, time, height, width)

    t_next = as_times("t_next", t_next, batch, device=x_t.device, images_dtype=x_t.dtype).to(torch.float64)
    d_next = process.operator.spectrum(process.level(t_next), height, width)
    weights = correction_weights(rho_at("t", t), log_snr(process, t_next, height, width), d_next,
                                 [rho_at(name, time) for _, _, name, time in others])  # fmt: skip
    chain = [x0_hat, *(x0_other for _, x0_other, _, _ in others)]  # the differences of consecutive calls
    for weight, (first, second) in zip(weights, itertools.pairwise(chain), strict=True):
        x = process.operator.filter_in_basis(second, weight, a2=first, c=x)
    return x


STEPS: dict[str, Callable] = {"momentum": momentum_step, "naive": naive_step, "momentum_ode": momentum_ode_step,
                              "ancestral": ancestral_step}  # fmt: skip


def _noise_pair(noise) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(noise, (tuple, list)) and len(noise) == 2):
        raise TypeError("the ancestral step takes noise as a pair (η, ξ) of tensors like x_t, or seeds")
    return noise[0], noise[1]


def _posterior_setup(process, x_t: torch.Tensor):
    """(the Gaussian basis, the data spectrum's variances ``[C, H, W]`` on x_t's device) for the ancestral step."""
    require_basis(process.operator, "the ancestral sampler")
    if process.data_spectrum is None:
        raise ValueError("the ancestral sampler needs the data's spectrum: process.fit_data_spectrum(images) (every "
                         "checkpoint trained by this version stores it)")  # fmt: skip
    variance = process.data_spectrum.variance
    if tuple(variance.shape) != tuple(x_t.shape[1:]):
        raise ValueError(f"the data spectrum is for images {tuple(variance.shape)}, not {tuple(x_t.shape[1:])}")
    return gaussian_basis(process.operator), variance.to(device=x_t.device)


def time_grid(steps: int, t_start: float = 1.0) -> torch.Tensor:
    """t_i = t_start (1 − i/N), i = 0..N: float64 ``[N + 1]`` from t_start down to 0 (the default grid)."""
    return uniform_grid(steps, t_start)


@torch.no_grad()
def sample(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    process,
    shape: Sequence[int],
    steps: int = 100,
    sampler: str = "momentum",
    seeds: Sequence[int] | torch.Tensor | None = None,
    x_start: torch.Tensor | None = None,
    t_start: float = 1.0,
    *,
    progress: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    grid: str | Sequence[float] | torch.Tensor = "uniform",
    labels: Sequence[int] | torch.Tensor | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Draw samples by running ``sampler`` for ``steps`` network evaluations.

    Args:
        denoiser: D(x_t ``[B, C, H, W]``, t ``[B]``[, labels ``[B]``]) -> x̂_0 (a
            :class:`~softdiff.denoiser.Denoiser`, an oracle).
        process: the :class:`~softdiff.process.SoftDiffusionProcess`.
        shape: ``(B, C, H, W)``.
        steps: N, the number of network evaluations.
        sampler: ``"momentum"`` (default), ``"naive"``, ``"momentum_ode"``, ``"ancestral"``, or the deterministic
            multistep ``"multistep"`` and ``"heun"`` (second order), ``"multistep3"`` and ``"heun3"`` (third order),
            one call per step like the others.
        seeds: one int per sample; sample b is a function of seeds[b] alone. Default: drawn from torch's
            global generator (so ``torch.manual_seed`` makes a call repeatable).
        x_start: start from these images ``[B, C, H, W]`` taken as x_{t_start} (restoration: deblur and
            denoise a real corrupted image) instead of drawing x_1 from the prior.
        t_start: the time of ``x_start`` in (0, 1]; the grid then runs from t_start to 0.
        progress: show a tqdm progress bar.
        dtype, device: of the samples (default: float32; the device of ``x_start``, else CPU).
        grid: the N + 1 times, from t_start to 0: ``"uniform"`` (default), ``"edm"``, ``"information"``,
            ``"optimized"`` (fitted to this sampler and NFE on the process's data spectrum; see
            :mod:`softdiff.time_grids`) or explicit times (a sequence or a 1-D tensor).
        labels: class labels ``[B]`` for a class-conditional denoiser (−1: unconditional), passed as its third
            argument; None: the denoiser is called with two.
        guidance: w of classifier-free guidance, x̂_0 = x̂_0(∅) + w (x̂_0(y) − x̂_0(∅)) in every sampler (1: plain
            conditional sampling; otherwise each network evaluation is one call on a doubled batch).
    Returns:
        x̂_0 of the last step, ``[B, C, H, W]``.
    """
    check_choice("sampler", sampler, SAMPLERS)
    if len(shape) != 4 or any(not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"shape must be (B, C, H, W) of positive ints; got {tuple(shape)}")
    if isinstance(t_start, torch.Tensor) and t_start.numel() == 1 and t_start.is_floating_point():
        t_start = float(t_start)  # a one-element tensor
    if isinstance(t_start, bool) or not isinstance(t_start, numbers.Real):
        raise TypeError(f"t_start must be a float in (0, 1]; got {type(t_start).__name__}")
    t_start = float(t_start)  # NumPy scalars included
    if not 0 < t_start <= 1:
        raise ValueError(f"t_start must lie in (0, 1]; got {t_start!r}")
    if x_start is None and t_start != 1:
        raise ValueError(f"t_start = {t_start} needs x_start, the corrupted images at t_start (p_1, drawn "
                         "otherwise, is the law at t = 1)")  # fmt: skip
    if sampler in MULTISTEP_ORDER:
        require_basis(process.operator, f"the {sampler} sampler")
    if sampler in NEEDS_DATA_SPECTRUM:
        _posterior_setup(process, torch.empty(1, *shape[1:]))
    process.check_image_size(shape[-2], shape[-1])
    checks = ValueChecks()  # the public inputs' values, read back together: one host sync
    if x_start is not None:
        checks.images("x_start", x_start)
        if tuple(x_start.shape) != tuple(shape):
            raise ValueError(f"x_start must have shape {tuple(shape)}; got {tuple(x_start.shape)}")
        device = x_start.device if device is None else torch.device(device)
    device = torch.device("cpu" if device is None else device)
    batch = shape[0]
    if seeds is None:
        seeds = torch.randint(0, 2**62, (batch,), dtype=torch.int64)
    seeds = checks.as_seeds("seeds", seeds, batch, device=device)
    predict = guided_denoiser(denoiser, check_labels(labels, guidance, batch, device, checks), float(guidance))
    checks.verify()
    grid_times = resolve_grid(grid, process, tuple(shape[1:]), steps, float(t_start), sampler=sampler)  # float64, host
    with trusted_values():  # every value below is an input checked above or computed from them
        return _run_sampler(predict, process, tuple(shape), steps, sampler, seeds, x_start, grid_times, dtype, device,
                            progress, check_outputs=checks.enabled)  # fmt: skip


def _run_sampler(predict, process, shape, steps, sampler, seeds, x_start, grid_times, dtype, device, progress, *,
                 check_outputs: bool):  # fmt: skip
    """The loop of :func:`sample` on checked inputs: no host synchronisation per step. With ``check_outputs`` the
    denoiser's outputs are checked for NaN/Inf on the device and read back once, at the end (naming the first bad
    step)."""
    batch = shape[0]
    times = grid_times.to(device)
    time_dtype = compute_dtype(dtype)
    first_bad_step = torch.full((), -1, dtype=torch.int64, device=device)

    if x_start is None:
        x = process.sample_prior(tuple(shape[1:]), seeds, dtype=dtype, device=device)
    else:
        x = x_start.to(device=device, dtype=dtype)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"{sampler} sampling", unit="step")  # counts network calls, the last included
    history = []  # multistep: (the state its step started from, x̂_0, t) of the last calls, newest first
    try:
        for i in range(steps):
            t = times[i].expand(batch)
            x0_hat = predict(x, t.to(time_dtype))
            _check_denoiser_shape(x0_hat, x)
            if check_outputs:  # the first step whose x̂_0 holds NaN or Inf, on the device
                bad = ~torch.isfinite(x0_hat).all() & (first_bad_step < 0)
                first_bad_step = torch.where(bad, i, first_bad_step)
            if bar is not None:
                bar.update()
            if i == steps - 1:
                if check_outputs and (bad_step := int(first_bad_step)) >= 0:  # the loop's one host sync
                    raise ValueError(f"denoiser output at step {bad_step} (t={float(grid_times[bad_step]):.4g}) "
                                     "contains NaN or Inf")  # fmt: skip
                return x0_hat.to(dtype)
            x0_hat, t_next = x0_hat.to(dtype), times[i + 1].expand(batch)
            if sampler not in MULTISTEP_ORDER:
                x = STEPS[sampler](process, x, x0_hat, t, t_next, seeds=seeds, stream=i + 1)
                continue
            order = MULTISTEP_ORDER[sampler]  # x̂_0 a polynomial through up to `order` calls (fewer at first)
            if sampler in CORRECTED and history:  # x was predicted: redo t_{i−1} → t_i through the call at t_i
                x_previous, x0_previous, t_previous = history[0]
                redo_through = [(x0_hat, t), *((x0, time) for _, x0, time in history[1 : order - 1])]
                x = _multistep_step(process, x_previous, x0_previous, t_previous, t, redo_through)
            x_before = x
            x = _multistep_step(process, x, x0_hat, t, t_next, [(x0, time) for _, x0, time in history[: order - 1]])
            history = [(x_before, x0_hat, t), *history][: order - 1]
    finally:
        if bar is not None:
            bar.close()
    raise AssertionError("unreachable")


def _multistep_step(process, x_t, x0_hat, t, t_next, others):
    """The step t -> t_next with x̂_0 a polynomial in the log-SNR through ``x0_hat`` and the ``others`` [(x̂_0,
    time), ...]: momentum_ode (none), second order (one) or third order (two)."""
    if not others:
        return momentum_ode_step(process, x_t, x0_hat, t, t_next)
    if len(others) == 1:
        return second_order_step(process, x_t, x0_hat, t, t_next, *others[0])
    return third_order_step(process, x_t, x0_hat, t, t_next, *others[0], *others[1])


def _check_denoiser_shape(x0_hat: object, x: torch.Tensor) -> None:
    if not isinstance(x0_hat, torch.Tensor) or x0_hat.shape != x.shape:
        got = tuple(x0_hat.shape) if isinstance(x0_hat, torch.Tensor) else type(x0_hat).__name__
        raise ValueError(f"the denoiser must return x0_hat of shape {tuple(x.shape)}; got {got}")
