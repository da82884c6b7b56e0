"""The one dtype rule of softdiff: float64 computes in float64, every other floating dtype (float32, float16,
bfloat16) computes in float32. Half-precision inputs keep their storage dtype; only the arithmetic is widened."""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other dtype computes in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
