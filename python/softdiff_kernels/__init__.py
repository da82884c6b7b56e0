"""Low-level fused ops of softdiff: tensors and per-sample coefficients, nothing about diffusion.

    dct_filter    y = IDCT2(F ⊙ DCT2(a − a2)) + α c + β η     (F separable, two-term separable, or a table)
    pixel_filter  y = F ⊙ (a − a2) + α c + β η
    seeded_normal η from (seed, stream, element) by Philox4x32-10, identical on every backend
    dct_matrix, dct2, idct2   the orthonormal DCT-II
    separable_transform       rows @ x @ colsᵀ at pinned float32 precision (any separable basis)
    compute_dtype the dtype rule: float64 stays, every other dtype computes in float32

Implementations: Triton kernels (``triton_dct_filter``, ``triton_pixel_filter``) and the PyTorch references
(``reference``), chosen per call by :func:`backend` (``python -m softdiff_kernels`` explains the choice).
"""

from .dct import dct2, dct_matrix, idct2, separable_transform
from .dispatch import backend, global_noise
from .dtypes import compute_dtype
from .ops import dct_filter, pixel_filter
from .random import philox4x32, seeded_normal

__all__ = [
    "backend",
    "compute_dtype",
    "dct2",
    "dct_filter",
    "dct_matrix",
    "global_noise",
    "idct2",
    "philox4x32",
    "pixel_filter",
    "seeded_normal",
    "separable_transform",
]
