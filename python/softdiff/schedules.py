"""Noise and corruption-level schedules over t ∈ [0, 1] (DESIGN §1.1); t = 1 is the most corrupted.

- :class:`GeometricNoise`: σ(t) = σ_min (σ_max / σ_min)^t (variance exploding). σ_min = σ_max is legal
  (constant noise; how the Cold Diffusion limit of the momentum step is checked).
- :class:`LevelSchedule`: the operator level (blur σ_B in pixels, or masked fraction) as a function of t:
  ``sin2``: level(t) = level_max · sin²(πt/2) (the default until a data-driven schedule exists);
  ``from_levels``: piecewise linear through K levels at t_k = k / (K − 1); ``constant`` / ``zero``.

Both evaluate in float64 and return the dtype and device of ``t``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from ._checks import as_times

BLUR_MAX_FRACTION = 0.36  # default σ_B,max = 0.36 · min(H, W) pixels (DESIGN §1.1; the paper: ~23 px at 64×64)


def default_blur_max(height: int, width: int) -> float:
    """The default largest blur σ_B(1) in pixels for H × W images: 0.36 · min(H, W)."""
    return BLUR_MAX_FRACTION * min(height, width)


def _positive_finite(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


class GeometricNoise:
    """σ(t) = σ_min (σ_max / σ_min)^t, with 0 < σ_min ≤ σ_max (data in [-1, 1] units)."""

    def __init__(self, sigma_min: float, sigma_max: float):
        self.sigma_min = _positive_finite("sigma_min", sigma_min)
        self.sigma_max = _positive_finite("sigma_max", sigma_max)
        if self.sigma_max < self.sigma_min:
            raise ValueError(f"sigma_max ({sigma_max}) must be >= sigma_min ({sigma_min})")

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        """σ(t) for t ``[B]`` in [0, 1] -> ``[B]``."""
        t = as_times("t", t)
        log_ratio = math.log(self.sigma_max / self.sigma_min)
        return (self.sigma_min * torch.exp(t.to(torch.float64) * log_ratio)).to(t.dtype)

    def to_dict(self) -> dict:
        return {"name": "geometric", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    @classmethod
    def from_dict(cls, config: dict) -> GeometricNoise:
        return cls(config["sigma_min"], config["sigma_max"])

    def __repr__(self) -> str:
        return f"GeometricNoise(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g})"


class LevelSchedule:
    """level(t): ``sin2(level_max)``, ``from_levels([...])`` (piecewise linear at uniform t), ``constant(v)``,
    ``zero()``. Use the class methods; levels must be finite, ≥ 0 and non-decreasing in t."""

    def __init__(self, kind: str, levels: Sequence[float]):
        if kind not in ("sin2", "piecewise_linear"):
            raise ValueError(f"kind must be 'sin2' or 'piecewise_linear'; got {kind!r}")
        values = [float(v) for v in levels]
        if not values or any(not math.isfinite(v) or v < 0 for v in values):
            raise ValueError(f"levels must be a non-empty list of finite numbers >= 0; got {list(levels)!r:.200}")
        if any(b < a for a, b in itertools.pairwise(values)):
            raise ValueError("levels must be non-decreasing in t (t = 1 is the most corrupted)")
        if kind == "sin2" and len(values) != 1:
            raise ValueError("a sin2 schedule has one parameter, its maximum level")
        if kind == "piecewise_linear" and len(values) >= 2 and values[0] != 0:
            raise ValueError(f"the first level (t = 0) must be 0, so that C_0 = I; got {values[0]} (a constant "
                             "corruption is LevelSchedule.constant)")  # fmt: skip
        self.kind = kind
        self.levels = values

    @classmethod
    def sin2(cls, level_max: float) -> LevelSchedule:
        """level(t) = level_max · sin²(π t / 2)."""
        return cls("sin2", [level_max])

    @classmethod
    def from_levels(cls, levels: Sequence[float]) -> LevelSchedule:
        """Piecewise linear through ``levels`` placed at t_k = k / (K − 1) (one level: constant). With K ≥ 2 the
        first level must be 0, so that C_0 = I: the loss near t = 0 then supervises every detail of x_0."""
        if isinstance(levels, torch.Tensor):
            levels = levels.detach().cpu().double().tolist()
        return cls("piecewise_linear", levels)

    @classmethod
    def constant(cls, level: float) -> LevelSchedule:
        return cls("piecewise_linear", [level])

    @classmethod
    def zero(cls) -> LevelSchedule:
        return cls.constant(0.0)

    @property
    def level_max(self) -> float:
        """level(1), the largest level."""
        return self.levels[-1]

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        """level(t) for t ``[B]`` in [0, 1] -> ``[B]``."""
        t = as_times("t", t)
        t64 = t.to(torch.float64)
        if self.kind == "sin2":
            return (self.levels[0] * torch.sin(0.5 * math.pi * t64).square()).to(t.dtype)
        knots = torch.tensor(self.levels, dtype=torch.float64, device=t.device)
        if knots.numel() == 1:
            return knots.expand(t.shape).to(t.dtype)
        position = t64 * (knots.numel() - 1)
        index = position.floor().clamp(0, knots.numel() - 2).long()
        fraction = position - index
        return torch.lerp(knots[index], knots[index + 1], fraction).to(t.dtype)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "levels": list(self.levels)}

    @classmethod
    def from_dict(cls, config: dict) -> LevelSchedule:
        return cls(config["kind"], config["levels"])

    def __repr__(self) -> str:
        if self.kind == "sin2":
            return f"LevelSchedule.sin2({self.levels[0]:g})"
        return f"LevelSchedule.from_levels({self.levels})"
