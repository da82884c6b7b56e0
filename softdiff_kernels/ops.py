"""Public entry points of the fused op family, with host-side checks of shapes, dtypes and devices.

Every hot path of softdiff is one call of :func:`dct_filter` (operators diagonal in the DCT basis) or
:func:`pixel_filter` (operators diagonal in the pixel basis); see :mod:`.reference` for the equations.
"""

from __future__ import annotations

import torch

from .reference import dct_filter_reference, pixel_filter_reference

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
    return dct_filter_reference(
        a,
        rows=rows,
        cols=cols,
        table=table,
        a2=a2,
        alpha=alpha,
        c=c,
        beta=beta,
        noise=noise,
        seeds=seeds,
        stream=int(stream),
    )


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
    return pixel_filter_reference(
        a, table=table, a2=a2, alpha=alpha, c=c, beta=beta, noise=noise, seeds=seeds, stream=int(stream)
    )
