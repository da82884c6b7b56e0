"""Low-level fused ops of softdiff: tensors and per-sample coefficients, nothing about diffusion.

    dct_filter    y = IDCT2(F ⊙ DCT2(a − a2)) + α c + β η     (F separable, two-term separable, or a table)
    pixel_filter  y = F ⊙ (a − a2) + α c + β η
    seeded_normal η from (seed, stream, element) by Philox4x32-10, identical on every backend
    dct_matrix, dct2, idct2   the orthonormal DCT-II

This release holds the PyTorch references (``softdiff_kernels.reference``); the Triton and CUDA kernels
implement the same contract.
"""

from .dct import dct2, dct_matrix, idct2
from .ops import dct_filter, pixel_filter
from .random import philox4x32, seeded_normal

__all__ = ["dct2", "dct_filter", "dct_matrix", "idct2", "philox4x32", "pixel_filter", "seeded_normal"]
