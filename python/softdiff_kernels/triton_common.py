"""What the Triton kernels share: the noise-source switch, the in-kernel Philox normal tile, and the host-side
helpers that turn optional tensors and Python ints into launch arguments."""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from triton.language.random import philox

# Noise sources. A kernel may read only globals made with tl.constexpr (Triton >= 3.0 refuses plain ints when it
# compiles for a GPU; its interpreter does not check); the launchers pass their .value.
NOISE_NONE, NOISE_TENSOR, NOISE_SEEDS = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)


@triton.jit
def seeded_normal_tile(seed, stream, plane, row_start, H, W, BH: tl.constexpr, BW: tl.constexpr):
    """η for rows row_start .. row_start+BH-1 and columns 0..BW-1 of one plane: [BH, BW] float32
    (entries past H, W are junk). BW must be a multiple of 4."""
    BQ: tl.constexpr = BW // 4
    h = row_start + tl.arange(0, BH)[:, None]
    q = tl.arange(0, BQ)[None, :]
    quads_per_row = (W + 3) // 4
    counter = ((plane * H + h) * quads_per_row + q).to(tl.uint32)
    zero = counter * 0
    w0, w1, w2, w3 = philox(seed, counter, zero + stream, zero, zero)
    n0, n1 = tl.random.pair_uniform_to_normal(tl.random.uint_to_uniform_float(w0), tl.random.uint_to_uniform_float(w1))
    n2, n3 = tl.random.pair_uniform_to_normal(tl.random.uint_to_uniform_float(w2), tl.random.uint_to_uniform_float(w3))
    # Interleave so that pixel 4q + k takes n_k: join puts the new axis last, hence (n0, n2), (n1, n3).
    return tl.reshape(tl.join(tl.join(n0, n2), tl.join(n1, n3)), (BH, BW))


def strides_or_zeros(x: torch.Tensor | None, n: int) -> tuple[int, ...]:
    """The strides of an optional tensor of rank n (zeros when absent; the kernel never reads it then)."""
    return tuple(x.stride()) if x is not None else (0,) * n


def per_sample(x: torch.Tensor | None) -> torch.Tensor | None:
    """α, β (as float32) or seeds, ``[B]``, contiguous: the kernels read element b at ``ptr + b``."""
    if x is None:
        return None
    return (x if x.dtype == torch.int64 else x.to(torch.float32)).contiguous()


def absent_as(placeholder: torch.Tensor):
    """x -> x, or ``placeholder`` for an absent tensor (never read: the matching constexpr switch is off)."""
    return lambda x: x if x is not None else placeholder


def stream_word(stream: int) -> int:
    """The stream index as the signed 32-bit integer with the same bits: Triton passes Python ints below 2^31 as
    int32 and larger ones as int64, which would not combine with the uint32 Philox counters."""
    stream = int(stream)
    return stream - 2**32 if stream >= 2**31 else stream


def launch_device(a: torch.Tensor):
    """Triton launches on the current CUDA device and its current stream: make that a's device (a tensor on
    cuda:1 while cuda:0 is current would otherwise be read by a kernel running on cuda:0)."""
    return torch.cuda.device(a.device) if a.is_cuda else contextlib.nullcontext()
