"""Zero-mean Gaussian laws of images with a diagonal covariance in the DCT basis (a variance λ per channel and
coefficient): the default power-law spectrum, the per-coefficient Wiener gain and the relative W2 distance between
two such laws.

A leaf module: the closed forms (:mod:`.closed_form`), the Gaussian oracle (:mod:`.oracle`) and the information
grid (:mod:`.time_grids`) all build on it.
"""

from __future__ import annotations

import torch


def power_law_variance(shape: tuple[int, int, int], *, pixel_variance: float = 0.25) -> torch.Tensor:
    """A natural-image-like spectrum λ_{c,k,l} ∝ 1 / (1 + k² + l²) over DCT indices, scaled so that the mean pixel
    variance is ``pixel_variance``: float64 ``[C, H, W]``."""
    channels, height, width = shape
    k = torch.arange(height, dtype=torch.float64)[:, None]
    l = torch.arange(width, dtype=torch.float64)[None, :]  # noqa: E741 - the paper's index name
    profile = 1.0 / (1.0 + k.square() + l.square())
    return (pixel_variance * profile / profile.mean()).expand(channels, height, width).clone()


def wiener_gain(variance, attenuation, noise_variance):
    """The per-coefficient Wiener filter (the posterior-mean gain) of z_0 ~ N(0, λ) seen as z_t = d z_0 + σ ε:
    E[z_0 | z_t] = g z_t with g = λ d / (d² λ + σ²). Tensors (or floats) broadcast against each other: λ =
    ``variance``, d = ``attenuation`` (the operator's eigenvalues), σ² = ``noise_variance``."""
    return variance * attenuation / (attenuation * attenuation * variance + noise_variance)


def relative_w2(variance: torch.Tensor, output: torch.Tensor) -> float:
    """W2 between zero-mean laws with per-coefficient variances ``output`` and λ = ``variance``, relative to the
    data law's scale: ‖√v_out − √λ‖ / ‖√λ‖."""
    root = variance.to(torch.float64).sqrt()
    return float((output.to(torch.float64).sqrt() - root).norm() / root.norm())
