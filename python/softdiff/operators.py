"""Linear corruption operators C(level), each diagonal in an orthonormal basis (DESIGN §1.1):

    C(level) = Bᵀ diag(λ(level)) B,   B = 2-D DCT-II (``basis = "dct"``) or the identity (``"pixel"``)

- :class:`DCTBlur`: Gaussian blur with Neumann boundaries, λ_{k,l}(σ_B) = exp(−σ_B² (ω_k² + ω_l²) / 2),
  ω_k = π k / H, ω_l = π l / W; ``level`` is the blur standard deviation σ_B in pixels. Separable:
  C = A_H ⊗ A_W with A = Mᵀ diag(d) M per axis, and C(a) C(b) = C(√(a² + b²)).
- :class:`Identity`: C = I whatever the level (variance-exploding diffusion, the Gaussian baseline).
- :class:`Masking`: C = diag(m) in the pixel basis; ``level`` ∈ [0, 1] is the fraction of pixel positions
  masked, in a fixed random order drawn from ``seed``. Masks are shared by all channels.

Every operator evaluates Σ_j w_j C(level_j)(a − a2) + α c + β η in one fused call (:meth:`Operator.combine`),
the form of every hot path: corruption, the soft loss residual and the sampler steps.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

import softdiff_kernels as sk

from ._checks import check_finite, check_images, check_values_enabled
from .images import to_model_range


class Operator(ABC):
    """A linear corruption C(level) = Bᵀ diag(spectrum(level)) B, B orthonormal (see the module docstring)."""

    name: str
    basis: str  # "dct" or "pixel"
    dct_diagonal: bool = False  # diagonal in the DCT basis too (what the Gaussian closed forms and oracles need)

    @abstractmethod
    def spectrum(self, level: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Eigenvalues of C(level) in the operator's basis: level ``[B]`` -> float64 ``[B, H, W]``."""

    @abstractmethod
    def combine(
        self,
        a: torch.Tensor,
        levels: Sequence[torch.Tensor],
        weights: Sequence[torch.Tensor],
        *,
        a2: torch.Tensor | None = None,
        alpha: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        beta: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        seeds: torch.Tensor | None = None,
        stream: int = 0,
    ) -> torch.Tensor:
        """Σ_j w_j C(level_j)(a − a2) + α c + β η for at most two terms j, in one fused op.

        a, a2, c, noise: ``[B, C, H, W]``; levels, weights, alpha, beta: ``[B]``; seeds: int64 ``[B]``.
        Internal building block: callers validate their arguments.
        """

    def check_levels(self, level: torch.Tensor) -> None:
        """Raise if ``level`` is outside the operator's domain (default: any finite value)."""
        check_finite("level", level)

    def filter_in_basis(self, a: torch.Tensor, table: torch.Tensor, *, a2: torch.Tensor | None = None,
                        c: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Bᵀ (table ⊙ B(a − a2)) + c in the operator's basis B, one fused op: ``a``, ``a2``, ``c`` ``[B, C, H, W]``,
        ``table`` float64 ``[B, H, W]`` (a per-coefficient filter shared by the channels)."""
        dtype = sk.compute_dtype(a.dtype)
        ones = None if c is None else torch.ones(a.shape[0], dtype=dtype, device=a.device)
        apply = sk.dct_filter if self.basis == "dct" else sk.pixel_filter
        return apply(a, table=table.to(dtype), a2=a2, alpha=ones, c=c)

    def to_basis(self, x: torch.Tensor) -> torch.Tensor:
        """Coefficients of ``x`` ``[..., H, W]`` in the operator's basis."""
        return sk.dct2(x) if self.basis == "dct" else x

    def from_basis(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_basis`."""
        return sk.idct2(z) if self.basis == "dct" else z

    def apply(self, x: torch.Tensor, level: torch.Tensor | float) -> torch.Tensor:
        """C(level) x for images ``x`` ``[B, C, H, W]`` and one level per sample ``[B]`` (or a float).

        float32 and float64 are kept; float16 and bfloat16 are computed in float32 and returned as given.
        """
        check_images("x", x)
        level = _as_levels(level, x)
        self.check_levels(level)
        return self.combine(x, [level], [torch.ones_like(level)])

    def to_dict(self) -> dict:
        """Configuration from which :func:`operator_from_dict` rebuilds the operator."""
        return {"name": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Operator) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_dict().items())))


def _as_levels(level: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Levels as a floating tensor ``[B]`` on the device of ``x``."""
    batch = x.shape[0]
    if isinstance(level, (int, float)) and not isinstance(level, bool):
        level = torch.full((batch,), float(level), dtype=torch.float64, device=x.device)
    if not isinstance(level, torch.Tensor) or not level.is_floating_point():
        raise TypeError(f"level must be a float or a floating tensor of shape [{batch}]; got {level!r:.80}")
    if level.dim() == 0:
        level = level.expand(batch)
    if level.shape != (batch,):
        raise ValueError(f"level must have shape [{batch}] (one level per sample); got {tuple(level.shape)}")
    if level.device != x.device:
        raise ValueError(f"level is on {level.device} but x is on {x.device}")
    return level


class DCTBlur(Operator):
    """Gaussian blur in the DCT domain; ``level`` = blur standard deviation σ_B in pixels (≥ 0)."""

    name = "dct_blur"
    basis = "dct"
    dct_diagonal = True

    @staticmethod
    def axis_factors(level: torch.Tensor, n: int) -> torch.Tensor:
        """d_k(σ_B) = exp(−σ_B² ω_k² / 2), ω_k = π k / n: level ``[B]`` -> float64 ``[B, n]``."""
        omega = math.pi * torch.arange(n, dtype=torch.float64, device=level.device) / n
        return torch.exp(-0.5 * level.to(torch.float64)[:, None].square() * omega.square())

    def spectrum(self, level: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.axis_factors(level, height)[:, :, None] * self.axis_factors(level, width)[:, None, :]

    def check_levels(self, level: torch.Tensor) -> None:
        super().check_levels(level)
        if check_values_enabled() and level.numel() and float(level.min()) < 0:
            raise ValueError(f"level (blur std in pixels) must be >= 0; got {float(level.min()):g}")

    def combine(self, a, levels, weights, **terms):
        height, width = a.shape[-2:]
        dtype = sk.compute_dtype(a.dtype)
        # Σ_j w_j C(l_j): separable terms rows_j ⊗ cols_j with rows_j = w_j d_H(l_j), cols_j = d_W(l_j).
        rows = torch.stack(
            [
                w.to(torch.float64)[:, None] * self.axis_factors(lv, height)
                for lv, w in zip(levels, weights, strict=True)
            ],
            dim=1,
        )
        cols = torch.stack([self.axis_factors(lv, width) for lv in levels], dim=1)
        return sk.dct_filter(a, rows=rows.to(dtype), cols=cols.to(dtype), **_cast_terms(terms, dtype))


class Identity(Operator):
    """C = I at every level: plain variance-exploding diffusion."""

    name = "identity"
    basis = "pixel"
    dct_diagonal = True  # C = I is diagonal in every basis

    def spectrum(self, level: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return torch.ones(level.shape[0], height, width, dtype=torch.float64, device=level.device)

    def combine(self, a, levels, weights, **terms):
        dtype = sk.compute_dtype(a.dtype)
        scale = sum(w.to(dtype) for w in weights)
        return sk.pixel_filter(a, table=scale.view(-1, 1, 1), **_cast_terms(terms, dtype))


class Masking(Operator):
    """C = diag(m(level)) in the pixel basis; ``level`` ∈ [0, 1] is the fraction of pixels masked.

    Pixel position p (of H·W) is masked once level > rank(p) / (H·W), with ranks a random permutation
    drawn from ``seed``: masks grow monotonically with the level and are the same for all channels.
    """

    name = "masking"
    basis = "pixel"

    def __init__(self, seed: int = 0):
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int; got {seed!r}")
        self.seed = seed

    def to_dict(self) -> dict:
        return {"name": self.name, "seed": self.seed}

    def check_levels(self, level: torch.Tensor) -> None:
        super().check_levels(level)
        if check_values_enabled() and level.numel() and (float(level.min()) < 0 or float(level.max()) > 1):
            raise ValueError(
                f"level (fraction of pixels masked) must lie in [0, 1]; got values in "
                f"[{float(level.min()):g}, {float(level.max()):g}]"
            )

    def mask_order(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """rank(p) / (H·W) for every pixel position: float64 ``[H, W]`` in [0, 1)."""
        return _mask_order(self.seed, height, width, torch.device(device))

    def spectrum(self, level: torch.Tensor, height: int, width: int) -> torch.Tensor:
        order = self.mask_order(height, width, level.device)
        return (order[None] >= level.to(torch.float64)[:, None, None]).to(torch.float64)

    def combine(self, a, levels, weights, **terms):
        height, width = a.shape[-2:]
        dtype = sk.compute_dtype(a.dtype)
        table = sum(
            w.to(torch.float64)[:, None, None] * self.spectrum(lv, height, width)
            for lv, w in zip(levels, weights, strict=True)
        )
        return sk.pixel_filter(a, table=table.to(dtype), **_cast_terms(terms, dtype))


@functools.lru_cache(maxsize=16)
def _mask_order(seed: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ranks = torch.empty(height * width, dtype=torch.float64)
    ranks[torch.randperm(height * width, generator=generator)] = torch.arange(height * width, dtype=torch.float64)
    return (ranks / (height * width)).view(height, width).to(device)


def _cast_terms(terms: dict, dtype: torch.dtype) -> dict:
    """Per-sample coefficients (alpha, beta) in the compute dtype; tensors of images pass unchanged."""
    return {k: (v.to(dtype) if k in ("alpha", "beta") and v is not None else v) for k, v in terms.items()}


_OPERATORS = {"dct_blur": DCTBlur, "identity": Identity, "masking": Masking}


def model_range_float64(images: torch.Tensor) -> torch.Tensor:
    """A batch as float64 in [-1, 1] units (uint8 [0, 255] is rescaled; float is taken as already in them)."""
    if images.dtype == torch.uint8:
        return to_model_range(images, torch.float64)
    return images.to(torch.float64)


def basis_second_moment(operator: Operator, images: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """E[z²] per channel and coefficient, z = the operator's basis coefficients of ``images`` ``[N, C, H, W]``
    (uint8 or float in [-1, 1]) -> float64 ``[C, H, W]``, accumulated in float64 on the images' device."""
    total = torch.zeros(images.shape[1:], dtype=torch.float64, device=images.device)
    for part in images.split(batch_size):
        total += operator.to_basis(model_range_float64(part)).square().sum(dim=0)
    return total / images.shape[0]


def operator_from_dict(config: dict) -> Operator:
    """Rebuild an operator from :meth:`Operator.to_dict`."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in _OPERATORS:
        raise ValueError(f"unknown operator {name!r}; expected one of {sorted(_OPERATORS)}")
    return _OPERATORS[name](**config)
