"""Blind restoration: estimate how corrupted an input is, then hand the sampler a start that is exactly the process's
state at some t (DESIGN §1.3, "restore").

Estimate. In the basis B of :func:`~softdiff.spectra.gaussian_basis` (the operator's, with the DCT where the operator
leaves the spatial basis free) the data's coefficients have means m_k and variances v_k (the checkpoint's
:class:`~softdiff.spectra.DataSpectrum`). An input y = C(ℓ) x_0 + σ η has, per coefficient (taken independent),
z_k = B y_k ~ N(d_k(ℓ) m_k, d_k(ℓ)² v_k + σ²), so the maximum-likelihood (ℓ̂, σ̂) maximises

    log L(ℓ, σ) = −½ Σ_k [ log(d_k² v_k + σ²) + (z_k − d_k m_k)² / (d_k² v_k + σ²) ]

over a grid: the levels the schedule passes through (``LEVEL_CANDIDATES`` times t, uniform) times noise levels
spaced geometrically (``NOISE_CANDIDATES``, from σ_min/4 to σ_max).

Start. The sampler needs x_T = C_T x_0 + σ_T η at a time T of the process. T is the first time at which the process is
at least as corrupted and as noisy as the estimate: level(T) ≥ ℓ̂ and σ_T ≥ σ̂ (both increase with t). The input is
brought there per coefficient: z ← e z + √(σ_T² − e² σ̂²) ξ with e = d(ℓ_T)/d(ℓ̂) (≤ 1 for the built-in operators,
whose spectra decrease with the level; 0 where d(ℓ̂) = 0), which has exactly the law of the process at T if the
estimate is right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._checks import check_images
from .operators import require_basis
from .spectra import gaussian_basis

LEVEL_CANDIDATES = 256
NOISE_CANDIDATES = 96
FINE_TIMES = 4096


@dataclass(frozen=True)
class CorruptionEstimate:
    """The maximum-likelihood corruption of an input and the time T the sampler starts from."""

    level: float  # ℓ̂, in the operator's unit
    sigma: float  # σ̂, data in [-1, 1] units
    t_start: float  # T
    level_start: float  # level(T) ≥ ℓ̂
    sigma_start: float  # σ_T ≥ σ̂

    def describe(self, unit: str) -> str:
        return (f"level {self.level:.3g} ({unit}), noise σ {self.sigma:.3g} (maximum likelihood under the data "
                f"spectrum); restoring from t = {self.t_start:.3f} (level {self.level_start:.3g}, "
                f"σ {self.sigma_start:.3g})")  # fmt: skip


def log_likelihoods(process, z: torch.Tensor, levels: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """log L(ℓ, σ) (module docstring, without its constant) of basis coefficients ``z`` ``[C, H, W]`` for every
    level ``[L]`` and noise ``[S]`` -> float64 ``[L, S]``."""
    spectrum = process.data_spectrum
    height, width = z.shape[-2:]
    d = process.operator.spectrum(levels, height, width).expand(-1, *z.shape)  # [L, C, H, W]
    mean = d * spectrum.mean
    signal = d.square() * spectrum.variance.clamp_min(1e-8 * float(spectrum.variance.mean()))
    residual = (z - mean).square()
    out = torch.empty(levels.shape[0], sigmas.shape[0], dtype=torch.float64)
    for j, sigma in enumerate(sigmas.tolist()):
        total = signal + sigma**2
        out[:, j] = -0.5 * (total.log() + residual / total).sum(dim=(1, 2, 3))
    return out


def estimate_corruption(process, image: torch.Tensor) -> CorruptionEstimate:
    """(ℓ̂, σ̂) of ``image`` ``[1, C, H, W]`` in [-1, 1] units, and the start time T (module docstring). Needs a
    process with a basis and a data spectrum (every checkpoint trained by this version has one)."""
    require_basis(process.operator, "estimating a corruption level")
    if process.data_spectrum is None:
        raise ValueError("this process has no data spectrum (checkpoints trained before it was stored): give the "
                         "input's t explicitly")  # fmt: skip
    check_images("image", image)
    if image.shape[0] != 1 or tuple(image.shape[1:]) != tuple(process.data_spectrum.mean.shape):
        raise ValueError(f"image must have shape [1, {', '.join(map(str, process.data_spectrum.mean.shape))}] (the "
                         f"model's); got {tuple(image.shape)}")  # fmt: skip
    z = gaussian_basis(process.operator).forward(image[0].detach().to("cpu", torch.float64))
    times = torch.linspace(0.0, 1.0, LEVEL_CANDIDATES, dtype=torch.float64)
    levels = process.level(times)
    noise = process.noise
    sigmas = torch.logspace(math.log10(noise.sigma_min / 4), math.log10(noise.sigma_max), NOISE_CANDIDATES,
                            dtype=torch.float64)  # fmt: skip
    scores = log_likelihoods(process, z, levels, sigmas)
    best = int(scores.argmax())
    level, sigma = float(levels[best // NOISE_CANDIDATES]), float(sigmas[best % NOISE_CANDIDATES])
    fine = torch.linspace(0.0, 1.0, FINE_TIMES + 1, dtype=torch.float64)[1:]
    enough = (process.level(fine) >= level - 1e-12) & (process.sigma(fine) >= sigma)
    start = float(fine[int(enough.to(torch.int64).argmax())]) if bool(enough.any()) else 1.0
    start_tensor = torch.tensor([start], dtype=torch.float64)
    return CorruptionEstimate(level=level, sigma=sigma, t_start=start, level_start=float(process.level(start_tensor)),
                              sigma_start=float(process.sigma(start_tensor)))  # fmt: skip


def start_at_estimate(process, image: torch.Tensor, estimate: CorruptionEstimate, noise: torch.Tensor) -> torch.Tensor:
    """x_T for the sampler from ``image`` ``[1, C, H, W]``: z ← e z + √(σ_T² − e² σ̂²) ξ per coefficient, with ξ the
    basis coefficients of ``noise`` ``[B, C, H, W]`` (standard normal, one draw per sample) -> ``[B, C, H, W]``."""
    height, width = image.shape[-2:]
    operator = process.operator
    at = lambda level: operator.spectrum(torch.tensor([level], dtype=torch.float64), height, width)  # noqa: E731
    d_estimate, d_start = at(estimate.level), at(estimate.level_start)
    ratio = torch.where(d_estimate > 0, d_start / d_estimate.clamp_min(1e-300), torch.zeros_like(d_start)).clamp(0, 1)
    top_up = (estimate.sigma_start**2 - ratio.square() * estimate.sigma**2).clamp_min(0).sqrt()
    z = operator.to_basis(image.detach().to("cpu", torch.float64))
    xi = operator.to_basis(noise.detach().to("cpu", torch.float64))
    return operator.from_basis(ratio * z + top_up * xi).to(device=image.device, dtype=image.dtype)
