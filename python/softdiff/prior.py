"""The prior p_1 from which sampling starts (DESIGN §1.4): the law of x_1 = C_1 x_0 + σ_1 η.

- :class:`GaussianPrior` (default): N(C_1 μ, σ_1² I) with a fixed mean image μ (0 by default). Accurate when
  σ_1 is far above the spread of *every DCT coefficient* of C_1 x_0, as in the paper's variance-exploding setups.
  With the orthonormal DCT the DC coefficient is √(H·W) × the mean pixel, so its spread grows with the image
  size (shapes at 32×32: about 12, where σ_1 = 5 would be far too narrow): :func:`isotropic_prior_error`
  measures it and :func:`choose_prior` (training's ``--prior auto``) picks the fitted prior when it is too large.
- :class:`DCTGaussianPrior`: a Gaussian fitted to C_1 x_0 in the DCT basis: per frequency (k, l) the mean
  m_{kl} ∈ R^C and the C×C covariance Σ_{kl} across channels of the DCT coefficients z = DCT2(C_1 x_0), then
  Σ_{kl} + σ_1² I. Needed when σ_1 is small (blur with low noise): then p_1 is far from N(C_1 μ, σ_1² I).
  Keeping the channel covariance (not only per-coefficient variances) keeps the colours of the blurred
  images right; with one channel it is exactly a per-coefficient mean and variance.

Both draw η with the counter-based generator (stream 0), so x_1 of a seed never depends on its batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

import softdiff_kernels as sk

from ._checks import check_images

PRIOR_STREAM = 0


class GaussianPrior:
    """x_1 ~ N(C_1 μ, σ_1² I) with ``mean`` μ a float or a ``[C, H, W]`` tensor."""

    kind = "isotropic"

    def __init__(self, mean: float | torch.Tensor = 0.0):
        if isinstance(mean, torch.Tensor) and mean.dim() != 3:
            raise ValueError(f"mean must be a float or a [C, H, W] tensor; got shape {tuple(mean.shape)}")
        self.mean = mean

    @property
    def zero_mean(self) -> bool:
        """Whether this is N(0, σ_1² I), the start the closed forms take as ``start_variance="prior"``."""
        return not bool(torch.as_tensor(self.mean).any())

    def sample(self, process, shape, seeds: torch.Tensor, *, dtype: torch.dtype) -> torch.Tensor:
        """x_1 ``[B, C, H, W]`` for int64 ``seeds`` ``[B]``."""
        batch = seeds.shape[0]
        ones = torch.ones(batch, dtype=torch.float32, device=seeds.device)
        t_one = torch.ones(batch, dtype=torch.float64, device=seeds.device)
        mean = torch.as_tensor(self.mean, dtype=dtype, device=seeds.device)
        try:
            mean = mean.expand(batch, *shape)
        except RuntimeError:
            raise ValueError(f"the prior's mean has shape {tuple(mean.shape)}, which does not broadcast to the images' "
                             f"{tuple(shape)}") from None  # fmt: skip
        sigma_1 = process.sigma(t_one)
        return process.operator.combine(
            mean.contiguous(), [process.level(t_one)], [ones], beta=sigma_1, seeds=seeds, stream=PRIOR_STREAM
        )

    def state_dict(self) -> dict:
        return {"kind": self.kind, "mean": self.mean}


class DCTGaussianPrior:
    """x_1 = IDCT2(m + L η) with per-frequency means ``mean`` ``[C, H, W]`` and Cholesky factors ``scale_tril``
    ``[H, W, C, C]`` of Σ_{kl} + σ_1² I. Build it with :meth:`fit` (or ``SoftDiffusionProcess.fit_prior``)."""

    kind = "dct_gaussian"

    def __init__(self, mean: torch.Tensor, covariance: torch.Tensor, *, sigma_1: float, level_1: float, count: int):
        channels, height, width = mean.shape
        if covariance.shape != (height, width, channels, channels):
            raise ValueError(
                f"covariance must have shape [{height}, {width}, {channels}, {channels}]; got {tuple(covariance.shape)}"
            )
        self.mean = mean.to(torch.float64)
        self.covariance = covariance.to(torch.float64)  # of DCT2(C_1 x_0), without the noise
        self.sigma_1 = float(sigma_1)
        self.level_1 = float(level_1)
        self.count = int(count)
        eye = torch.eye(channels, dtype=torch.float64)
        self.scale_tril = torch.linalg.cholesky(self.covariance + self.sigma_1**2 * eye)

    @classmethod
    @torch.no_grad()
    def fit(cls, data: torch.Tensor | Iterable[torch.Tensor], process, *, batch_size: int = 512) -> DCTGaussianPrior:
        """Fit to ``data``: a ``[N, C, H, W]`` tensor or an iterable of such batches (in [-1, 1])."""
        batches = data.split(batch_size) if isinstance(data, torch.Tensor) else data
        total = total_outer = None
        count = 0
        for i, x0 in enumerate(batches):
            check_images(f"data batch {i}", x0)
            t_one = torch.ones(x0.shape[0], dtype=torch.float64, device=x0.device)
            z = sk.dct2(process.apply(x0.to(torch.float64), t_one)).cpu()  # [B, C, H, W]
            z = z.permute(2, 3, 0, 1)  # [H, W, B, C]
            if total is None:
                shape = x0.shape[1:]
                total = torch.zeros(shape[1], shape[2], shape[0], dtype=torch.float64)
                total_outer = torch.zeros(shape[1], shape[2], shape[0], shape[0], dtype=torch.float64)
            elif x0.shape[1:] != shape:
                raise ValueError(
                    f"data batch {i} has images of shape {tuple(x0.shape[1:])}; earlier batches had {tuple(shape)}"
                )
            total += z.sum(dim=2)
            total_outer += z.transpose(-1, -2) @ z
            count += x0.shape[0]
        if count < 2:
            raise ValueError(f"fitting the prior needs at least 2 images; got {count}")
        mean = total / count  # [H, W, C]
        covariance = (total_outer - count * mean[..., :, None] * mean[..., None, :]) / (count - 1)
        t_one = torch.ones(1, dtype=torch.float64)
        return cls(
            mean.permute(2, 0, 1),
            covariance,
            sigma_1=float(process.sigma(t_one)),
            level_1=float(process.level(t_one)),
            count=count,
        )

    def check_matches(self, process) -> None:
        """Raise if the process's σ(1) or level(1) differ from those the prior was fitted for."""
        t_one = torch.ones(1, dtype=torch.float64)
        sigma_1, level_1 = float(process.sigma(t_one)), float(process.level(t_one))
        if not (
            math.isclose(sigma_1, self.sigma_1, rel_tol=1e-6)
            and math.isclose(level_1, self.level_1, rel_tol=1e-6, abs_tol=1e-9)
        ):
            raise ValueError(
                f"the prior was fitted for sigma(1)={self.sigma_1:g}, level(1)={self.level_1:g} but "
                f"the process has sigma(1)={sigma_1:g}, level(1)={level_1:g}; fit it again"
            )

    def sample(self, process, shape, seeds: torch.Tensor, *, dtype: torch.dtype) -> torch.Tensor:
        if tuple(shape) != tuple(self.mean.shape):
            raise ValueError(
                f"the prior was fitted on images of shape {tuple(self.mean.shape)}; asked for {tuple(shape)}"
            )
        self.check_matches(process)
        device = seeds.device
        eta = sk.seeded_normal(seeds, tuple(shape), PRIOR_STREAM).to(torch.float64)  # [B, C, H, W]
        factors = self.scale_tril.to(device).permute(2, 3, 0, 1)  # L[i, j, h, w]
        # (L η)_{b,i,h,w} = Σ_j L[i, j, h, w] η[b, j, h, w], summed over j in a fixed order: a batched matmul's
        # blocking, and with it the rounding, changes with the batch size, and a sample must not depend on its batch.
        correlated = sum(factors[:, j] * eta[:, j : j + 1] for j in range(eta.shape[1]))
        return sk.idct2(self.mean.to(device) + correlated).to(dtype)

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "mean": self.mean,
            "covariance": self.covariance,
            "sigma_1": self.sigma_1,
            "level_1": self.level_1,
            "count": self.count,
        }


# The isotropic prior is used (``--prior auto``) when no DCT coefficient of x_1 is off by more than this share of its
# spread: past it the samplers carry the prior's error into the samples (the sampled law's relative W2 grows with it).
ISOTROPIC_TOLERANCE = 0.1


def isotropic_prior_error(fitted: DCTGaussianPrior, process, mean: float | torch.Tensor = 0.0) -> float:
    """How far N(C_1 μ, σ_1² I) (``mean`` μ: a float or ``[C, H, W]``) is from the fitted law of x_1, coefficient by
    coefficient: the largest over channels and DCT frequencies of W2(N(m_iso, σ_1²), N(m, s²)) / s, with m, s² the
    fitted mean and variance of the coefficient (the data's, plus σ_1²) and m_iso the isotropic prior's mean there:
        √((m − m_iso)² + (s − σ_1)²) / s.
    A whole-image relative W2 would hide the few coefficients that matter: with the orthonormal DCT the DC
    coefficient is √(H·W) × the mean pixel, so its spread grows with the image size while σ_1 does not."""
    channels, height, width = fitted.mean.shape
    variance = torch.diagonal(fitted.covariance, dim1=-2, dim2=-1).permute(2, 0, 1) + fitted.sigma_1**2  # [C, H, W]
    spread = variance.sqrt()
    mean_image = torch.as_tensor(mean, dtype=torch.float64).expand(channels, height, width)
    fitted.check_matches(process)
    isotropic_mean = sk.dct2(process.apply(mean_image[None], torch.ones(1, dtype=torch.float64)))[0]
    error = ((fitted.mean - isotropic_mean).square() + (spread - fitted.sigma_1).square()).sqrt() / spread
    return float(error.max())


PRIOR_CHOICES = ("auto", "gaussian", "fit")


def choose_prior(process, data: Iterable[torch.Tensor], choice: str = "auto"):
    """The prior training gives ``process``, from batches of the training data (in [-1, 1]): the Gaussian fitted to
    x_1 (:class:`DCTGaussianPrior`) for ``"fit"``, the isotropic N(0, σ_1² I) for ``"gaussian"``, and for ``"auto"``
    the isotropic one unless :func:`isotropic_prior_error` exceeds :data:`ISOTROPIC_TOLERANCE`.

    Returns (prior, error, note): the isotropic prior's error and a line saying which prior and why; the note
    starts with "warning:" when a forced ``"gaussian"`` is off by more than the tolerance."""
    if choice not in PRIOR_CHOICES:
        raise ValueError(f"prior must be one of {', '.join(PRIOR_CHOICES)}; got {choice!r}")
    fitted = DCTGaussianPrior.fit(data, process)
    error = isotropic_prior_error(fitted, process)
    off = error > ISOTROPIC_TOLERANCE
    use_fit = choice == "fit" or (choice == "auto" and off)
    how = f"N(0, σ_1² I) is off by up to {error:.3g} of a DCT coefficient's spread (tolerance {ISOTROPIC_TOLERANCE})"
    if use_fit:
        note = f"prior fit (a Gaussian fitted to x_1 in the DCT basis; {how})"
    elif off:
        note = f"warning: prior gaussian, but {how}: samples will have the wrong spread; use --prior fit"
    else:
        note = f"prior gaussian ({how})"
    return (fitted if use_fit else GaussianPrior()), error, note


def prior_from_state_dict(state: dict) -> GaussianPrior | DCTGaussianPrior:
    """Rebuild a prior from its ``state_dict()``."""
    kind = state.get("kind")
    if kind == GaussianPrior.kind:
        return GaussianPrior(state["mean"])
    if kind == DCTGaussianPrior.kind:
        return DCTGaussianPrior(
            state["mean"], state["covariance"], sigma_1=state["sigma_1"], level_1=state["level_1"], count=state["count"]
        )
    raise ValueError(f"unknown prior kind {kind!r}; expected 'isotropic' or 'dct_gaussian'")
