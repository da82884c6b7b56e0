"""Zero-mean Gaussian laws of images with a diagonal covariance in an orthonormal basis (a variance λ per channel
and coefficient): the basis they are taken in for an operator, the default power-law spectrum, the per-coefficient
Wiener gain and the relative W2 distance between two such laws.

For an operator diagonal in the basis B = :func:`gaussian_basis` (its own basis, with the DCT wherever the operator
leaves the spatial basis free: identity, desaturation), z = B x has independent coefficients both before and after
the corruption, which is what makes the exact oracle and the closed forms per-coefficient computations.

A leaf module: the closed forms (:mod:`.closed_form`), the Gaussian oracle (:mod:`.oracle`) and the information
grid (:mod:`.time_grids`) all build on it.
"""

from __future__ import annotations

import torch

from .bases import Basis
from .operators import model_range_float64, require_basis


def gaussian_basis(operator) -> Basis:
    """The basis in which Gaussian data laws are diagonal for ``operator``: its channel basis, and its spatial basis
    or the DCT where its spectrum is constant over the pixels."""
    require_basis(operator, "a Gaussian law diagonal with the operator")
    return Basis(operator.channel_basis, operator.spatial_basis or "dct")


def power_law_variance(shape: tuple[int, int, int], *, pixel_variance: float = 0.25) -> torch.Tensor:
    """A natural-image-like spectrum λ_{c,k,l} ∝ 1 / (1 + k² + l²) over DCT indices, scaled so that the mean pixel
    variance is ``pixel_variance``: float64 ``[C, H, W]``."""
    channels, height, width = shape
    k = torch.arange(height, dtype=torch.float64)[:, None]
    l = torch.arange(width, dtype=torch.float64)[None, :]  # noqa: E741 - the paper's index name
    profile = 1.0 / (1.0 + k.square() + l.square())
    return (pixel_variance * profile / profile.mean()).expand(channels, height, width).clone()


def power_law_variance_in(basis: Basis, shape: tuple[int, int, int], *, pixel_variance: float = 0.25) -> torch.Tensor:
    """The power law of :func:`power_law_variance` (defined over DCT indices) seen in ``basis``: the diagonal of its
    covariance there, λ_k = Σ_f λ_f (B φ_f)_k² with φ_f the DCT basis images; float64 ``[C, H, W]``. Exact for a DCT
    spatial basis; elsewhere a Gaussian diagonal in ``basis`` with the power law's per-coefficient variances (its
    off-diagonal covariances dropped). The channels are independent and alike, so the channel basis changes nothing.
    """
    channels, height, width = shape
    dct_variance = power_law_variance((1, height, width), pixel_variance=pixel_variance)[0]  # [H, W]
    if basis.spatial == "dct":
        return dct_variance.expand(channels, height, width).clone()
    impulses = torch.eye(height * width, dtype=torch.float64).view(height * width, 1, height, width)
    images = Basis("shared", "dct").inverse(impulses)  # φ_f, [H·W, 1, H, W]
    coefficients = Basis("shared", basis.spatial).forward(images)[:, 0]  # (B φ_f)_k, [H·W, H, W]
    variance = torch.einsum("f,fhw->hw", dct_variance.flatten(), coefficients.square())
    return variance.expand(channels, height, width).clone()


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


class DataSpectrum:
    """Per-coefficient mean m and variance v of the data in :func:`gaussian_basis` of an operator (its own basis, the
    DCT where it leaves the spatial basis free, which decorrelates natural images): float64 ``[C, H, W]`` each, what
    :func:`softdiff.restoration.estimate_corruption` weighs an input's coefficients against. Fitted at the start of
    training and stored with the process in every checkpoint."""

    def __init__(self, mean: torch.Tensor, variance: torch.Tensor, *, count: int):
        if mean.shape != variance.shape or mean.dim() != 3:
            raise ValueError(f"mean and variance must be [C, H, W] alike; got {tuple(mean.shape)}, "
                             f"{tuple(variance.shape)}")  # fmt: skip
        self.mean = mean.detach().to("cpu", torch.float64)
        self.variance = variance.detach().to("cpu", torch.float64)
        self.count = int(count)

    @classmethod
    def fit(cls, operator, images: torch.Tensor, *, batch_size: int = 1024) -> DataSpectrum:
        """m and v over ``images`` ``[N, C, H, W]`` (uint8, or float in [-1, 1]), in float64 (two passes)."""
        basis = gaussian_basis(operator)
        count = images.shape[0]
        total = torch.zeros(images.shape[1:], dtype=torch.float64, device=images.device)
        for part in images.split(batch_size):
            total += basis.forward(model_range_float64(part)).sum(dim=0)
        mean = total / count
        spread = torch.zeros_like(total)
        for part in images.split(batch_size):
            spread += (basis.forward(model_range_float64(part)) - mean).square().sum(dim=0)
        return cls(mean, spread / count, count=count)

    def state_dict(self) -> dict:
        return {"mean": self.mean, "variance": self.variance, "count": self.count}

    @classmethod
    def from_state_dict(cls, state: dict | None) -> DataSpectrum | None:
        return None if state is None else cls(state["mean"], state["variance"], count=state["count"])
