"""The counter-based generator: Philox4x32-10 known answers, Triton equality, statistics, independence."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.stats
import torch

import softdiff_kernels as sk


@pytest.mark.parametrize(
    ("counter", "key", "expected"),
    [  # Random123's kat_vectors for philox4x32_10
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox_known_answers(counter, key, expected):
    words = sk.philox4x32(*(torch.tensor(v, dtype=torch.int64) for v in counter + key))
    assert tuple(int(w) for w in words) == expected


def test_philox_matches_triton_randint4x():
    """Our Philox is the one Triton kernels call: same words for the same (seed, counter)."""
    pytest.importorskip("triton")
    script = textwrap.dedent(
        """
        import torch, triton, triton.language as tl
        import softdiff_kernels as sk

        @triton.jit
        def kernel(out_ptr, seed, n: tl.constexpr):
            offsets = tl.arange(0, n)
            a, b, c, d = tl.randint4x(seed, offsets)
            tl.store(out_ptr + offsets * 4 + 0, a)
            tl.store(out_ptr + offsets * 4 + 1, b)
            tl.store(out_ptr + offsets * 4 + 2, c)
            tl.store(out_ptr + offsets * 4 + 3, d)

        seed = 0x1234_5678_9ABC
        out = torch.empty(64 * 4, dtype=torch.int32)
        kernel[(1,)](out, seed, 64)
        triton_words = out.view(64, 4).to(torch.int64) & 0xFFFFFFFF
        zero = torch.zeros((), dtype=torch.int64)
        key = torch.tensor(seed)
        ours = sk.philox4x32(torch.arange(64), zero, zero, zero, key & 0xFFFFFFFF, key >> 32)
        assert torch.equal(torch.stack(ours, dim=1), triton_words), "Philox words differ from Triton's"
        print("match")
        """
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "match" in result.stdout, result.stderr[-3000:]


def test_seeded_normal_is_repeatable_and_depends_only_on_its_own_seed():
    a = sk.seeded_normal(torch.tensor([3, 11, 7]), (3, 5, 6), stream=2)
    b = sk.seeded_normal(torch.tensor([11]), (3, 5, 6), stream=2)
    c = sk.seeded_normal(torch.tensor([5, 9, 3, 11]), (3, 5, 6), stream=2)
    assert torch.equal(a[1], b[0]) and torch.equal(a[0], c[2]) and torch.equal(a[1], c[3])
    assert not torch.equal(a[0], a[2])  # other seed, other noise
    other_stream = sk.seeded_normal(torch.tensor([3]), (3, 5, 6), stream=3)
    assert not torch.allclose(a[0], other_stream[0])


@pytest.mark.parametrize("width", [4, 5, 7, 32])
def test_seeded_normal_layout_is_row_quads(width):
    """Pixel (c, h, w) takes word w % 4 of Philox at counter (c*H + h) * ceil(W/4) + w // 4: the documented
    layout, which is what makes the noise independent of kernel tiling."""
    seeds = torch.tensor([2**40 + 17])
    eta = sk.seeded_normal(seeds, (2, 3, width), stream=9)
    c, h, w = 1, 2, width - 1
    quad = (c * 3 + h) * -(-width // 4) + w // 4
    zero = torch.zeros((), dtype=torch.int64)
    words = sk.philox4x32(torch.tensor(quad), zero + 9, zero, zero, seeds & 0xFFFFFFFF, seeds >> 32)
    u = [((wd if wd < 2**31 else 0xFFFFFFFF - wd) * 4.6566127342e-10) for wd in (int(x) for x in words)]
    pair = (max(u[0], 1e-7), u[1]) if w % 4 < 2 else (max(u[2], 1e-7), u[3])
    radius, angle = np.sqrt(-2 * np.log(pair[0])), 2 * np.pi * pair[1]
    expected = radius * (np.cos(angle) if w % 2 == 0 else np.sin(angle))
    assert abs(float(eta[0, c, h, w]) - expected) < 1e-5


def test_seeded_normal_statistics():
    eta = sk.seeded_normal(torch.arange(400), (3, 16, 16), stream=1).double()
    flat = eta.flatten()
    n = flat.numel()
    assert abs(flat.mean().item()) < 4 / n**0.5
    assert abs(flat.std().item() - 1) < 4 * (0.5 / n) ** 0.5
    assert scipy.stats.kstest(flat[:50000].numpy(), "norm").pvalue > 1e-3
    # Uncorrelated across samples, planes and pixels (incl. the four members of one quad).
    per_pixel = eta.flatten(1)  # [400, 768]
    corr = torch.corrcoef(per_pixel.T)
    off_diagonal = corr - torch.eye(corr.shape[0], dtype=corr.dtype)
    assert off_diagonal.abs().max().item() < 0.25  # 4.6 standard errors at 400 samples, 290k pairs
    assert abs(off_diagonal.mean().item()) < 1e-3
    across_streams = sk.seeded_normal(torch.arange(400), (3, 16, 16), stream=2).double().flatten()
    assert abs(torch.corrcoef(torch.stack([flat, across_streams]))[0, 1].item()) < 4 / n**0.5


def test_seeded_normal_rejects_bad_arguments():
    with pytest.raises(ValueError, match="seeds must be an int64"):
        sk.seeded_normal(torch.tensor([1.0]), (1, 4, 4))
    with pytest.raises(ValueError, match="stream"):
        sk.seeded_normal(torch.tensor([1]), (1, 4, 4), stream=-1)
