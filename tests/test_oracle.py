"""Exact denoisers: Tweedie's formula for the empirical oracle, the dense posterior for the Gaussian one."""

import numpy as np
import pytest
import torch

import softdiff as sd
import softdiff_kernels as sk
from tests.conftest import blur_reference


def make_process(operator, levels):
    return sd.SoftDiffusionProcess(operator, noise=sd.GeometricNoise(0.05, 2.0), levels=levels)


PROCESSES = {
    "dct_blur": lambda: make_process(sd.DCTBlur(), sd.LevelSchedule.sin2(2.5)),
    "masking": lambda: make_process(sd.Masking(seed=1), sd.LevelSchedule.from_levels([0.0, 0.9])),
    "identity": lambda: make_process(sd.Identity(), sd.LevelSchedule.zero()),
}


@pytest.mark.parametrize("name", list(PROCESSES))
def test_empirical_denoiser_satisfies_tweedie(name, generator):
    """(C_t D(x_t) − x_t)/σ_t² = ∇ log p_t(x_t), p_t = (1/N) Σ_i N(C_t x_i, σ_t² I), via autograd."""
    proc = PROCESSES[name]()
    data = torch.rand(7, 2, 5, 6, generator=generator, dtype=torch.float64) * 2 - 1
    t = torch.tensor([0.15, 0.4, 0.7, 0.95], dtype=torch.float64)
    x_t = proc.corrupt(data[[0, 3, 5, 6]], t, noise=torch.randn(4, 2, 5, 6, generator=generator, dtype=torch.float64))
    denoised = sd.oracle.EmpiricalDenoiser(data, proc, chunk_size=3)(x_t, t)
    score = (proc.apply(denoised, t) - x_t) / proc.sigma(t).view(-1, 1, 1, 1) ** 2

    # log p_t from scratch: means C_t x_i built with scipy (blur) or explicit masks, then log-sum-exp.
    means = []
    for b in range(4):
        repeated = data.numpy()
        if name == "dct_blur":
            means.append(blur_reference(repeated, np.full(7, float(proc.level(t[b : b + 1])))))
        elif name == "masking":
            mask = proc.apply(torch.ones(1, 2, 5, 6, dtype=torch.float64), t[b : b + 1]).numpy()
            means.append(mask * repeated)
        else:
            means.append(repeated)
    means = torch.from_numpy(np.stack(means))  # [B, N, C, H, W]
    x = x_t.clone().requires_grad_(True)
    sigma = proc.sigma(t).view(-1, 1)
    log_density = torch.logsumexp(-((x[:, None] - means) ** 2).flatten(2).sum(-1) / (2 * sigma**2), dim=1).sum()
    (gradient,) = torch.autograd.grad(log_density, x)
    torch.testing.assert_close(score, gradient, rtol=1e-9, atol=1e-9)


def test_empirical_denoiser_chunking_and_float32_storage(generator):
    proc = PROCESSES["dct_blur"]()
    data = torch.rand(50, 3, 8, 8, generator=generator, dtype=torch.float64)
    x_t = proc.corrupt(
        data[:4], torch.full((4,), 0.5), noise=torch.randn(4, 3, 8, 8, generator=generator, dtype=torch.float64)
    )
    t = torch.full((4,), 0.5, dtype=torch.float64)
    whole = sd.oracle.EmpiricalDenoiser(data, proc, chunk_size=1000)(x_t, t)
    torch.testing.assert_close(sd.oracle.EmpiricalDenoiser(data, proc, chunk_size=7)(x_t, t), whole)
    stored_float32 = sd.oracle.EmpiricalDenoiser(data.float(), proc)(x_t.float(), t.float())
    assert stored_float32.dtype == torch.float32
    torch.testing.assert_close(stored_float32.double(), whole, rtol=1e-4, atol=1e-4)


def test_empirical_denoiser_at_low_noise_returns_the_nearest_reference(generator):
    proc = make_process(sd.DCTBlur(), sd.LevelSchedule.sin2(2.0))
    data = torch.rand(20, 3, 8, 8, generator=generator, dtype=torch.float64)
    out = sd.oracle.EmpiricalDenoiser(data, proc)(data[[4, 11]] + 1e-3, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(out, data[[4, 11]], rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", ["dct_blur", "identity"])
def test_gaussian_denoiser_matches_the_dense_posterior_mean(name, generator):
    """E[x_0 | x_t] = μ + Σ Cᵀ (C Σ Cᵀ + σ² I)⁻¹ (x_t − C μ) with dense Σ = Mᵀ diag(λ) M (one channel)."""
    proc = PROCESSES[name]()
    height, width = 4, 5
    variance = torch.rand(1, height, width, generator=generator, dtype=torch.float64) + 0.1
    mean = torch.randn(1, height, width, generator=generator, dtype=torch.float64)
    oracle = sd.oracle.GaussianDenoiser(variance, proc, mean=mean)
    x_t = torch.randn(3, 1, height, width, generator=generator, dtype=torch.float64)
    t = torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64)
    out = oracle(x_t, t)
    m = torch.kron(sk.dct_matrix(height, dtype=torch.float64), sk.dct_matrix(width, dtype=torch.float64))
    covariance = m.T @ torch.diag(variance.flatten()) @ m
    for b in range(3):
        basis = torch.eye(height * width, dtype=torch.float64).view(-1, 1, height, width)
        c = proc.apply(basis, t[b].expand(height * width)).flatten(1).T  # columns: C e_j
        sigma2 = proc.sigma(t[b : b + 1]).item() ** 2
        gain = (
            covariance
            @ c.T
            @ torch.linalg.inv(c @ covariance @ c.T + sigma2 * torch.eye(height * width, dtype=torch.float64))
        )
        expected = mean.flatten() + gain @ (x_t[b].flatten() - c @ mean.flatten())
        torch.testing.assert_close(out[b].flatten(), expected, rtol=1e-10, atol=1e-10)


def test_gaussian_data_draws_have_the_stated_covariance():
    proc = PROCESSES["dct_blur"]()
    oracle = sd.oracle.GaussianDenoiser.power_law(proc, (2, 6, 6), pixel_variance=0.25)
    assert abs(oracle.variance.mean().item() - 0.25) < 1e-12
    x = oracle.sample_data(20000, generator=torch.Generator().manual_seed(0))
    assert abs(x.var(dim=0).mean().item() - 0.25) < 0.01
    relative = (sk.dct2(x).var(dim=0) / oracle.variance - 1).abs().max().item()
    assert relative < 0.08


def test_relative_w2_of_exact_and_scaled_draws():
    proc = PROCESSES["dct_blur"]()
    oracle = sd.oracle.GaussianDenoiser.power_law(proc, (1, 8, 8))
    exact = oracle.sample_data(20000, generator=torch.Generator().manual_seed(1))
    assert oracle.relative_w2(exact) < 0.02  # Monte Carlo floor only
    assert abs(oracle.relative_w2(1.5 * exact) - 0.5) < 0.02  # √v = 1.5 √λ
    assert oracle.relative_w2(exact + 0.3) > 0.1  # a mean bias counts


def test_oracles_refuse_an_operator_known_only_by_apply():
    class Shift(sd.Operator):
        name = "shift"

        def apply(self, x, level):
            return torch.roll(x, 1, dims=-1)

    proc = make_process(Shift(), sd.LevelSchedule.constant(1.0))
    with pytest.raises(TypeError, match="has only apply"):
        sd.oracle.GaussianDenoiser(torch.ones(1, 4, 4), proc)
    with pytest.raises(TypeError, match="has only apply"):
        sd.oracle.EmpiricalDenoiser(torch.ones(2, 1, 4, 4), proc)
