import numpy as np
import pytest
import scipy.fft
import torch

import softdiff_kernels as sk


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
