"""Public entry points of the fused op family: host-side checks of shapes, dtypes and devices, then one
``torch.library`` op (``softdiff::dct_filter``, ``softdiff::pixel_filter``) with fake (meta) and autograd
registrations, so autograd and ``torch.compile(fullgraph=True)`` see single ops.

Every hot path of softdiff is one call of :func:`dct_filter` (operators diagonal in the DCT basis) or
:func:`pixel_filter` (operators diagonal in the pixel basis); see :mod:`.reference` for the equations. Each op
runs the backend :func:`softdiff_kernels.backend` names for its device (compiled CUDA → Triton → reference), except
that float64 input always runs the reference, in float64.

The ops compute in float32 (float64 for float64 input) also inside ``torch.autocast``: an enclosing autocast
region would otherwise run the reference backend's matmuls in bfloat16/float16 (errors of the order of σ_min).

Gradients flow to ``a``, ``a2`` and ``c`` (the filter is symmetric in the pixel domain, so the adjoint of
y = C(a − a2) is C itself); filters, α, β and the noise are treated as constants.
"""

from __future__ import annotations

import torch

from .dispatch import backend, notice_fallback
from .reference import dct_filter_reference, pixel_filter_reference

Tensor = torch.Tensor
# Largest plane side each fused dct_filter takes; larger planes run the reference. The CUDA kernel keeps a plane in
# shared memory (128 KB at 128x128). Triton's chained tl.dot on 128x128 float32 tiles took ptxas 400 s to
# compile for sm_90 (on a 2-core CPU; 64x64: 22 s, 32x32: 3 s), a wait no first call should make.
MAX_FUSED_SIZE = {"cuda": 128, "triton": 64}
# The schemas csrc/fused_filter.cu registers too (under softdiff_C); tests/test_cuda_extension.py compares them.
DCT_FILTER_SCHEMA = (
    "(Tensor a, Tensor? rows, Tensor? cols, Tensor? table, Tensor? a2, Tensor? alpha, Tensor? c, "
    "Tensor? beta, Tensor? noise, Tensor? seeds, int stream) -> Tensor"
)
PIXEL_FILTER_SCHEMA = (
    "(Tensor a, Tensor table, Tensor? a2, Tensor? alpha, Tensor? c, Tensor? beta, Tensor? noise, "
    "Tensor? seeds, int stream) -> Tensor"
)

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _check_image_like(name: str, x: torch.Tensor | None, a: torch.Tensor) -> None:
    if x is None:
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.shape != a.shape:
        raise ValueError(f"{name} must have the shape of a, {tuple(a.shape)}; got {tuple(x.shape)}")
    if x.device != a.device:
        raise ValueError(f"{name} is on {x.device} but a is on {a.device}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor {FLOAT_DTYPES}; got {x.dtype}")


def _check_coefficients(name: str, x: torch.Tensor | None, a: torch.Tensor, shape: tuple) -> None:
    """``shape`` may hold None for a free size."""
    if x is None:
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.dim() != len(shape) or any(s is not None and s != n for s, n in zip(shape, x.shape, strict=True)):
        expected = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {expected}; got {tuple(x.shape)}")
    if x.device != a.device:
        raise ValueError(f"{name} is on {x.device} but a is on {a.device}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor; got {x.dtype}")


def _check_affine_terms(a, a2, alpha, c, beta, noise, seeds, stream) -> None:
    if a.dim() != 4:
        raise ValueError(f"a must be a 4-D tensor [B, C, H, W]; got shape {tuple(a.shape)}")
    _check_image_like("a", a, a)
    batch = a.shape[0]
    for name, x in (("a2", a2), ("c", c), ("noise", noise)):
        _check_image_like(name, x, a)
    if (alpha is None) != (c is None):
        raise ValueError("alpha and c come together: pass both or neither")
    if beta is None and (noise is not None or seeds is not None):
        raise ValueError("noise or seeds given without beta, the noise amplitude")
    if beta is not None and (noise is None) == (seeds is None):
        raise ValueError("beta needs exactly one source of noise: noise= (a tensor) or seeds= (int64 [B])")
    _check_coefficients("alpha", alpha, a, (batch,))
    _check_coefficients("beta", beta, a, (batch,))
    if seeds is not None:
        if not isinstance(seeds, torch.Tensor) or seeds.dtype != torch.int64 or seeds.shape != (batch,):
            raise ValueError(f"seeds must be an int64 tensor of shape [{batch}]")
        if seeds.device != a.device:
            raise ValueError(f"seeds is on {seeds.device} but a is on {a.device}")
    if not 0 <= int(stream) < 2**32:
        raise ValueError(f"stream must lie in [0, 2^32); got {stream}")


def dct_filter(
    a: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
    table: torch.Tensor | None = None,
    a2: torch.Tensor | None = None,
    alpha: torch.Tensor | None = None,
    c: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    seeds: torch.Tensor | None = None,
    stream: int = 0,
) -> torch.Tensor:
    """y_b = IDCT2(F_b ⊙ DCT2(a_b − a2_b)) + α_b c_b + β_b η_b.

    Args:
        a: ``[B, C, H, W]``; a2, c, noise: the same shape (each optional).
        rows, cols: ``[B, J, H]`` and ``[B, J, W]``, J ∈ {1, 2}: F_b = Σ_j rows[b, j] ⊗ cols[b, j].
        table: ``[B, H, W]``, a full filter, instead of rows and cols.
        alpha, beta: ``[B]`` scales of c and of the noise.
        noise: explicit η; or seeds: int64 ``[B]`` with ``stream``, η drawn as in :mod:`.random`.
    Returns:
        ``[B, C, H, W]`` in the dtype of ``a`` (computed in float32, or float64 for float64 input).
    """
    _check_affine_terms(a, a2, alpha, c, beta, noise, seeds, stream)
    batch, _, height, width = a.shape
    if table is not None:
        if rows is not None or cols is not None:
            raise ValueError("pass either table or rows and cols, not both")
        _check_coefficients("table", table, a, (batch, height, width))
    else:
        if rows is None or cols is None:
            raise ValueError("dct_filter needs a filter: rows and cols, or table")
        _check_coefficients("rows", rows, a, (batch, None, height))
        _check_coefficients("cols", cols, a, (batch, None, width))
        if rows.shape[1] != cols.shape[1] or rows.shape[1] not in (1, 2):
            raise ValueError(
                f"rows and cols must hold the same number J ∈ {{1, 2}} of terms; got "
                f"{rows.shape[1]} and {cols.shape[1]}"
            )
    return torch.ops.softdiff.dct_filter(a, rows, cols, table, a2, alpha, c, beta, noise, seeds, int(stream))


def pixel_filter(
    a: torch.Tensor,
    *,
    table: torch.Tensor,
    a2: torch.Tensor | None = None,
    alpha: torch.Tensor | None = None,
    c: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    seeds: torch.Tensor | None = None,
    stream: int = 0,
) -> torch.Tensor:
    """y_b = F_b ⊙ (a_b − a2_b) + α_b c_b + β_b η_b with ``table`` F ``[B, H, W]`` or ``[B, 1, 1]``.

    Arguments as in :func:`dct_filter`.
    """
    _check_affine_terms(a, a2, alpha, c, beta, noise, seeds, stream)
    batch, _, height, width = a.shape
    _check_coefficients("table", table, a, (batch, None, None))
    if table.shape[1:] not in ((height, width), (1, 1)):
        raise ValueError(
            f"table must have shape [{batch}, {height}, {width}] or [{batch}, 1, 1]; got {tuple(table.shape)}"
        )
    return torch.ops.softdiff.pixel_filter(a, table, a2, alpha, c, beta, noise, seeds, int(stream))


def fused_backend(a: Tensor) -> str:
    """The backend for this call: the device's, except that float64 always runs the reference (the fused kernels
    compute in float32; float64 is for exactness checks, where float64 arithmetic is the point)."""
    name = backend(a.device)
    return "torch" if a.dtype == torch.float64 else name


# --- torch.library registration ------------------------------------------------------------------------------


@torch.library.custom_op("softdiff::dct_filter", mutates_args=(), schema=DCT_FILTER_SCHEMA)
def _dct_filter_op(
    a: Tensor,
    rows: Tensor | None,
    cols: Tensor | None,
    table: Tensor | None,
    a2: Tensor | None,
    alpha: Tensor | None,
    c: Tensor | None,
    beta: Tensor | None,
    noise: Tensor | None,
    seeds: Tensor | None,
    stream: int,
) -> Tensor:
    terms = dict(rows=rows, cols=cols, table=table, a2=a2, alpha=alpha, c=c, beta=beta, noise=noise, seeds=seeds,
                 stream=stream)  # fmt: skip
    name = fused_backend(a)
    with torch.autocast(a.device.type, enabled=False):  # float32 also inside an enclosing autocast region
        if name in ("cuda", "triton"):
            limit = MAX_FUSED_SIZE[name]
            if max(a.shape[-2:]) <= limit:
                if name == "cuda":
                    return torch.ops.softdiff_C.dct_filter(a, rows, cols, table, a2, alpha, c, beta, noise, seeds,
                                                           stream)  # fmt: skip
                from .triton_dct_filter import dct_filter_triton

                return dct_filter_triton(a, **terms)
            notice_fallback("dct_filter", f"planes larger than {limit}x{limit} have no fused {name} kernel")
        return in_layout_of(a, dct_filter_reference(a, **terms))


def in_layout_of(a: Tensor, y: Tensor) -> Tensor:
    """``y`` in the memory layout every backend gives its output, that of ``torch.empty_like(a)``: a's strides when a
    is dense (channels-last stays channels-last), else contiguous."""
    if a.is_contiguous():  # the common case, without allocating a tensor to compare strides with
        return y.contiguous()
    out = torch.empty_like(a)
    return y if out.stride() == y.stride() else out.copy_(y)


@_dct_filter_op.register_fake
def _(a, rows, cols, table, a2, alpha, c, beta, noise, seeds, stream):
    return torch.empty_like(a)


@torch.library.custom_op("softdiff::pixel_filter", mutates_args=(), schema=PIXEL_FILTER_SCHEMA)
def _pixel_filter_op(
    a: Tensor,
    table: Tensor,
    a2: Tensor | None,
    alpha: Tensor | None,
    c: Tensor | None,
    beta: Tensor | None,
    noise: Tensor | None,
    seeds: Tensor | None,
    stream: int,
) -> Tensor:
    terms = dict(table=table, a2=a2, alpha=alpha, c=c, beta=beta, noise=noise, seeds=seeds, stream=stream)
    name = fused_backend(a)
    with torch.autocast(a.device.type, enabled=False):  # float32 also inside an enclosing autocast region
        if name == "cuda":
            return torch.ops.softdiff_C.pixel_filter(a, table, a2, alpha, c, beta, noise, seeds, stream)
        if name == "triton":
            from .triton_pixel_filter import pixel_filter_triton

            return pixel_filter_triton(a, **terms)
        return in_layout_of(a, pixel_filter_reference(a, **terms))


@_pixel_filter_op.register_fake
def _(a, table, a2, alpha, c, beta, noise, seeds, stream):
    return torch.empty_like(a)


def _save_linear_context(ctx, a2: Tensor | None, c: Tensor | None, alpha: Tensor | None, filters) -> None:
    ctx.a2_dtype = a2.dtype if a2 is not None else None
    ctx.c_dtype = c.dtype if c is not None else None
    ctx.save_for_backward(alpha, *filters)


def _affine_gradients(ctx, grad: Tensor, grad_a: Tensor | None, alpha: Tensor | None, a2_index: int,
                      c_index: int) -> tuple:  # fmt: skip
    """Gradients for a2 (−C grad) and c (α grad), in their dtypes; None where no gradient is asked for."""
    needs = ctx.needs_input_grad
    grad_a2 = (-grad_a).to(ctx.a2_dtype) if ctx.a2_dtype is not None and needs[a2_index] else None
    grad_c = None
    if ctx.c_dtype is not None and needs[c_index]:
        grad_c = (alpha.to(grad.dtype).view(-1, 1, 1, 1) * grad).to(ctx.c_dtype)
    return grad_a2, grad_c


def _dct_filter_setup(ctx, inputs, output):
    _, rows, cols, table, a2, alpha, c, *_ = inputs
    _save_linear_context(ctx, a2, c, alpha, (rows, cols, table))


def _dct_filter_backward(ctx, grad):
    alpha, rows, cols, table = ctx.saved_tensors
    grad_a = None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[4]:  # a or a2: C is symmetric, its adjoint is itself
        grad_a = torch.ops.softdiff.dct_filter(grad, rows, cols, table, None, None, None, None, None, None, 0)
    grad_a2, grad_c = _affine_gradients(ctx, grad, grad_a, alpha, a2_index=4, c_index=6)
    grad_a = grad_a if ctx.needs_input_grad[0] else None
    return grad_a, None, None, None, grad_a2, None, grad_c, None, None, None, None


def _pixel_filter_setup(ctx, inputs, output):
    _, table, a2, alpha, c, *_ = inputs
    _save_linear_context(ctx, a2, c, alpha, (table,))


def _pixel_filter_backward(ctx, grad):
    alpha, table = ctx.saved_tensors
    grad_a = None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[2]:  # a or a2
        grad_a = torch.ops.softdiff.pixel_filter(grad, table, None, None, None, None, None, None, 0)
    grad_a2, grad_c = _affine_gradients(ctx, grad, grad_a, alpha, a2_index=2, c_index=4)
    grad_a = grad_a if ctx.needs_input_grad[0] else None
    return grad_a, None, grad_a2, None, grad_c, None, None, None, None


_dct_filter_op.register_autograd(_dct_filter_backward, setup_context=_dct_filter_setup)
_pixel_filter_op.register_autograd(_pixel_filter_backward, setup_context=_pixel_filter_setup)
