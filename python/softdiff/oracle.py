"""Exact denoisers: posterior means E[x_0 | x_t] computed in closed form, so samplers can be judged with no
training at all. Both fit the ``denoiser(x_t, t) -> x̂_0`` interface.

- :class:`EmpiricalDenoiser`: the data are a finite set {x_i}; p_t is the Gaussian mixture
  (1/N) Σ_i N(C_t x_i, σ_t² I) and
      E[x_0 | x_t] = Σ_i w_i x_i,   w = softmax_i( −‖x_t − C_t x_i‖² / (2σ_t²) ).
  Distances are evaluated in the operator's basis, ‖z_t − λ ⊙ z_i‖² = ‖z_t‖² − 2 (λ ⊙ z_t)·z_i + (λ²)·(z_i²),
  in float64, streaming over chunks of references with a running log-sum-exp, so 50 000 CIFAR-sized
  references fit in memory (the coefficients are kept in the data's dtype).
- :class:`GaussianDenoiser`: x_0 ~ N(μ, Σ) with Σ diagonal in the basis B of :func:`~softdiff.spectra.gaussian_basis`
  (the operator's own; the DCT where it leaves the spatial basis free), variances λ_{ckl}; per coefficient with
  d = spectrum of C_t:
      E[z_0 | z_t] = m + λ d / (d² λ + σ_t²) · (z_t − d m),   z = B x, m = B μ.
"""

from __future__ import annotations

import math

import torch

import softdiff_kernels as sk

from ._checks import as_times, check_images
from .operators import require_basis
from .spectra import DataSpectrum, gaussian_basis, power_law_variance_in, relative_w2, wiener_gain


class EmpiricalDenoiser:
    """Exact posterior mean for the finite data set ``data`` ``[N, C, H, W]`` under ``process``.

    Args:
        data: the reference images (kept as basis coefficients in float32, or float64 if given float64).
        process: the :class:`~softdiff.process.SoftDiffusionProcess`.
        chunk_size: references per chunk (bounds the float64 temporaries to about B·chunk + chunk·C·H·W).
    """

    def __init__(self, data: torch.Tensor, process, *, chunk_size: int = 2048):
        check_images("data", data)
        require_basis(process.operator, "EmpiricalDenoiser")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
        self.process = process
        self.image_shape = tuple(data.shape[1:])
        storage = sk.compute_dtype(data.dtype)
        self.coefficients = torch.cat(
            [process.operator.to_basis(part.to(torch.float64)).to(storage).flatten(1) for part in data.split(1024)]
        )  # [N, C*H*W]
        self.chunk_size = chunk_size

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t ``[B, C, H, W]``, t ``[B]`` -> E[x_0 | x_t] ``[B, C, H, W]`` (dtype of x_t)."""
        check_images("x_t", x_t)
        if tuple(x_t.shape[1:]) != self.image_shape:
            raise ValueError(f"x_t must hold images of shape {self.image_shape}; got {tuple(x_t.shape[1:])}")
        batch, channels, height, width = x_t.shape
        t = as_times("t", t, batch, device=x_t.device, images_dtype=x_t.dtype).to(torch.float64)
        operator = self.process.operator
        sigma = self.process.sigma(t)
        spectrum = operator.spectrum(self.process.level(t), height, width)  # [B, K, H, W]
        spectrum = spectrum.expand(batch, channels, height, width).reshape(batch, -1).to(x_t.device)
        z_t = operator.to_basis(x_t.to(torch.float64)).reshape(batch, -1)
        filtered = spectrum * z_t
        spectrum_sq = spectrum.square()
        norm_sq = z_t.square().sum(dim=1, keepdim=True)
        inv_two_var = (0.5 / sigma.square())[:, None]
        running_max = torch.full((batch, 1), -math.inf, dtype=torch.float64, device=x_t.device)
        running_sum = torch.zeros(batch, 1, dtype=torch.float64, device=x_t.device)
        accumulated = torch.zeros_like(z_t)
        for start in range(0, self.coefficients.shape[0], self.chunk_size):
            chunk = self.coefficients[start : start + self.chunk_size].to(device=x_t.device, dtype=torch.float64)
            distance = norm_sq - 2.0 * filtered @ chunk.T + spectrum_sq @ chunk.square().T  # ‖z_t − λ z_i‖²
            logits = -distance * inv_two_var
            new_max = torch.maximum(running_max, logits.max(dim=1, keepdim=True).values)
            rescale = torch.exp(running_max - new_max)
            weights = torch.exp(logits - new_max)
            running_sum = running_sum * rescale + weights.sum(dim=1, keepdim=True)
            accumulated = accumulated * rescale + weights @ chunk
            running_max = new_max
        z0 = (accumulated / running_sum).view(batch, channels, height, width)
        return operator.from_basis(z0).to(x_t.dtype)


class GaussianDenoiser:
    """Exact posterior mean for x_0 ~ N(``mean``, Σ), Σ diagonal in ``self.basis`` (the operator's, with the DCT
    where it leaves the spatial basis free; :func:`~softdiff.spectra.gaussian_basis`) with variances ``variance``.

    Args:
        variance: coefficient variances λ ``[C, H, W]`` (≥ 0) in that basis.
        process: a process whose operator has a basis (any BasisOperator).
        mean: the mean image μ ``[C, H, W]`` (default 0).
    """

    def __init__(self, variance: torch.Tensor, process, *, mean: torch.Tensor | None = None):
        if not isinstance(variance, torch.Tensor) or variance.dim() != 3:
            raise ValueError("variance must be a [C, H, W] tensor of DCT-coefficient variances")
        if not bool(torch.isfinite(variance).all()) or bool((variance < 0).any()):
            raise ValueError("variance must be finite and >= 0")
        self.basis = gaussian_basis(process.operator)
        self.variance = variance.to(torch.float64)
        self.mean = torch.zeros_like(self.variance) if mean is None else mean.to(torch.float64)
        if self.mean.shape != self.variance.shape:
            raise ValueError(f"mean must have shape {tuple(self.variance.shape)}; got {tuple(self.mean.shape)}")
        if not bool(torch.isfinite(self.mean).all()):
            raise ValueError("mean contains NaN or Inf")
        self.process = process

    @classmethod
    def power_law(cls, process, shape: tuple[int, int, int] = (3, 32, 32), *, pixel_variance: float = 0.25):
        """Natural-image-like spectrum: λ_{c,k,l} ∝ 1 / (1 + k² + l²) over DCT indices, scaled so that the
        mean pixel variance is ``pixel_variance`` (seen in the operator's basis, :func:`power_law_variance_in`);
        zero mean."""
        basis = gaussian_basis(process.operator)
        return cls(power_law_variance_in(basis, shape, pixel_variance=pixel_variance), process)

    def data_spectrum(self) -> DataSpectrum:
        """The exact per-coefficient mean and variance of this law (``process.data_spectrum`` for the ancestral
        sampler and ``--t-start auto``)."""
        return DataSpectrum(self.basis.forward(self.mean), self.variance, count=0)

    def sample_data(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of x_0 ~ N(μ, Σ): float64 ``[n, C, H, W]`` (on the CPU)."""
        xi = torch.randn(n, *self.variance.shape, dtype=torch.float64, generator=generator)
        return self.mean + self.basis.inverse(self.variance.sqrt() * xi)

    def relative_w2(self, samples: torch.Tensor) -> float:
        """Relative W2 distance of ``samples`` ``[N, C, H, W]`` to this law, per coefficient of the basis:
        ‖√v − √λ‖ / ‖√λ‖ with v the samples' second moments about the true mean (so a biased mean counts)."""
        check_images("samples", samples)
        z = self.basis.forward(samples.to(torch.float64) - self.mean.to(samples.device))
        v = z.square().mean(dim=0)
        return relative_w2(self.variance.to(samples.device), v)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t ``[B, C, H, W]``, t ``[B]`` -> E[x_0 | x_t] ``[B, C, H, W]`` (dtype of x_t)."""
        check_images("x_t", x_t)
        if x_t.shape[1:] != self.variance.shape:
            raise ValueError(f"x_t must hold images of shape {tuple(self.variance.shape)}; got {tuple(x_t.shape[1:])}")
        height, width = x_t.shape[-2:]
        t = as_times("t", t, x_t.shape[0], device=x_t.device, images_dtype=x_t.dtype).to(torch.float64)
        d = self.process.operator.spectrum(self.process.level(t), height, width)  # [B, K, H, W]
        sigma_sq = self.process.sigma(t).square().view(-1, 1, 1, 1)
        variance = self.variance.to(x_t.device)
        m = self.basis.forward(self.mean.to(x_t.device))
        z_t = self.basis.forward(x_t.to(torch.float64))
        z0 = m + wiener_gain(variance, d, sigma_sq) * (z_t - d * m)
        return self.basis.inverse(z0).to(x_t.dtype)
