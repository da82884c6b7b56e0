"""Time grids of the samplers: the N + 1 times t_start = t_0 > t_1 > … > t_N = 0 of N network evaluations (the
network is called at t_0 … t_{N−1}; DESIGN §1.3). ``sd.sample(..., grid=...)`` takes one of :data:`GRIDS` or
explicit times:

- ``"uniform"`` (the default), ``"edm"``, ``"information"``: grids given by a rule (:mod:`.fixed_grids`).
- ``"optimized"``: the times that minimise the exact relative W2 of the sampler's output to the data law, for
  Gaussian data with the given per-coefficient variances λ in the operator's basis (:func:`optimized_grid`).

The optimisation. For such data every sampler's output law is known in closed form (:mod:`.closed_form`), and that
law is a smooth function of the grid, so the grid can be fitted to it, like Sabour et al.'s "Align Your Steps"
(2024) fits a grid to a bound on the KL divergence, here against the exact W2:

    minimise over t_1 > … > t_{N−1}:   log( ‖√v_out(t) − √λ‖² / ‖√λ‖² )

with t_0 = t_start and t_N = 0 fixed. The grid is monotone by construction: t_i = t_start (1 − Σ_{j<i} s_j) with
steps s = m + (1 − N m) softmax(θ) ≥ m summing to 1 (m = 10⁻⁴), and θ is found by L-BFGS (strong-Wolfe line
search) in float64, starting from the best of the uniform, EDM and information grids; a result worse than that
start is never returned. It is
deterministic (float64 on the CPU, no random start), and cached in memory by a key of all its inputs.

The level schedule is what a trained network learned, so only the times move: the process is fixed. On a
checkpoint ``sd.sample`` fits the grid to the data spectrum stored in it (``process.data_spectrum``, the variances of
the data's coefficients); without one, to the natural-image power law of :mod:`.fixed_grids`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Sequence

import torch

from .closed_form import output_variance_on
from .fixed_grids import (
    FIXED_GRIDS,
    basis_variance,
    check_explicit_grid,
    edm_grid,
    information_grid,
    uniform_grid,
)
from .fixed_grids import (
    resolve_grid as resolve_fixed_grid,
)
from .operators import require_basis
from .prior import GaussianPrior
from .sampler_kinds import SAMPLERS

GRIDS = (*FIXED_GRIDS, "optimized")
MAX_ITERATIONS = 100  # L-BFGS iterations (each one or a few closed-form evaluations and their gradients)
MIN_STEP = 1e-4  # the smallest step, as a share of t_start: the grid stays strictly decreasing
EXACT_FOR_THE_FIT = ("ancestral",)  # exact for Gaussian data at any NFE: the W2 fit has no informative optimum
CACHE_SIZE = 64
_CACHE: OrderedDict[str, torch.Tensor] = OrderedDict()

__all__ = [
    "GRIDS",
    "check_explicit_grid",
    "edm_grid",
    "information_grid",
    "optimized_grid",
    "resolve_grid",
    "uniform_grid",
]


def optimized_grid(
    process,
    variance: torch.Tensor,
    steps: int,
    *,
    sampler: str = "heun",
    t_start: float = 1.0,
    start_variance: str | torch.Tensor | None = None,
    max_iterations: int = MAX_ITERATIONS,
) -> torch.Tensor:
    """The N + 1 times that minimise the closed-form relative W2 of ``sampler`` (module docstring).

    Args:
        process: the process (its operator must have a basis); fixed, only the times are fitted.
        variance: λ, the data's variances per coefficient of the operator's basis, ``[C, H, W]``
            (``process.data_spectrum.variance`` for a checkpoint's data).
        steps: N, the number of network evaluations.
        sampler: any of :data:`softdiff.samplers.SAMPLERS` but ``"ancestral"`` (exact for the Gaussian: refused).
        t_start: the first time.
        start_variance: the law the sampler starts from, as :func:`softdiff.closed_form.output_variance`; None:
            ``"prior"`` when the process's prior is N(0, σ_1² I) and t_start = 1, else ``"exact"`` (a start drawn
            from the exact marginal: a fitted prior, or a restoration).
        max_iterations: the L-BFGS iteration budget.
    Returns:
        float64 ``[N + 1]`` from t_start down to 0, strictly decreasing (a new tensor; cached by its inputs).
    """
    require_basis(process.operator, "an optimized time grid (the closed form)")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(map(repr, SAMPLERS))}; got {sampler!r}")
    if sampler in EXACT_FOR_THE_FIT:
        raise ValueError(f"the {sampler} sampler is exact for the Gaussian an optimized grid is fitted to, so the fit "
                         "is degenerate (every step but the last at t ≈ t_start, which would fail a trained network): "
                         "use the uniform or information grid")  # fmt: skip
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1; got {steps!r}")
    if isinstance(t_start, bool) or not isinstance(t_start, (int, float)) or not 0 < t_start <= 1:
        raise ValueError(f"t_start must be a float in (0, 1]; got {t_start!r}")
    if not isinstance(max_iterations, int) or max_iterations < 0:
        raise ValueError(f"max_iterations must be an int >= 0; got {max_iterations!r}")
    t_start = float(t_start)
    if not isinstance(variance, torch.Tensor) or variance.dim() != 3:
        raise ValueError("variance must be a [C, H, W] tensor of coefficient variances in the operator's basis")
    lam = basis_variance(process, tuple(variance.shape), variance)
    start = _default_start(process, t_start) if start_variance is None else start_variance
    key = _cache_key(process, lam, steps, sampler, t_start, start, max_iterations)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key].clone()
    times = _optimize(process, lam, steps, sampler, t_start, start, max_iterations)
    _CACHE[key] = times
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return times.clone()


def resolve_grid(grid, process, image_shape: Sequence[int], steps: int, t_start: float, *,
                 sampler: str = "momentum") -> torch.Tensor:  # fmt: skip
    """The grid ``sd.sample`` runs on: a name in :data:`GRIDS` or explicit times -> float64 ``[steps + 1]``.
    ``"optimized"`` fits the times to ``sampler`` on the process's data spectrum (the power law without one)."""
    if isinstance(grid, str) and grid == "optimized":
        require_basis(process.operator, "an optimized time grid (the closed form)")
        return optimized_grid(process, sampling_variance(process, image_shape), steps, sampler=sampler,
                              t_start=t_start)  # fmt: skip
    if isinstance(grid, str) and grid not in FIXED_GRIDS:
        raise ValueError(f"grid must be one of {', '.join(map(repr, GRIDS))} or a sequence of times; got {grid!r}")
    return resolve_fixed_grid(grid, process, image_shape, steps, t_start)


def sampling_variance(process, image_shape: Sequence[int]) -> torch.Tensor:
    """λ for an optimised grid: the process's data spectrum when it has one for ``image_shape`` (C, H, W), else the
    natural-image power law seen in the operator's basis; float64 ``[C, H, W]``."""
    shape = tuple(image_shape)
    spectrum = process.data_spectrum
    if spectrum is not None and tuple(spectrum.variance.shape) == shape:
        return spectrum.variance
    return basis_variance(process, shape, None)


def _default_start(process, t_start: float) -> str:
    zero_mean = isinstance(process.prior, GaussianPrior) and process.prior.zero_mean
    return "prior" if zero_mean and t_start == 1.0 else "exact"


def _log_w2_squared(process, lam, times, sampler, start) -> torch.Tensor:
    """log(‖√v_out − √λ‖² / ‖√λ‖²), differentiable in ``times``."""
    output = output_variance_on(lam, process, times, sampler, start_variance=start)
    floor = torch.finfo(torch.float64).tiny
    root = lam.sqrt()
    distance = (output.clamp_min(floor).sqrt() - root).square().sum()
    return torch.log(distance.clamp_min(floor)) - torch.log(lam.sum())


def _times_of(logits: torch.Tensor, t_start: float) -> torch.Tensor:
    """t_i = t_start (1 − Σ_{j<i} s_j), s = m + (1 − N m) softmax(logits) ``[N]`` -> ``[N + 1]``, t_0 = t_start,
    t_N = 0 exactly; every step at least m = :data:`MIN_STEP` of t_start, so the times stay strictly decreasing."""
    steps = logits.numel()
    fractions = (MIN_STEP + (1 - steps * MIN_STEP) * torch.softmax(logits, dim=0)).cumsum(0)[:-1]
    zero = torch.zeros(1, dtype=logits.dtype)
    return torch.cat([torch.full((1,), t_start, dtype=logits.dtype), t_start * (1 - fractions).clamp_min(0.0), zero])


def _optimize(process, lam, steps, sampler, t_start, start, max_iterations) -> torch.Tensor:
    shape = tuple(lam.shape)
    candidates = [uniform_grid(steps, t_start), information_grid(process, shape, steps, t_start, variance=lam)]
    if process.noise.sigma_max > process.noise.sigma_min:
        candidates.append(edm_grid(process, steps, t_start))
    with torch.no_grad():
        scores = [float(_log_w2_squared(process, lam, times, sampler, start)) for times in candidates]
    best = candidates[min(range(len(candidates)), key=scores.__getitem__)]
    if steps == 1 or max_iterations == 0:
        return best
    shares = ((best[:-1] - best[1:]) / t_start - MIN_STEP).clamp_min(MIN_STEP) / (1 - steps * MIN_STEP)
    logits = torch.log(shares).requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [logits],
        max_iter=max_iterations,
        history_size=20,
        tolerance_grad=1e-10,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = _log_w2_squared(process, lam, _times_of(logits, t_start), sampler, start)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        times = _times_of(logits, t_start)
        found = float(_log_w2_squared(process, lam, times, sampler, start))
    strictly_decreasing = bool((times[1:] < times[:-1]).all())
    return times if strictly_decreasing and math.isfinite(found) and found < min(scores) else best


def _cache_key(process, lam, steps, sampler, t_start, start, max_iterations) -> str:
    digest = hashlib.sha256()
    description = dict(operator=process.operator.to_dict(), noise=process.noise.to_dict(),
                       levels=process.levels.to_dict(), steps=steps, sampler=sampler, t_start=t_start,
                       start=start if isinstance(start, str) else "tensor", max_iterations=max_iterations)  # fmt: skip
    digest.update(json.dumps(description, sort_keys=True, default=str).encode())
    tensors = [lam, start] if isinstance(start, torch.Tensor) else [lam]
    if sampler == "ancestral" and process.data_spectrum is not None:
        tensors.append(process.data_spectrum.variance)
    for tensor in tensors:
        digest.update(tensor.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return digest.hexdigest()
