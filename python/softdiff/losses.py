"""Soft Score Matching (DESIGN §1.2; Daras et al. 2022, eq. 3.3):

    L(θ) = E_{t, x_0, η} [ λ(t) · ‖C_t (D_θ(x_t, t) − x_0)‖² ] / (C·H·W),   x_t = C_t x_0 + σ_t η

The error is measured after corrupting the prediction: the minimiser satisfies C_t D* = C_t E[x_0 | x_t],
which is all the samplers need, and C_t is never inverted. ``loss="cold"`` is the plain ‖D − x_0‖² of Cold
Diffusion, kept as the paper's ablation. t ~ U(ε, 1), stratified across the batch.

``ahead = Δ > 0`` measures the soft error one step ahead, λ(t) ‖C_{max(t − Δ, 0)} (D − x_0)‖²: the minimiser then
satisfies C_{t−Δ} D* = C_{t−Δ} E[x_0 | x_t], which is what a sampler's step t → t − Δ applies. Where C_t is singular
(masking) the soft loss gives no gradient on a coefficient hidden at t, yet the step reveals it through
C_{t−Δ} x̂_0; with Δ = 1/N (N the sampling steps) every coefficient revealed within the step is supervised. Δ = 0 is
the soft loss; Δ ≥ 1 the cold one wherever C_0 = I.

Weightings λ: ``"edm"`` 1 / c_out(σ)² = (σ² + σ_d²) / (σ σ_d)² (unit weight on the network output),
``"sigma2"`` 1 / σ², ``"none"`` 1. With ``"sigma2"`` the soft loss is exactly the noise-prediction loss of the
corrupted domain: C_t(D − x_0) = σ_t (η − ε̂) with ε̂ = (x_t − C_t D) / σ_t, so λ ‖C_t(D − x_0)‖² = ‖ε̂ − η‖²; it is
the weighting to use with ``precond="wiener"`` (see softdiff.denoiser).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from softdiff_kernels import compute_dtype

from ._checks import ValueChecks, check_choice, trusted_values
from .denoiser import edm_scalings

WEIGHTINGS = ("edm", "sigma2", "none")
LOSSES = ("soft", "cold")
REDUCTIONS = ("mean", "none")


def stratified_times(
    batch: int,
    *,
    eps: float = 1e-3,
    power: float = 1.0,
    uniform_share: float = 0.0,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """t_b = ε + (1 − ε) g(v_b), v_b = (b + u_b) / B with u_b ~ U(0, 1): one draw in each of B equal strata, through
    g(v) = w v + (1 − w) v^p (w = ``uniform_share``).

    p = 1 (the default) is t ~ U(ε, 1) (DESIGN §1.2); p > 1 spends more of the batch at small t, density
    ∝ t^(1/p − 1) (p = 2: half the batch below t = 0.25), which short runs need to learn the last, low-noise
    steps of the sampler; w > 0 mixes the uniform map back in so that mid and large t keep a share (p = 3,
    w = 0.5: 24% of the batch below t = 0.125 and 32% above t = 0.5, against 50% and 21% with w = 0). g is
    increasing, so the strata map to disjoint intervals of t. Returns float32 ``[B]``.
    """
    if not 0 <= eps < 1:
        raise ValueError(f"eps must lie in [0, 1); got {eps}")
    if not (isinstance(power, (int, float)) and math.isfinite(power) and power > 0):
        raise ValueError(f"power must be a finite number > 0; got {power!r}")
    if not (isinstance(uniform_share, (int, float)) and 0 <= uniform_share <= 1):
        raise ValueError(f"uniform_share must lie in [0, 1]; got {uniform_share!r}")
    u = torch.rand(batch, generator=generator, dtype=torch.float64).to(device)
    strata = torch.arange(batch, dtype=torch.float64, device=device)
    fractions = (strata + u) / batch
    if power != 1:
        fractions = uniform_share * fractions + (1 - uniform_share) * fractions.pow(power)
    return (eps + (1 - eps) * fractions).clamp(max=1.0).to(torch.float32)


def loss_weight(sigma: torch.Tensor, weighting: str = "edm", sigma_data: float = 0.5) -> torch.Tensor:
    """λ(σ) for σ ``[B]`` -> ``[B]`` (see the module docstring)."""
    check_choice("weighting", weighting, WEIGHTINGS)
    if weighting == "edm":
        return edm_scalings(sigma, sigma_data)[1].square().reciprocal()
    if weighting == "sigma2":
        return sigma.square().reciprocal()
    return torch.ones_like(sigma)


def soft_score_matching_loss(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    process,
    *,
    weighting: str = "edm",
    loss: str = "soft",
    ahead: float = 0.0,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    seeds: torch.Tensor | None = None,
    eps: float = 1e-3,
    sigma_data: float = 0.5,
    reduction: str = "mean",
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft Score Matching loss of ``denoiser`` on clean images ``x0`` ``[B, C, H, W]`` in [-1, 1] (values beyond
    ±8, e.g. pixels in [0, 255], raise ValueError).

    Args:
        denoiser: D(x_t ``[B, C, H, W]``, t ``[B]``[, labels ``[B]``]) -> x̂_0 ``[B, C, H, W]``.
        process: the :class:`~softdiff.process.SoftDiffusionProcess`.
        weighting: ``"edm"`` (default), ``"sigma2"`` or ``"none"``.
        loss: ``"soft"`` (default, ‖C_t(D − x_0)‖²) or ``"cold"`` (‖D − x_0‖², the ablation).
        ahead: Δ ≥ 0, the soft loss's operator taken at max(t − Δ, 0) (module docstring); soft loss only.
        t: times ``[B]``; stratified U(eps, 1) when omitted.
        noise: explicit η ``[B, C, H, W]``; or
        seeds: one seed per sample (int64 ``[B]``) for the counter-based noise (a sample's noise then does not
            depend on the batch or rank it is in); with neither, torch's global generator.
        sigma_data: σ_d of the ``"edm"`` weighting.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (per-sample ``[B]``).
        labels: class labels int64 ``[B]`` of a class-conditional denoiser (−1: ∅), passed as its third argument.
    Returns:
        a scalar (or ``[B]``), float64 for float64 inputs and float32 otherwise.
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("loss", loss, LOSSES)
    check_choice("reduction", reduction, REDUCTIONS)
    if not (isinstance(ahead, (int, float)) and math.isfinite(ahead) and ahead >= 0):
        raise ValueError(f"ahead must be a finite number ≥ 0; got {ahead!r}")
    if ahead and loss != "soft":
        raise ValueError(f"ahead applies to the soft loss only; got loss={loss!r} with ahead={ahead}")
    # The values of x0, t, noise and of the denoiser's output are checked on the device and read back once, after
    # the forward pass (one host sync; none inside trusted_values, as in the training loop, whose NaN guard on the
    # loss covers them); shapes, dtypes and devices are checked up front.
    checks = ValueChecks()
    checks.images("x0", x0)
    checks.model_range("x0", x0)
    batch = x0.shape[0]
    if t is None:
        t = stratified_times(batch, eps=eps, device=x0.device)
    else:
        t = checks.as_times("t", t, batch, device=x0.device, images_dtype=x0.dtype)
    if noise is not None:
        checks.images("noise", noise, like=x0, like_name="x0")
    if seeds is not None:
        seeds = checks.as_seeds("seeds", seeds, batch, device=x0.device)
    with trusted_values():
        x_t = process.corrupt(x0, t, noise=noise, seed=seeds)
        x0_hat = denoiser(x_t, t) if labels is None else denoiser(x_t, t, labels)
        checks.images("denoiser output", x0_hat, like=x0, like_name="x0")
        if loss == "soft":
            level = process.level((t - ahead).clamp(min=0) if ahead else t)
            residual = process.operator.combine(x0_hat, [level], [torch.ones_like(level)], a2=x0)  # C_{t−Δ} (D − x_0)
        else:
            residual = x0_hat - x0
        reduce_dtype = compute_dtype(residual.dtype)
        per_sample = residual.to(reduce_dtype).square().mean(dim=(1, 2, 3))
        weight = loss_weight(process.sigma(t.to(torch.float64)), weighting, sigma_data).to(reduce_dtype)
        weighted = weight * per_sample
    checks.verify()
    return weighted.mean() if reduction == "mean" else weighted
