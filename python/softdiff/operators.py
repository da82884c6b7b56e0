"""Linear corruption operators C(level) (DESIGN §1.1) and the protocol a user's own operator follows.

The protocol, two tiers:

- :class:`Operator`: a linear map C(level) given by :meth:`Operator.apply` alone (matrix-free, e.g. a motion
  blur). Enough for the corruption, the soft loss (autograd gives the adjoint) and the first-order samplers
  (naive, momentum, momentum_ode), which only ever apply C. What needs C's eigen-decomposition (the second-order
  samplers, the Wiener preconditioning, the exact oracles and closed forms, schedule design) refuses it, naming
  what is missing (:func:`require_basis`).
- :class:`BasisOperator`: C(level) = Bᵀ diag(d(level)) B with B orthonormal, given by ``spectrum`` (d) and the
  basis (:class:`~softdiff.bases.Basis`: ``to_basis``, ``from_basis``). Every sampler, closed form and oracle
  works with it. ``apply`` and the fused ``combine`` follow from the spectrum.

Built in (each ``level`` ≥ 0, level 0 is C = I):

- :class:`DCTBlur`: Gaussian blur with Neumann boundaries, d_{k,l}(σ_B) = exp(−σ_B² (ω_k² + ω_l²) / 2),
  ω_k = π k / H, ω_l = π l / W; ``level`` is the blur standard deviation σ_B in pixels. Separable:
  C = A_H ⊗ A_W with A = Mᵀ diag(d) M per axis, and C(a) C(b) = C(√(a² + b²)).
- :class:`Pixelate`: multi-scale averaging, diagonal in the separable Haar basis; per axis the details of scale j
  (blocks of 2^j pixels) are kept with weight clamp(j − level, 0, 1), so an integer ``level`` L averages the image
  over blocks of 2^L × 2^L pixels and a fractional one fades the next scale out linearly, finest first.
- :class:`Desaturate`: diagonal in the opponent colour basis; the two chroma channels are kept with weight
  1 − ``level`` (``level`` ∈ [0, 1]; 1: the grey image R = G = B = their mean).
- :class:`Masking`: C = diag(m) in the pixel basis; ``level`` ∈ [0, 1] is the fraction of pixel positions
  masked, in a fixed random order drawn from ``seed``. Masks are shared by all channels.
- :class:`Identity`: C = I whatever the level (variance-exploding diffusion, the Gaussian baseline).
- :class:`Composite`: the product of commuting operators (e.g. blur × desaturation): one ``level`` s ∈ [0, 1],
  component i at level s · scale_i; the basis is the product of the components' bases, the spectrum the product
  of their spectra.

Every operator evaluates Σ_j w_j C(level_j)(a − a2) + α c + β η in one call (:meth:`Operator.combine`), the form
of every hot path (the corruption, the soft loss residual, the sampler steps): one fused op for the blur, the
masks and the identity; for the Haar and colour bases the basis change runs in PyTorch around the fused
pixel op (``docs/operators.md`` says what runs where).
"""

from __future__ import annotations

import functools
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

import softdiff_kernels as sk

from ._checks import check_finite, check_images, check_values_enabled
from .bases import Basis, haar_depth, haar_scales
from .images import to_model_range
from .schedules import default_blur_max

logger = logging.getLogger("softdiff")


@functools.cache
def say_unfused_once(operator_label: str, device_type: str, how: str) -> None:
    """Log once per (operator, device) that its filter runs outside the fused op family, and how."""
    logger.info("softdiff: %s on %s runs %s, then the fused pixel op for α c + β η (the DCT blur, masking and the "
                "identity run as one fused op)", operator_label, device_type, how)  # fmt: skip


class Operator(ABC):
    """A linear corruption C(level) known through :meth:`apply` alone (see the module docstring).

    Subclass it with a ``name`` and ``apply(x, level)``: ``x`` ``[B, C, H, W]`` (float32 or float64), ``level``
    float64 ``[B]`` -> C(level) x ``[B, C, H, W]`` in the dtype of ``x``, written in differentiable torch ops. For
    checkpoints, :func:`register_operator` the class and give it a ``to_dict`` of its constructor's arguments.
    """

    name: str = "operator"
    has_basis: bool = False
    level_unit: str = "level"

    @abstractmethod
    def apply(self, x: torch.Tensor, level: torch.Tensor | float) -> torch.Tensor:
        """C(level) x for images ``x`` ``[B, C, H, W]`` and one level per sample ``[B]`` (or a float)."""

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
        """Σ_j w_j C(level_j)(a − a2) + α c + β η for at most two terms j.

        a, a2, c, noise: ``[B, C, H, W]``; levels, weights, alpha, beta: ``[B]``; seeds: int64 ``[B]``. Internal
        building block: callers validate their arguments. Here through :meth:`apply`, one call per term; the noise
        η is the fused op's (the same for a seed whatever the operator).
        """
        dtype = sk.compute_dtype(a.dtype)
        say_unfused_once(self.label, a.device.type, "its apply() once per term")
        difference = a.to(dtype) if a2 is None else a.to(dtype) - a2.to(dtype)
        total = sum(
            w.to(dtype).view(-1, 1, 1, 1) * self.apply(difference, lv.to(torch.float64))
            for lv, w in zip(levels, weights, strict=True)
        )
        return add_affine_terms(total, a.dtype, alpha=alpha, c=c, beta=beta, noise=noise, seeds=seeds, stream=stream)

    def check_levels(self, level: torch.Tensor) -> None:
        """Raise if ``level`` ``[B]`` is outside the operator's domain (default: any finite value)."""
        check_finite("level", level)

    def check_size(self, level_max: float, height: int, width: int) -> None:
        """Raise if ``level_max`` is beyond the operator's domain for H × W images (default: never). Python
        numbers only: it reads nothing back from a device."""
        return None

    def default_level_max(self, height: int, width: int) -> float:
        """level(1) of the default schedule for H × W images."""
        return 1.0

    def to_dict(self) -> dict:
        """Configuration from which :func:`operator_from_dict` rebuilds the operator."""
        return {"name": self.name}

    @classmethod
    def from_dict(cls, config: dict) -> Operator:
        """Inverse of :meth:`to_dict` (without the name)."""
        return cls(**config)

    @property
    def label(self) -> str:
        """The operator's name as the command lines write it (``dct_blur``, ``dct_blur+desaturate``)."""
        return self.name

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Operator) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))


def add_affine_terms(y: torch.Tensor, dtype: torch.dtype, *, alpha=None, c=None, beta=None, noise=None, seeds=None,
                     stream: int = 0) -> torch.Tensor:  # fmt: skip
    """y + α c + β η in ``dtype`` (η from ``noise`` or the fused op's generator from ``seeds`` and ``stream``): what
    the operators that filter outside a fused op add after it. ``y``, ``c``, ``noise`` ``[B, C, H, W]``; α, β
    ``[B]``."""
    if alpha is None and beta is None:
        return y.to(dtype)
    compute = y.dtype
    ones = torch.ones(y.shape[0], 1, 1, dtype=compute, device=y.device)
    terms = {name: None if value is None else value.to(compute)
             for name, value in (("alpha", alpha), ("c", c), ("beta", beta), ("noise", noise))}  # fmt: skip
    return sk.pixel_filter(y, table=ones, seeds=seeds, stream=stream, **terms).to(dtype)


def require_basis(operator: Operator, purpose: str) -> None:
    """Raise a TypeError naming ``purpose`` if ``operator`` has no orthonormal eigenbasis (only ``apply``)."""
    if not operator.has_basis:
        raise TypeError(
            f"{purpose} needs an operator diagonal in an orthonormal basis (a BasisOperator with spectrum, to_basis "
            f"and from_basis); {operator!r} has only apply(). The corruption, the loss and the samplers naive, "
            f"momentum and momentum_ode work with it."
        )


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


def _check_range(level: torch.Tensor, low: float, high: float | None, what: str) -> None:
    """Raise unless every level lies in [low, high] (high None: no upper bound)."""
    if not check_values_enabled() or not level.numel():
        return
    lowest, highest = float(level.min()), float(level.max())
    if high is None and lowest < low:
        raise ValueError(f"level ({what}) must be >= {low:g}; got {lowest:g}")
    if high is not None and (lowest < low or highest > high):
        raise ValueError(f"level ({what}) must lie in [{low:g}, {high:g}]; got values in [{lowest:g}, {highest:g}]")


class BasisOperator(Operator):
    """C(level) = Bᵀ diag(spectrum(level)) B with B orthonormal: :class:`~softdiff.bases.Basis` (``channel_basis``,
    ``spatial_basis``). ``spatial_basis`` None: the spectrum is constant over the pixels (diagonal in every spatial
    basis); ``channel_basis`` "shared": the same for every channel (diagonal in every channel basis)."""

    has_basis = True
    channel_basis: str = "shared"
    spatial_basis: str | None = None

    @abstractmethod
    def spectrum(self, level: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Eigenvalues of C(level) in the operator's basis: level ``[B]`` -> float64 ``[B, K, H, W]``, K = 1 (shared
        by the channels) or the number of channels the basis mixes (3 for the colour basis)."""

    @property
    def basis(self) -> Basis:
        """The orthonormal basis B (spatial ``"pixel"`` where the spectrum is constant over the pixels)."""
        return Basis(self.channel_basis, self.spatial_basis or "pixel")

    def to_basis(self, x: torch.Tensor) -> torch.Tensor:
        """Coefficients B x of ``x`` ``[..., C, H, W]``."""
        return self.basis.forward(x)

    def from_basis(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_basis`."""
        return self.basis.inverse(z)

    def apply(self, x: torch.Tensor, level: torch.Tensor | float) -> torch.Tensor:
        """C(level) x for images ``x`` ``[B, C, H, W]`` and one level per sample ``[B]`` (or a float).

        float32 and float64 are kept; float16 and bfloat16 are computed in float32 and returned as given.
        """
        check_images("x", x)
        level = _as_levels(level, x)
        self.check_levels(level)
        if check_values_enabled() and level.numel():
            self.check_size(float(level.max()), x.shape[-2], x.shape[-1])
        return self.combine(x, [level], [torch.ones_like(level)])

    def combine(self, a, levels, weights, *, a2=None, alpha=None, c=None, beta=None, noise=None, seeds=None,
                stream=0):  # fmt: skip
        height, width = a.shape[-2:]
        table = sum(
            w.to(torch.float64).view(-1, 1, 1, 1) * self.spectrum(lv, height, width)
            for lv, w in zip(levels, weights, strict=True)
        )
        return self.filter_in_basis(a, table, a2=a2, alpha=alpha, c=c, beta=beta, noise=noise, seeds=seeds,
                                    stream=stream)  # fmt: skip

    def filter_in_basis(self, a: torch.Tensor, table: torch.Tensor, *, a2: torch.Tensor | None = None,
                        alpha: torch.Tensor | None = None, c: torch.Tensor | None = None, beta=None, noise=None,
                        seeds=None, stream: int = 0) -> torch.Tensor:  # fmt: skip
        """Bᵀ (table ⊙ B(a − a2)) + α c + β η: ``a``, ``a2``, ``c``, ``noise`` ``[B, C, H, W]``, ``table`` float64
        ``[B, K, H, W]`` (a per-coefficient filter; K = 1: shared by the channels), α (default 1 with ``c``) and β
        ``[B]``. One fused op where the basis is the DCT or the pixels and the filter is shared by the channels."""
        dtype = sk.compute_dtype(a.dtype)
        if c is not None and alpha is None:
            alpha = torch.ones(a.shape[0], dtype=dtype, device=a.device)
        terms = dict(a2=a2, alpha=alpha, c=c, beta=beta, noise=noise, seeds=seeds, stream=stream)
        if table.shape[1] == 1 and self.channel_basis == "shared" and self.basis.spatial in ("dct", "pixel"):
            apply = sk.dct_filter if self.basis.spatial == "dct" else sk.pixel_filter
            return apply(a, table=table[:, 0].to(dtype), **_cast_terms(terms, dtype))
        say_unfused_once(self.label, a.device.type, f"the basis change ({self.basis}) in PyTorch")
        difference = a.to(dtype) if a2 is None else a.to(dtype) - a2.to(dtype)
        y = self.from_basis(table.to(dtype) * self.to_basis(difference))
        return add_affine_terms(y, a.dtype, alpha=alpha, c=c, beta=beta, noise=noise, seeds=seeds, stream=stream)


class DCTBlur(BasisOperator):
    """Gaussian blur in the DCT domain; ``level`` = blur standard deviation σ_B in pixels (≥ 0)."""

    name = "dct_blur"
    spatial_basis = "dct"
    level_unit = "σ_B (pixels)"

    @staticmethod
    def axis_factors(level: torch.Tensor, n: int) -> torch.Tensor:
        """d_k(σ_B) = exp(−σ_B² ω_k² / 2), ω_k = π k / n: level ``[B]`` -> float64 ``[B, n]``."""
        omega = math.pi * torch.arange(n, dtype=torch.float64, device=level.device) / n
        return torch.exp(-0.5 * level.to(torch.float64)[:, None].square() * omega.square())

    def spectrum(self, level: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return (self.axis_factors(level, height)[:, :, None] * self.axis_factors(level, width)[:, None, :])[:, None]

    def check_levels(self, level: torch.Tensor) -> None:
        super().check_levels(level)
        _check_range(level, 0.0, None, "blur std in pixels")

    def default_level_max(self, height: int, width: int) -> float:
        return default_blur_max(height, width)

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


class Pixelate(BasisOperator):
    """Multi-scale averaging in the separable Haar basis; ``level`` L ∈ [0, J]: an integer L averages over blocks of
    2^L × 2^L pixels (J = the number of times both sides halve evenly: 28 = 2² · 7 gives J = 2, blocks of 4)."""

    name = "pixelate"
    spatial_basis = "haar"
    level_unit = "Haar scales (blocks of 2^level pixels)"

    @staticmethod
    def axis_factors(level: torch.Tensor, n: int) -> torch.Tensor:
        """Per row of the Haar matrix H_n: 1 for the block averages, clamp(j − level, 0, 1) for the details of scale
        j: level ``[B]`` -> float64 ``[B, n]``."""
        scales = haar_scales(n).to(level.device)
        kept = (scales[None] - level.to(torch.float64)[:, None]).clamp(0.0, 1.0)
        return torch.where(scales[None] == 0, torch.ones_like(kept), kept)

    def spectrum(self, level: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return (self.axis_factors(level, height)[:, :, None] * self.axis_factors(level, width)[:, None, :])[:, None]

    def check_levels(self, level: torch.Tensor) -> None:
        super().check_levels(level)
        _check_range(level, 0.0, None, "Haar scales")

    def check_size(self, level_max: float, height: int, width: int) -> None:
        deepest = self.deepest(height, width)
        if level_max > deepest:
            raise ValueError(f"pixelate level {level_max:g} is beyond the coarsest Haar scale of {height}x{width} "
                             f"images, {deepest} (both sides must be divisible by 2^level)")  # fmt: skip

    @staticmethod
    def deepest(height: int, width: int) -> int:
        """J: the largest level for H × W images (both sides divisible by 2^J)."""
        return min(haar_depth(height), haar_depth(width))

    def default_level_max(self, height: int, width: int) -> float:
        deepest = self.deepest(height, width)
        if deepest == 0:
            raise ValueError(
                f"{height}x{width} images cannot be pixelated: a side is odd (Haar blocks need even sides)"
            )
        return float(deepest)


class Desaturate(BasisOperator):
    """Removes the chroma in the opponent colour basis; ``level`` ∈ [0, 1] (1: grey). RGB images only."""

    name = "desaturate"
    channel_basis = "opponent"
    level_unit = "share of the chroma removed"

    def spectrum(self, level: torch.Tensor, height: int, width: int) -> torch.Tensor:
        chroma = 1.0 - level.to(torch.float64)[:, None]  # [B, 1]
        kept = torch.cat([torch.ones_like(chroma), chroma, chroma], dim=1)  # luminance, red–green, yellow–blue
        return kept[:, :, None, None].expand(-1, -1, height, width)

    def check_levels(self, level: torch.Tensor) -> None:
        super().check_levels(level)
        _check_range(level, 0.0, 1.0, "share of the chroma removed")


class Identity(BasisOperator):
    """C = I at every level: plain variance-exploding diffusion."""

    name = "identity"

    def spectrum(self, level: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return torch.ones(level.shape[0], 1, height, width, dtype=torch.float64, device=level.device)

    def default_level_max(self, height: int, width: int) -> float:
        return 0.0

    def combine(self, a, levels, weights, **terms):
        dtype = sk.compute_dtype(a.dtype)
        scale = sum(w.to(dtype) for w in weights)
        return sk.pixel_filter(a, table=scale.view(-1, 1, 1), **_cast_terms(terms, dtype))


class Masking(BasisOperator):
    """C = diag(m(level)) in the pixel basis; ``level`` ∈ [0, 1] is the fraction of pixels masked.

    Pixel position p (of H·W) is masked once level > rank(p) / (H·W), with ranks a random permutation
    drawn from ``seed``: masks grow monotonically with the level and are the same for all channels.
    """

    name = "masking"
    spatial_basis = "pixel"
    level_unit = "fraction of pixels masked"

    def __init__(self, seed: int = 0):
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int; got {seed!r}")
        self.seed = seed

    def to_dict(self) -> dict:
        return {"name": self.name, "seed": self.seed}

    def check_levels(self, level: torch.Tensor) -> None:
        super().check_levels(level)
        _check_range(level, 0.0, 1.0, "fraction of pixels masked")

    def mask_order(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """rank(p) / (H·W) for every pixel position: float64 ``[H, W]`` in [0, 1)."""
        return _mask_order(self.seed, height, width, torch.device(device))

    def spectrum(self, level: torch.Tensor, height: int, width: int) -> torch.Tensor:
        order = self.mask_order(height, width, level.device)
        return (order[None] >= level.to(torch.float64)[:, None, None]).to(torch.float64)[:, None]


@functools.lru_cache(maxsize=16)
def _mask_order(seed: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ranks = torch.empty(height * width, dtype=torch.float64)
    ranks[torch.randperm(height * width, generator=generator)] = torch.arange(height * width, dtype=torch.float64)
    return (ranks / (height * width)).view(height, width).to(device)


class Composite(BasisOperator):
    """The product C(s) = Π_i C_i(s · scale_i) of commuting operators, one level s ∈ [0, 1].

    Args:
        operators: BasisOperators that commute: at most one distinct spatial basis among those whose spectrum varies
            over the pixels, at most one channel basis among those whose spectrum varies over the channels (blur or
            pixelation or masking, times desaturation).
        scales: each component's level at s = 1 (e.g. the blur's σ_B,max in pixels, 1 for desaturation).
    """

    name = "composite"

    def __init__(self, operators: Sequence[BasisOperator], scales: Sequence[float]):
        operators, scales = list(operators), [float(s) for s in scales]
        if len(operators) < 2:
            raise ValueError(f"a composite needs at least two operators; got {len(operators)}")
        if len(scales) != len(operators):
            raise ValueError(f"a composite needs one scale per operator: {len(operators)} operators, {len(scales)} "
                             "scales")  # fmt: skip
        for op in operators:
            if not isinstance(op, Operator):
                raise TypeError(f"a composite is made of softdiff operators; got {op!r}")
            require_basis(op, "a composite")
        if any(not math.isfinite(s) or s < 0 for s in scales):
            raise ValueError(f"scales must be finite and >= 0; got {scales}")
        self.operators, self.scales = operators, scales
        self.spatial_basis = _common([op.spatial_basis for op in operators], None, "spatial", operators)
        self.channel_basis = _common([op.channel_basis for op in operators], "shared", "channel", operators)

    def levels_of(self, level: torch.Tensor) -> list[torch.Tensor]:
        """Each component's level s · scale_i: level ``[B]`` -> a list of ``[B]``."""
        return [level.to(torch.float64) * scale for scale in self.scales]

    def spectrum(self, level: torch.Tensor, height: int, width: int) -> torch.Tensor:
        product = None
        for op, component_level in zip(self.operators, self.levels_of(level), strict=True):
            d = op.spectrum(component_level, height, width)
            product = d if product is None else product * d  # K = 1 broadcasts against K = C
        return product

    def check_levels(self, level: torch.Tensor) -> None:
        super().check_levels(level)
        _check_range(level, 0.0, 1.0, "the composite's share of each component's scale")
        for op, component_level in zip(self.operators, self.levels_of(level), strict=True):
            op.check_levels(component_level)

    def check_size(self, level_max: float, height: int, width: int) -> None:
        for op, scale in zip(self.operators, self.scales, strict=True):
            op.check_size(level_max * scale, height, width)

    @property
    def label(self) -> str:
        return "+".join(op.label for op in self.operators)

    @property
    def level_unit(self) -> str:
        return "share of " + ", ".join(f"{op.label} {s:g}" for op, s in zip(self.operators, self.scales, strict=True))

    def to_dict(self) -> dict:
        return {"name": self.name, "operators": [op.to_dict() for op in self.operators], "scales": list(self.scales)}

    @classmethod
    def from_dict(cls, config: dict) -> Composite:
        return cls([operator_from_dict(c) for c in config["operators"]], config["scales"])


def _common(bases: list, neutral, axis: str, operators: list) -> str | None:
    """The one non-neutral basis among ``bases`` (``neutral`` if none); refuses two different ones."""
    found = sorted({b for b in bases if b != neutral})
    if len(found) > 1:
        names = ", ".join(f"{op.label} ({b or 'any'})" for op, b in zip(operators, bases, strict=True))
        raise ValueError(f"these operators do not commute: their {axis} bases differ ({names}); a composite needs one "
                         f"common basis")  # fmt: skip
    return found[0] if found else neutral


def _cast_terms(terms: dict, dtype: torch.dtype) -> dict:
    """Per-sample coefficients (alpha, beta) in the compute dtype; tensors of images pass unchanged."""
    return {k: (v.to(dtype) if k in ("alpha", "beta") and v is not None else v) for k, v in terms.items()}


_OPERATORS: dict[str, type[Operator]] = {}


def register_operator(cls: type[Operator]) -> type[Operator]:
    """Make ``cls`` (an Operator subclass with a unique ``name``) rebuildable by :func:`operator_from_dict`, so that
    checkpoints of processes using it load. Usable as a class decorator; registering a redefinition of the same class
    (same module and name, e.g. a notebook cell run again) replaces it."""
    if not (isinstance(cls, type) and issubclass(cls, Operator)):
        raise TypeError(f"register_operator takes an Operator subclass; got {cls!r}")
    known = _OPERATORS.get(cls.name, cls)
    if (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):  # a redefinition replaces
        raise ValueError(f"an operator named {cls.name!r} is already registered ({known.__qualname__})")
    _OPERATORS[cls.name] = cls
    return cls


for _builtin in (DCTBlur, Pixelate, Desaturate, Masking, Identity, Composite):
    register_operator(_builtin)

# The names the command lines take; composites join them with "+" (dct_blur+desaturate).
OPERATOR_NAMES = ("dct_blur", "pixelate", "desaturate", "masking", "identity")


def operator_from_dict(config: dict) -> Operator:
    """Rebuild an operator from :meth:`Operator.to_dict`."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in _OPERATORS:
        raise ValueError(f"unknown operator {name!r}; expected one of {sorted(_OPERATORS)} (a user's own operator "
                         "must be registered with softdiff.register_operator before loading)")  # fmt: skip
    return _OPERATORS[name].from_dict(config)


def operator_from_name(spec: str, height: int, width: int, *, blur_max: float | None = None) -> Operator:
    """The operator a command line names: one of :data:`OPERATOR_NAMES`, or several joined by "+" (a
    :class:`Composite` whose components reach their default largest level at s = 1; ``blur_max`` overrides the
    blur's σ_B,max in pixels)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"an operator name must be a non-empty string; got {spec!r}")
    names = spec.split("+")
    unknown = [n for n in names if n not in OPERATOR_NAMES]
    if unknown:
        raise ValueError(f"unknown operator {unknown[0]!r} in {spec!r}; expected {'|'.join(OPERATOR_NAMES)} or "
                         "several joined by + (e.g. dct_blur+desaturate)")  # fmt: skip
    if len(set(names)) != len(names):
        raise ValueError(f"{spec!r} names an operator twice")
    operators = [_OPERATORS[n]() for n in names]
    if len(operators) == 1:
        return operators[0]
    scales = [blur_max if blur_max is not None and isinstance(op, DCTBlur) else op.default_level_max(height, width)
              for op in operators]  # fmt: skip
    return Composite(operators, scales)


def default_levels_max(operator: Operator, height: int, width: int, *, blur_max: float | None = None) -> float:
    """level(1) of the default schedule: ``blur_max`` for a blur when given, else the operator's default."""
    if blur_max is not None and isinstance(operator, DCTBlur):
        return float(blur_max)
    return operator.default_level_max(height, width)


def model_range_float64(images: torch.Tensor) -> torch.Tensor:
    """A batch as float64 in [-1, 1] units (uint8 [0, 255] is rescaled; float is taken as already in them)."""
    if images.dtype == torch.uint8:
        return to_model_range(images, torch.float64)
    return images.to(torch.float64)


def basis_second_moment(operator: BasisOperator, images: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """E[z²] per channel and coefficient, z = the operator's basis coefficients of ``images`` ``[N, C, H, W]``
    (uint8 or float in [-1, 1]) -> float64 ``[C, H, W]``, accumulated in float64 on the images' device."""
    require_basis(operator, "the data's spectrum")
    total = torch.zeros(images.shape[1:], dtype=torch.float64, device=images.device)
    for part in images.split(batch_size):
        total += operator.to_basis(model_range_float64(part)).square().sum(dim=0)
    return total / images.shape[0]
