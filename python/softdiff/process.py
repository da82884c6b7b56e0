"""The forward process (DESIGN §1.1): x_t = C_t x_0 + σ_t η, η ~ N(0, I), so q_t(x_t | x_0) = N(C_t x_0, σ_t² I),

with C_t = operator(level(t)) and σ_t = noise(t). The prior p_1 (§1.4) belongs to the process.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

import softdiff_kernels as sk

from ._checks import ValueChecks, as_seeds, as_times, check_images, trusted_values
from .operators import Operator, operator_from_dict
from .prior import DCTGaussianPrior, GaussianPrior, prior_from_state_dict
from .schedules import GeometricNoise, LevelSchedule
from .spectra import DataSpectrum

CORRUPT_STREAM = 0


class SoftDiffusionProcess:
    """x_t = C_t x_0 + σ_t η with C_t = ``operator``(``levels``(t)) and σ_t = ``noise``(t).

    Args:
        operator: an :class:`~softdiff.operators.Operator` (``DCTBlur()``, ``Pixelate()``, ``Desaturate()``,
            ``Masking()``, ``Identity()``, a ``Composite``, or a user's own).
        noise: σ(t), e.g. ``GeometricNoise(0.02, 100.0)``; must be > 0 (keyword).
        levels: level(t), e.g. ``LevelSchedule.sin2(11.5)`` (keyword).
        prior: the law of x_1; ``GaussianPrior()`` (N(0, σ_1² I)) by default, or a fitted ``DCTGaussianPrior``.
        data_spectrum: the data's per-coefficient mean and variance in the operator's basis
            (:meth:`fit_data_spectrum`), what ``--t-start auto`` estimates a corruption level from; optional.
    """

    def __init__(self, operator: Operator, *, noise: GeometricNoise, levels: LevelSchedule, prior=None,
                 data_spectrum: DataSpectrum | None = None):  # fmt: skip
        if not isinstance(operator, Operator):
            raise TypeError(f"operator must be a softdiff Operator (DCTBlur, Pixelate, Desaturate, Masking, Identity, "
                            f"Composite, or a subclass of softdiff.Operator); got {operator!r}")  # fmt: skip
        if not isinstance(noise, GeometricNoise):
            raise TypeError(f"noise must be a GeometricNoise; got {noise!r}")
        if not isinstance(levels, LevelSchedule):
            raise TypeError(f"levels must be a LevelSchedule; got {levels!r}")
        operator.check_levels(torch.tensor(levels.levels, dtype=torch.float64))
        self.operator = operator
        self.noise = noise
        self.levels = levels
        self.prior = GaussianPrior() if prior is None else prior
        self.data_spectrum = data_spectrum

    def check_image_size(self, height: int, width: int) -> None:
        """Raise if a level of the schedule is outside the operator's domain for H × W images (e.g. pixelation
        deeper than the sides halve). Reads no device value."""
        self.operator.check_size(self.levels.level_max, height, width)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """σ_t for t ``[B]`` in [0, 1] -> ``[B]``."""
        return self.noise(t)

    def level(self, t: torch.Tensor) -> torch.Tensor:
        """The operator level at t ``[B]`` -> ``[B]``."""
        return self.levels(t)

    def apply(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """C_t x for x ``[B, C, H, W]`` and t ``[B]`` (or a float)."""
        check_images("x", x)
        self.check_image_size(x.shape[-2], x.shape[-1])
        t = as_times("t", t, x.shape[0], device=x.device, images_dtype=x.dtype)
        level = self.level(t)
        return self.operator.combine(x, [level], [torch.ones_like(level)])

    def corrupt(
        self,
        x0: torch.Tensor,
        t: torch.Tensor | float,
        noise: torch.Tensor | None = None,
        seed: int | Sequence[int] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_t = C_t x_0 + σ_t η in one fused op.

        Args:
            x0: clean images ``[B, C, H, W]`` in [-1, 1] (values beyond ±8, e.g. pixels in [0, 255], raise
                ValueError).
            t: ``[B]`` (or a float) in [0, 1].
            noise: explicit η ``[B, C, H, W]`` (exact tests).
            seed: instead of ``noise``: an int s (sample b uses seed s + b) or one seed per sample; η is then
                drawn by the counter-based generator (stream 0), the same on every device and backend.
            With neither, η comes from torch's global generator: as per-sample seeds for the in-kernel noise
            when a fused kernel runs on this device, as ``torch.randn`` on the reference backend.
        Returns:
            x_t ``[B, C, H, W]`` in the dtype of ``x0``.
        """
        checks = ValueChecks()  # the inputs' values, read back together before the op: one host sync
        checks.images("x0", x0)
        checks.model_range("x0", x0)
        self.check_image_size(x0.shape[-2], x0.shape[-1])
        batch = x0.shape[0]
        t = checks.as_times("t", t, batch, device=x0.device, images_dtype=x0.dtype)
        if noise is not None and seed is not None:
            raise ValueError("pass noise or seed, not both")
        seeds = None
        if seed is not None:
            if isinstance(seed, int) and not isinstance(seed, bool):
                seed = range(seed, seed + batch)
            seeds = checks.as_seeds("seed", seed, batch, device=x0.device)
        elif noise is None:  # torch's global generator, as a tensor or as seeds: the backend's choice
            drawn = sk.global_noise(x0)
            noise, seeds = drawn.get("noise"), drawn.get("seeds")
        else:
            checks.images("noise", noise, like=x0, like_name="x0")
        checks.verify()
        with trusted_values():  # σ_t and the level of checked times
            level = self.level(t)
            return self.operator.combine(x0, [level], [torch.ones_like(level)], beta=self.sigma(t), noise=noise,
                                         seeds=seeds, stream=CORRUPT_STREAM)  # fmt: skip

    def sample_prior(
        self,
        shape: Sequence[int],
        seeds: Sequence[int] | torch.Tensor,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """x_1 ~ p_1, one image of ``shape`` = (C, H, W) per seed -> ``[B, C, H, W]``."""
        if len(shape) != 3 or any(not isinstance(n, int) or n < 1 for n in shape):
            raise ValueError(f"shape must be (C, H, W) of positive ints; got {tuple(shape)}")
        try:
            count = len(seeds)
        except TypeError:
            raise TypeError(f"seeds must be a sequence of ints or an integer tensor [B], one seed per image; got "
                            f"{type(seeds).__name__}") from None  # fmt: skip
        seeds = as_seeds("seeds", seeds, count, device=torch.device(device))
        return self.prior.sample(self, tuple(shape), seeds, dtype=dtype)

    def fit_prior(self, data: torch.Tensor | Iterable[torch.Tensor], *, batch_size: int = 512) -> DCTGaussianPrior:
        """Fit p_1 as a Gaussian in the DCT basis to C_1 x_0 over ``data`` (``[N, C, H, W]`` or batches of it),
        make it this process's prior and return it."""
        self.prior = DCTGaussianPrior.fit(data, self, batch_size=batch_size)
        return self.prior

    def fit_data_spectrum(self, images: torch.Tensor) -> DataSpectrum:
        """The per-coefficient mean and variance of ``images`` ``[N, C, H, W]`` (uint8, or float in [-1, 1]) in the
        operator's basis; kept as :attr:`data_spectrum` (and saved with the process) and returned."""
        self.data_spectrum = DataSpectrum.fit(self.operator, images)
        return self.data_spectrum

    def to_dict(self) -> dict:
        """Everything needed to rebuild the process (prior and data statistics included); ``torch.save``-able."""
        return {
            "operator": self.operator.to_dict(),
            "noise": self.noise.to_dict(),
            "levels": self.levels.to_dict(),
            "prior": self.prior.state_dict(),
            "data_spectrum": None if self.data_spectrum is None else self.data_spectrum.state_dict(),
        }

    @classmethod
    def from_dict(cls, config: dict) -> SoftDiffusionProcess:
        return cls(
            operator_from_dict(config["operator"]),
            noise=GeometricNoise.from_dict(config["noise"]),
            levels=LevelSchedule.from_dict(config["levels"]),
            prior=prior_from_state_dict(config["prior"]),
            data_spectrum=DataSpectrum.from_state_dict(config.get("data_spectrum")),  # absent in older checkpoints
        )

    def __repr__(self) -> str:
        return (
            f"SoftDiffusionProcess({self.operator!r}, noise={self.noise!r}, levels={self.levels!r}, "
            f"prior={type(self.prior).__name__})"
        )
