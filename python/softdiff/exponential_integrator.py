"""The exponential integrator of the probability-flow ODE, per coefficient of the operator's basis: the weights
that the multistep samplers (:mod:`.samplers`) and their closed forms (:mod:`.closed_form`) share.

The probability-flow ODE of x_t = C_t x_0 + σ_t η reads, per coefficient k of the operator's basis (eigenvalue d of
C_t) with the log signal-to-noise ratio ρ = log(d/σ_t),

    x_{t'}/σ' = x_t/σ + ∫_ρ^ρ' e^s x̂_0(s) ds        exactly.

Frozen x̂_0 gives the momentum_ode step x_{t'} = C' x̂_0 + (σ'/σ)(x_t − C x̂_0). Taking x̂_0 a polynomial in s
through the current call (x̂_0 at ρ) and earlier or later calls (x̂_a at ρ_a, x̂_b at ρ_b), in Newton's form
x̂_0(s) = x̂_0 + u f[0,a] + u (u − δ_a) f[0,a,b], u = s − ρ, δ_a = ρ_a − ρ, δ_b = ρ_b − ρ, with the divided
differences f[0,a] = (x̂_a − x̂_0)/δ_a and f[0,a,b] = ((x̂_b − x̂_a)/(δ_b − δ_a) − f[0,a])/δ_b, the integral adds

    d' ψ₁(h) f[0,a] + d' (ψ₂(h) − δ_a ψ₁(h)) f[0,a,b],   h = ρ' − ρ,
    ψ₁(h) = ∫_0^h e^{u−h} u du = h − 1 + e^{−h},   ψ₂(h) = ∫_0^h e^{u−h} u² du = h² − 2h + 2 − 2e^{−h}

to the momentum_ode step (σ' e^{ρ'} = d'). Written on the differences of consecutive calls, the correction is
W_a ⊙ (x̂_a − x̂_0) + W_b ⊙ (x̂_b − x̂_a) per coefficient, with

    W_a = d' [ψ₁/δ_a − (ψ₂ − δ_a ψ₁)/(δ_a δ_b)],      W_b = d' (ψ₂ − δ_a ψ₁)/((δ_b − δ_a) δ_b),

and W_a = d' ψ₁/δ_a alone for the linear (second-order) form. For C ≡ I these are DPM-Solver++'s data-prediction
multistep weights (Lu et al. 2022), in each coefficient's own log-SNR.

A coefficient where a log-SNR is not finite (an eigenvalue exactly 0: a masked pixel, or a blur factor below
float64's range) or two calls share a log-SNR takes the lower-order step there: its weights are 0. The weights are
differentiable in the times (the closed-form grid optimisation needs it): non-finite entries are replaced before
any arithmetic, so no NaN reaches a gradient.
"""

from __future__ import annotations

import math

import torch

from .operators import require_basis

SERIES_BELOW = 1e-2  # |h| under which ψ₂ is summed as a series (its closed form cancels to ~ε/h² relative)


def log_snr(process, t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """ρ = log(d/σ_t) per basis coefficient: t float64 ``[B]`` -> float64 ``[B, K, H, W]`` (−inf where d = 0; K as
    the operator's spectrum)."""
    require_basis(process.operator, "the log-SNR")
    spectrum = process.operator.spectrum(process.level(t), height, width)
    positive = spectrum > 0  # log only where d > 0, so that a gradient through the times stays finite
    log_d = torch.log(torch.where(positive, spectrum, torch.ones_like(spectrum)))
    log_d = torch.where(positive, log_d, torch.full_like(log_d, -math.inf))
    return log_d - torch.log(process.sigma(t)).view(-1, 1, 1, 1)


def psi1(h: torch.Tensor) -> torch.Tensor:
    """ψ₁(h) = h − 1 + e^{−h} (≥ 0, ≈ h²/2 for small h)."""
    return h + torch.expm1(-h)


def psi2(h: torch.Tensor) -> torch.Tensor:
    """ψ₂(h) = h² − 2h + 2 − 2e^{−h} (≈ h³/3 for small h; summed as a series where |h| < :data:`SERIES_BELOW`)."""
    small = h.abs() < SERIES_BELOW
    h_small = torch.where(small, h, torch.zeros_like(h))
    series = h_small.pow(3) / 3 - h_small.pow(4) / 12 + h_small.pow(5) / 60 - h_small.pow(6) / 360
    h_large = torch.where(small, torch.ones_like(h), h)
    closed = h_large.square() - 2 * h_large - 2 * torch.expm1(-h_large)
    return torch.where(small, series, closed)


def correction_weights(
    rho: torch.Tensor, rho_next: torch.Tensor, d_next: torch.Tensor, rho_others: list[torch.Tensor]
) -> list[torch.Tensor]:
    """The per-coefficient weights of the polynomial correction (module docstring) of the step ρ -> ρ'.

    Args:
        rho, rho_next: ρ at the current call and at the step's end; d_next: d' there (tensors that broadcast).
        rho_others: [ρ_a] (linear x̂_0: second order) or [ρ_a, ρ_b] (quadratic: third order).
    Returns:
        [W_a] or [W_a, W_b], each weighing the difference of consecutive calls (x̂_a − x̂_0, x̂_b − x̂_a); 0 where
        a log-SNR is not finite or two calls coincide.
    """
    if len(rho_others) not in (1, 2):
        raise ValueError(f"the correction takes one or two other calls; got {len(rho_others)}")
    tensors = [rho, rho_next, *rho_others]
    valid = torch.stack(torch.broadcast_tensors(*[torch.isfinite(v) for v in tensors])).all(dim=0)
    rho, rho_next, *others = (torch.where(valid, v, torch.zeros_like(v)) for v in tensors)
    h = rho_next - rho
    p1 = psi1(h)
    delta_a = others[0] - rho
    valid = valid & (delta_a != 0)
    if len(others) == 1:
        return [torch.where(valid, d_next * p1 / _safe(delta_a, valid), torch.zeros_like(p1))]
    delta_b = others[1] - rho
    valid = valid & (delta_b != 0) & (delta_b != delta_a)
    quadratic = psi2(h) - delta_a * p1
    weight_a = d_next * (p1 / _safe(delta_a, valid) - quadratic / _safe(delta_a * delta_b, valid))
    weight_b = d_next * quadratic / _safe((delta_b - delta_a) * delta_b, valid)
    zero = torch.zeros_like(weight_a)
    return [torch.where(valid, weight_a, zero), torch.where(valid, weight_b, zero)]


def _safe(denominator: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The denominator where ``valid``, 1 elsewhere (so that masked entries stay finite, their gradients too)."""
    return torch.where(valid, denominator, torch.ones_like(denominator))
