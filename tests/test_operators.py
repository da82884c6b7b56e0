"""Operators against scipy references: symmetry, spectrum, identity at level 0, separability, semigroup."""

import numpy as np
import pytest
import scipy.fft
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import softdiff as sd
from tests.conftest import assert_close, blur_reference, dense_operator, requires_cuda

SIZES = [(8, 8), (5, 7), (6, 13), (16, 9), (1, 4)]


def blur_matrix(level: float, height: int, width: int) -> np.ndarray:
    return dense_operator(lambda x: sd.DCTBlur().apply(x, level), height, width)


def axis_blur_matrix(level: float, n: int) -> np.ndarray:
    """A = Mᵀ diag(d) M from scipy's DCT matrix."""
    m = scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0)
    d = np.exp(-0.5 * level**2 * (np.pi * np.arange(n) / n) ** 2)
    return m.T @ np.diag(d) @ m


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize("level", [0.3, 1.7, 6.0])
def test_blur_is_symmetric_separable_with_spectrum_in_unit_interval(height, width, level):
    c = blur_matrix(level, height, width)
    np.testing.assert_allclose(c, c.T, atol=1e-13)
    spectrum = sd.DCTBlur().spectrum(torch.tensor([level], dtype=torch.float64), height, width).flatten().numpy()
    assert spectrum.min() > 0 and spectrum.max() <= 1  # analytically in (0, 1]; tiny ones underflow below
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(c)), np.sort(spectrum), atol=1e-12)
    separable = np.kron(axis_blur_matrix(level, height), axis_blur_matrix(level, width))
    np.testing.assert_allclose(c, separable, atol=1e-13)


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_blur_level_zero_is_identity(height, width):
    np.testing.assert_allclose(blur_matrix(0.0, height, width), np.eye(height * width), atol=1e-13)


@pytest.mark.parametrize(("a", "b"), [(0.5, 1.2), (2.0, 3.5), (0.0, 4.0)])
def test_blur_semigroup(a, b):
    height, width = 7, 10
    np.testing.assert_allclose(
        blur_matrix(a, height, width) @ blur_matrix(b, height, width),
        blur_matrix(np.hypot(a, b), height, width),
        atol=1e-12,
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 3, 8, 8), (5, 1, 7, 12), (2, 2, 33, 17)])
def test_blur_per_sample_levels_match_scipy(dtype, shape, generator):
    x = torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1
    levels = torch.rand(shape[0], generator=generator, dtype=torch.float64) * 5
    x_in = x.to(dtype)
    out = sd.DCTBlur().apply(x_in, levels)
    assert out.dtype == dtype and out.shape == x.shape
    # Reference from the rounded input: what remains is the op's own error plus one output rounding.
    assert_close(out, blur_reference(x_in.double().numpy(), levels.numpy()), dtype)


def test_blur_of_noncontiguous_input(generator):
    x = torch.randn(4, 6, 9, 3, generator=generator, dtype=torch.float64).permute(0, 3, 1, 2)
    assert not x.is_contiguous()
    levels = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    assert_close(sd.DCTBlur().apply(x, levels), blur_reference(x.contiguous().numpy(), levels.numpy()), torch.float64)


def test_identity_is_identity(generator):
    x = torch.randn(2, 3, 5, 6, generator=generator)
    assert torch.equal(sd.Identity().apply(x, torch.tensor([0.0, 7.0])), x)


def test_masking_masks_a_growing_fixed_set_of_pixels(generator):
    op = sd.Masking(seed=3)
    x = torch.rand(1, 3, 10, 12, generator=generator, dtype=torch.float64) + 0.5  # nonzero everywhere
    previous = None
    for level in np.linspace(0, 1, 11):
        out = op.apply(x, float(level))
        kept = out[0] != 0
        assert torch.equal(kept[0], kept[1]) and torch.equal(kept[0], kept[2])  # same mask per channel
        assert torch.equal(out[0][kept], x[0][kept])  # kept pixels unchanged
        assert abs((~kept[0]).double().mean().item() - level) <= 1 / 120 + 1e-12
        if previous is not None:
            assert bool((~kept[0])[previous].all())  # once masked, stays masked
        previous = ~kept[0]
    assert torch.equal(op.apply(x, 0.0), x)
    assert torch.equal(sd.Masking(seed=3).apply(x, 0.5), op.apply(x, 0.5))
    assert not torch.equal(sd.Masking(seed=4).apply(x, 0.5), op.apply(x, 0.5))


def test_masking_is_diagonal_with_binary_spectrum():
    c = dense_operator(lambda x: sd.Masking(seed=1).apply(x, 0.4), 6, 5)
    np.testing.assert_array_equal(c, np.diag(np.diag(c)))
    assert set(np.unique(np.diag(c))) <= {0.0, 1.0}


def test_combine_two_terms_matches_reference(generator):
    """Σ_j w_j C(l_j)(a − a2) + α c + β η: the form of every sampler step."""
    x, a2, c, noise = (torch.randn(3, 2, 7, 9, generator=generator, dtype=torch.float64) for _ in range(4))
    l1, l2 = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64), torch.tensor([1.5, 2.5, 3.0], dtype=torch.float64)
    w1, w2 = torch.tensor([1.0, 0.5, -2.0], dtype=torch.float64), torch.tensor([-0.3, 0.7, 1.1], dtype=torch.float64)
    alpha, beta = torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    out = sd.DCTBlur().combine(x, [l1, l2], [w1, w2], a2=a2, alpha=alpha, c=c, beta=beta, noise=noise)
    diff = (x - a2).numpy()
    expected = (
        w1.view(-1, 1, 1, 1).numpy() * blur_reference(diff, l1.numpy())
        + w2.view(-1, 1, 1, 1).numpy() * blur_reference(diff, l2.numpy())
        + alpha.view(-1, 1, 1, 1).numpy() * c.numpy()
        + beta.view(-1, 1, 1, 1).numpy() * noise.numpy()
    )
    assert_close(out, expected, torch.float64, scale=10)


def test_operator_config_round_trip():
    for op in (sd.DCTBlur(), sd.Identity(), sd.Masking(seed=5)):
        assert sd.operator_from_dict(op.to_dict()) == op
    with pytest.raises(ValueError, match="unknown operator"):
        sd.operator_from_dict({"name": "motion_blur"})


@requires_cuda
@pytest.mark.parametrize("op", [sd.DCTBlur(), sd.Identity(), sd.Masking(seed=2)])
def test_operators_on_cuda_match_cpu(op, generator):
    x = torch.rand(4, 3, 12, 10, generator=generator)
    level = torch.tensor([0.0, 0.2, 0.5, 0.9])
    assert_close(op.apply(x.cuda(), level.cuda()).cpu(), op.apply(x.double(), level.double()).numpy(), torch.float32)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 4),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
)
def test_blur_matches_scipy_for_any_size(batch, channels, height, width, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=generator, dtype=torch.float64)
    levels = torch.rand(batch, generator=generator, dtype=torch.float64) * 0.5 * max(height, width)
    assert_close(sd.DCTBlur().apply(x, levels), blur_reference(x.numpy(), levels.numpy()), torch.float64, scale=10)
    assert_close(
        sd.DCTBlur().apply(x.float(), levels.float()),
        blur_reference(x.numpy(), levels.float().numpy()),
        torch.float32,
        scale=4,
    )
