"""Time grids given by a rule: the N + 1 times t_start = t_0 > t_1 > … > t_N = 0 of N network evaluations
(the network is called at t_0 … t_{N−1}; DESIGN §1.3). :mod:`.time_grids` adds the grid optimised against the
closed form (which builds on these) and is what ``sd.sample(..., grid=...)`` resolves; the rules are

- ``"uniform"`` (the default, DESIGN §1.3): t_i = t_start (1 − i/N).
- ``"edm"``: the ρ-spacing of Karras et al. (2022) in σ, dense at low noise,
      σ_i = (σ_s^{1/ρ} + (i/N)(σ_min^{1/ρ} − σ_s^{1/ρ}))^ρ, ρ = 7, σ_s = σ(t_start),
  mapped back to t through σ(t) = σ_min (σ_max/σ_min)^t.
- ``"information"``: equal steps in the Wasserstein-2 distance between the laws of the posterior mean
  x̂_0(t) = E[x_0 | x_t], for data x_0 ~ N(0, diag λ) in the operator's basis. Per coefficient k,
  x̂_0,k(t) ~ N(0, λ_k m_k(t)²) with m_k² = snr_k / (1 + snr_k), snr_k = λ_k d_k(t)² / σ_t², so
      W2(law x̂_0(t), law x̂_0(t'))² = Σ_k λ_k (m_k(t) − m_k(t'))².
  The arc length A(t) of that curve is blended with t, S(t) = (1 − u) A(t)/A(t_start) + u t/t_start, and the
  nodes are equally spaced in S: steps go where each frequency is being resolved (for DCT blur, a window of
  t per frequency), and the share u keeps some everywhere. λ defaults to the natural-image power law
  λ ∝ 1/(1 + k² + l²) with a mean pixel variance of 0.25, seen in the operator's basis
  (:func:`~softdiff.spectra.power_law_variance_in`); pass the data's own spectrum to :func:`information_grid` for
  a tailored grid.
- an explicit grid: a float sequence or 1-D tensor of N + 1 strictly decreasing times from t_start to 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .spectra import gaussian_basis, power_law_variance_in

FIXED_GRIDS = ("uniform", "edm", "information")
EDM_RHO = 7.0
INFORMATION_UNIFORM_SHARE = 0.5


def uniform_grid(steps: int, t_start: float = 1.0) -> torch.Tensor:
    """t_i = t_start (1 − i/N), i = 0..N: float64 ``[N + 1]`` from t_start down to 0."""
    _check_steps(steps)
    return t_start * (1.0 - torch.arange(steps + 1, dtype=torch.float64) / steps)


def edm_grid(process, steps: int, t_start: float = 1.0, *, rho: float = EDM_RHO) -> torch.Tensor:
    """Karras et al.'s σ_i = (σ_s^{1/ρ} + (i/N)(σ_min^{1/ρ} − σ_s^{1/ρ}))^ρ as times: float64 ``[N + 1]``."""
    _check_steps(steps)
    if not isinstance(rho, (int, float)) or not math.isfinite(rho) or rho <= 0:
        raise ValueError(f"rho must be a finite number > 0; got {rho!r}")
    noise = process.noise
    if noise.sigma_max == noise.sigma_min:
        raise ValueError("the 'edm' grid spaces σ; it needs a noise schedule with sigma_max > sigma_min")
    sigma_start = noise.sigma_min * (noise.sigma_max / noise.sigma_min) ** t_start
    fraction = torch.arange(steps + 1, dtype=torch.float64) / steps
    root = sigma_start ** (1 / rho) + fraction * (noise.sigma_min ** (1 / rho) - sigma_start ** (1 / rho))
    times = torch.log(root.pow(rho) / noise.sigma_min) / math.log(noise.sigma_max / noise.sigma_min)
    times[0], times[-1] = t_start, 0.0  # exact end points despite rounding
    return times.clamp(0.0, t_start)


def information_grid(
    process,
    image_shape: Sequence[int],
    steps: int,
    t_start: float = 1.0,
    *,
    variance: torch.Tensor | None = None,
    uniform_share: float = INFORMATION_UNIFORM_SHARE,
    resolution: int = 1024,
) -> torch.Tensor:
    """Equal W2 steps of the law of x̂_0(t) (see the module docstring), blended with uniform t.

    Args:
        process: the :class:`~softdiff.process.SoftDiffusionProcess`.
        image_shape: (C, H, W).
        steps: N.
        t_start: the first time.
        variance: λ, the data's variances in the operator's basis ``[C, H, W]`` (default: see the module
            docstring).
        uniform_share: u in (0, 1]: the share of the grid spaced uniformly in t.
        resolution: the number of intervals of the fine t lattice the arc length is integrated on.
    Returns:
        float64 ``[N + 1]`` from t_start down to 0, strictly decreasing.
    """
    _check_steps(steps)
    if not isinstance(uniform_share, (int, float)) or not 0 < uniform_share <= 1:
        raise ValueError(f"uniform_share must lie in (0, 1]; got {uniform_share!r}")
    if not isinstance(resolution, int) or resolution < 16:
        raise ValueError(f"resolution must be an int >= 16; got {resolution!r}")
    channels, height, width = _image_shape(image_shape)
    variance = basis_variance(process, (channels, height, width), variance)
    lattice = t_start * torch.linspace(0.0, 1.0, resolution + 1, dtype=torch.float64)  # increasing in t
    distances = []  # W2 between the laws of x̂_0 at neighbouring lattice times
    previous = None
    for chunk in lattice.split(64):
        d = process.operator.spectrum(process.level(chunk), height, width)  # [T, K, H, W]
        snr = variance * d.square() / process.sigma(chunk).square().view(-1, 1, 1, 1)
        m = torch.sqrt(snr / (1.0 + snr))  # [T, C, H, W]
        if previous is not None:
            m = torch.cat([previous, m])
        distances.append(torch.sqrt((variance * (m[1:] - m[:-1]).square()).sum(dim=(1, 2, 3))))
        previous = m[-1:]
    arc = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cat(distances).cumsum(0)])
    if float(arc[-1]) > 0:
        progress = (1 - uniform_share) * arc / arc[-1] + uniform_share * lattice / t_start
    else:  # nothing is resolved anywhere (e.g. zero variance): uniform
        progress = lattice / t_start
    targets = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    times = _interpolate(targets, progress, lattice)
    times[0], times[-1] = t_start, 0.0
    return times


def resolve_grid(grid, process, image_shape: Sequence[int], steps: int, t_start: float) -> torch.Tensor:
    """A grid given by a rule: a name in :data:`FIXED_GRIDS` or explicit times -> float64 ``[steps + 1]``."""
    _check_steps(steps)
    if isinstance(grid, str):
        if grid == "uniform":
            return uniform_grid(steps, t_start)
        if grid == "edm":
            return edm_grid(process, steps, t_start)
        if grid == "information":
            return information_grid(process, image_shape, steps, t_start)
        raise ValueError(
            f"grid must be one of {', '.join(map(repr, FIXED_GRIDS))} or a sequence of times (an "
            f"optimized grid: pass the times of softdiff.time_grids.optimized_grid); got {grid!r}"
        )
    return check_explicit_grid(grid, steps, t_start)


def check_explicit_grid(grid, steps: int, t_start: float) -> torch.Tensor:
    """An explicit grid: N + 1 finite, strictly decreasing times from t_start to 0 -> float64 ``[N + 1]``."""
    if isinstance(grid, torch.Tensor):
        times = grid.detach().to("cpu", torch.float64)
    elif isinstance(grid, Sequence) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in grid):
        times = torch.tensor([float(v) for v in grid], dtype=torch.float64)
    else:
        raise TypeError(
            f"grid must be one of {', '.join(map(repr, FIXED_GRIDS))}, a sequence of floats or a 1-D tensor; "
            f"got {type(grid).__name__}"
        )
    if times.dim() != 1 or times.numel() != steps + 1:
        raise ValueError(f"an explicit grid must hold steps + 1 = {steps + 1} times; got shape {tuple(times.shape)}")
    if not bool(torch.isfinite(times).all()):
        raise ValueError("grid contains NaN or Inf")
    if not math.isclose(float(times[0]), t_start, rel_tol=0, abs_tol=1e-12) or float(times[-1]) != 0.0:
        raise ValueError(
            f"an explicit grid must run from t_start = {t_start:g} to 0; "
            f"got {float(times[0]):g} to {float(times[-1]):g}"
        )
    if bool((times[1:] >= times[:-1]).any()):
        raise ValueError("an explicit grid must be strictly decreasing (samplers run from t_start towards 0)")
    return times


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1; got {steps!r}")


def _image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(image_shape) != 3 or any(not isinstance(n, int) or n < 1 for n in image_shape):
        raise ValueError(f"image_shape must be (C, H, W) of positive ints; got {tuple(image_shape)}")
    return tuple(image_shape)


def basis_variance(process, shape: tuple[int, int, int], variance: torch.Tensor | None) -> torch.Tensor:
    """λ in the operator's basis, float64 ``[C, H, W]``: given, or the default of the module docstring."""
    if variance is None:
        return power_law_variance_in(gaussian_basis(process.operator), shape)
    if not isinstance(variance, torch.Tensor) or tuple(variance.shape) != shape:
        got = tuple(variance.shape) if isinstance(variance, torch.Tensor) else type(variance).__name__
        raise ValueError(f"variance must be a tensor of shape {shape} (the data's variances in the basis); got {got}")
    if not bool(torch.isfinite(variance).all()) or bool((variance < 0).any()):
        raise ValueError("variance must be finite and >= 0")
    return variance.detach().to("cpu", torch.float64)


def _interpolate(targets: torch.Tensor, progress: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
    """Invert the increasing map lattice -> progress at ``targets`` by linear interpolation."""
    index = torch.searchsorted(progress, targets).clamp(1, progress.numel() - 1)
    low, high = progress[index - 1], progress[index]
    fraction = ((targets - low) / (high - low).clamp_min(torch.finfo(torch.float64).tiny)).clamp(0.0, 1.0)
    return lattice[index - 1] + fraction * (lattice[index] - lattice[index - 1])
