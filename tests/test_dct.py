import subprocess
import sys

import numpy as np
import pytest
import scipy.fft
import torch

import softdiff_kernels as sk
from softdiff_kernels.dct import split_tf32, three_pass_product
from softdiff_kernels.reference import dct_filter_reference
from tests.conftest import requires_cuda


@pytest.mark.parametrize("n", [1, 2, 5, 8, 13, 32, 64])
def test_dct_matrix_is_orthonormal_and_matches_scipy(n):
    m = sk.dct_matrix(n, dtype=torch.float64)
    np.testing.assert_allclose((m @ m.T).numpy(), np.eye(n), atol=1e-13)
    expected = scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0)
    np.testing.assert_allclose(m.numpy(), expected, atol=1e-13)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 1, 7, 12), (3, 2, 5, 3), (1, 3, 32, 17)])
def test_dct2_matches_scipy_dctn_and_inverts(shape, generator):
    x = torch.randn(shape, dtype=torch.float64, generator=generator)
    expected = scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(sk.dct2(x).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(sk.idct2(sk.dct2(x)).numpy(), x.numpy(), atol=1e-12)


def test_dct_matrix_rejects_empty_size():
    with pytest.raises(ValueError, match="DCT size"):
        sk.dct_matrix(0)


def tf32_rounded(x: torch.Tensor) -> torch.Tensor:
    """float32 ``x`` rounded to nearest at TF32's 10 explicit mantissa bits (what a TF32 tensor core reads)."""
    bits = x.to(torch.float32).contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def tf32_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A TF32 matmul emulated on the CPU: inputs rounded to TF32, products accumulated exactly, result float32."""
    return (tf32_rounded(a).double() @ tf32_rounded(b).double()).float()


def test_split_tf32_is_exact_and_its_high_part_is_tf32(generator):
    x = torch.randn(4096, generator=generator) * torch.logspace(-6, 6, 4096)
    high, low = split_tf32(x)
    assert torch.equal(high + low, x)
    assert torch.equal(tf32_rounded(high), high)  # nothing to round: the high part is a TF32 number
    assert bool((low.abs() <= x.abs() * 2.0**-10).all())


def test_three_pass_product_keeps_float32_precision_where_one_tf32_product_loses_it(generator):
    m = sk.dct_matrix(64)
    x = torch.randn(3, 64, 48, generator=generator)
    exact = m.double() @ x.double()
    scale = exact.abs().max()
    one_pass = (tf32_product(m, x).double() - exact).abs().max() / scale
    three_pass = (three_pass_product(m, x, product=tf32_product).double() - exact).abs().max() / scale
    assert one_pass > 1e-4  # TF32 alone: about 2^-11 relative
    assert three_pass < 2e-6, f"three TF32 passes: relative error {three_pass:.2e}"


TF32_SWITCHES = {  # each run in a fresh process: torch refuses to read flags set through both of its APIs
    "torch.backends.cuda.matmul.allow_tf32 = True": True,
    "torch.backends.cuda.matmul.fp32_precision = 'tf32'": True,
    "torch.set_float32_matmul_precision('high')": True,
    "torch.backends.fp32_precision = 'tf32'; torch.backends.cuda.matmul.fp32_precision = 'ieee'": False,
    "pass": False,
}


def test_tf32_matmul_enabled_reads_every_way_of_switching_tf32():
    runs = {
        switch: subprocess.Popen(
            [sys.executable, "-c", f"import torch\n{switch}\nfrom softdiff_kernels.dct import tf32_matmul_enabled\n"
             "print(tf32_matmul_enabled())"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for switch in TF32_SWITCHES
    }  # fmt: skip
    for switch, run in runs.items():
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert out.strip() == str(TF32_SWITCHES[switch]), switch


@requires_cuda
@pytest.mark.parametrize("separable", [True, False])
def test_reference_kernel_keeps_float32_precision_with_tf32_enabled_on_cuda(separable, generator):
    a = torch.randn(4, 3, 96, 80, generator=generator)
    rows = torch.rand(4, 1 if separable else 2, 96, generator=generator)
    cols = torch.rand(4, 1 if separable else 2, 80, generator=generator)
    exact = dct_filter_reference(a.double(), rows=rows.double(), cols=cols.double())
    m = sk.dct_matrix(96, device="cuda")
    previous = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    try:
        y = dct_filter_reference(a.cuda(), rows=rows.cuda(), cols=cols.cuda()).cpu()
        plain = (m @ a[0, 0].cuda()).cpu()
    finally:
        torch.backends.cuda.matmul.fp32_precision = previous
    plain_exact = (m.double() @ a[0, 0].cuda().double()).cpu()
    if (plain.double() - plain_exact).abs().max() < 1e-5 * plain_exact.abs().max():
        pytest.skip("this GPU's float32 matmul did not use TF32: nothing to pin")
    error = (y.double() - exact).abs().max() / exact.abs().max()
    assert error < 1e-5, f"relative error {error:.2e} with TF32 enabled (float32 is ~1e-7, TF32 ~1e-3)"
