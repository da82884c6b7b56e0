"""Samplers: the step equations and their limits (DESIGN §1.3), the driver, and convergence on the exact
Gaussian oracle."""

import numpy as np
import pytest
import scipy.fft
import torch

import softdiff as sd
import softdiff_kernels as sk
from softdiff.spectra import DataSpectrum
from tests.conftest import assert_close, blur_reference

SHAPE = (3, 2, 7, 9)


def random_state(generator):
    return tuple(torch.randn(SHAPE, generator=generator, dtype=torch.float64) for _ in range(3))


def ve_process():
    return sd.SoftDiffusionProcess(sd.Identity(), noise=sd.GeometricNoise(0.02, 50.0), levels=sd.LevelSchedule.zero())


T = torch.tensor([0.9, 0.5, 0.31], dtype=torch.float64)
T_NEXT = torch.tensor([0.8, 0.45, 0.0], dtype=torch.float64)


def test_momentum_with_identity_is_the_ve_reverse_diffusion_step(generator):
    """x' = x + (σ² − σ'²) ∇log p(x) + √(σ² − σ'²) η with ∇log p = (x̂_0 − x)/σ² (Song et al. 2021)."""
    x_t, x0_hat, noise = random_state(generator)
    proc = ve_process()
    sigma, sigma_next = (proc.sigma(t).view(-1, 1, 1, 1) for t in (T, T_NEXT))
    score = (x0_hat - x_t) / sigma**2
    expected = x_t + (sigma**2 - sigma_next**2) * score + (sigma**2 - sigma_next**2).sqrt() * noise
    assert_close(sd.momentum_step(proc, x_t, x0_hat, T, T_NEXT, noise), expected, torch.float64, scale=100)


def test_momentum_ode_with_identity_is_ddim(generator):
    """Euler on dx/dσ = (x − x̂_0)/σ: x' = x + (σ' − σ)(x − x̂_0)/σ (DDIM for VE)."""
    x_t, x0_hat, _ = random_state(generator)
    proc = ve_process()
    sigma, sigma_next = (proc.sigma(t).view(-1, 1, 1, 1) for t in (T, T_NEXT))
    expected = x_t + (sigma_next - sigma) * (x_t - x0_hat) / sigma
    assert_close(sd.momentum_ode_step(proc, x_t, x0_hat, T, T_NEXT), expected, torch.float64, scale=100)


def test_momentum_with_constant_noise_is_cold_diffusion_improved_step(generator):
    """σ' = σ: x' = x_t + (C' − C) x̂_0 (Bansal et al. 2022, Algorithm 2), with no noise added."""
    x_t, x0_hat, noise = random_state(generator)
    schedule = sd.LevelSchedule.sin2(4.0)
    proc = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.3, 0.3), levels=schedule)
    blur = lambda t: blur_reference(x0_hat.numpy(), schedule(t).numpy())  # noqa: E731
    expected = x_t.numpy() + blur(T_NEXT) - blur(T)
    assert_close(sd.momentum_step(proc, x_t, x0_hat, T, T_NEXT, noise), expected, torch.float64, scale=10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_steps_with_blur_match_the_equations(dtype, generator):
    x_t, x0_hat, noise = (v.to(dtype) for v in random_state(generator))
    schedule = sd.LevelSchedule.from_levels([0.0, 1.0, 3.0, 6.0])
    proc = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.05, 5.0), levels=schedule)
    s, s_next = (proc.sigma(t).view(-1, 1, 1, 1).numpy() for t in (T, T_NEXT))
    c = blur_reference(x0_hat.double().numpy(), schedule(T).numpy())
    c_next = blur_reference(x0_hat.double().numpy(), schedule(T_NEXT).numpy())
    x, eta = x_t.double().numpy(), noise.double().numpy()
    # ancestral: its posterior term in the DCT basis, from a random data spectrum v
    height, width = x.shape[-2:]
    variance = torch.rand(x.shape[1:], generator=generator, dtype=torch.float64) + 0.05
    proc.data_spectrum = DataSpectrum(torch.zeros_like(variance), variance, count=1)
    xi = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(dtype)
    omega = (np.pi * np.arange(height) / height)[:, None] ** 2 + (np.pi * np.arange(width) / width)[None] ** 2
    d, d_next = (np.exp(-0.5 * schedule(v).numpy()[:, None, None, None] ** 2 * omega) for v in (T, T_NEXT))
    r2 = (s_next / s) ** 2
    posterior = variance.numpy() * s**2 / (d**2 * variance.numpy() + s**2)
    extra = scipy.fft.idctn((d_next - r2 * d) * np.sqrt(posterior) * xi.double().numpy(), type=2, norm="ortho",
                            axes=(-2, -1))  # fmt: skip
    expected = {
        "naive": c_next + s_next * eta,
        "momentum": c_next + r2 * (x - c) + np.sqrt(s**2 - s_next**2) * eta,
        "momentum_ode": c_next + (s_next / s) * (x - c),
        "ancestral": c_next + r2 * (x - c) + s_next * np.sqrt(1 - r2) * eta + extra,
    }
    for name, step in sd.samplers.STEPS.items():
        out = step(proc, x_t, x0_hat, T, T_NEXT, (noise, xi) if name == "ancestral" else noise)
        assert out.dtype == dtype
        assert_close(out, expected[name], dtype, scale=10)


def test_step_with_seeds_uses_the_counter_based_noise(generator):
    x_t, x0_hat, _ = random_state(generator)
    proc = ve_process()
    seeds = torch.tensor([5, 6, 7])
    eta = sk.seeded_normal(seeds, SHAPE[1:], stream=4).double()
    expected = sd.momentum_step(proc, x_t, x0_hat, T, T_NEXT, eta)
    assert_close(
        sd.momentum_step(proc, x_t, x0_hat, T, T_NEXT, seeds=seeds, stream=4), expected, torch.float64, scale=100
    )


class RecordingDenoiser:
    """A deterministic, x-dependent denoiser that records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t):
        self.calls.append((x.clone(), t.clone()))
        return torch.tanh(x) * 0.5 + 0.1 * t.view(-1, 1, 1, 1)


def unit_spectrum(shape):
    """A data spectrum of zero means and unit variances (what the ancestral sampler reads)."""
    return DataSpectrum(torch.zeros(shape), torch.ones(shape), count=1)


@pytest.mark.parametrize("sampler", sd.samplers.SAMPLERS)
def test_sample_runs_nfe_calls_on_the_shared_grid_and_returns_last_prediction(sampler):
    proc = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 10.0), levels=sd.LevelSchedule.sin2(2.0),
                                   data_spectrum=unit_spectrum((1, 6, 6)))  # fmt: skip
    denoiser = RecordingDenoiser()
    out = sd.sample(denoiser, proc, (2, 1, 6, 6), steps=5, sampler=sampler, seeds=[1, 2])
    assert len(denoiser.calls) == 5
    np.testing.assert_allclose([float(t[0]) for _, t in denoiser.calls], [1.0, 0.8, 0.6, 0.4, 0.2], atol=1e-7)
    last_x, last_t = denoiser.calls[-1]
    assert torch.equal(out, torch.tanh(last_x) * 0.5 + 0.1 * last_t.view(-1, 1, 1, 1))
    first_x = denoiser.calls[0][0]
    assert torch.equal(first_x, proc.sample_prior((1, 6, 6), [1, 2]))


@pytest.mark.parametrize("sampler", sd.samplers.SAMPLERS)
def test_a_sample_depends_only_on_its_seed(sampler):
    proc = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 10.0), levels=sd.LevelSchedule.sin2(2.0),
                                   data_spectrum=unit_spectrum((3, 5, 7)))  # fmt: skip
    denoiser = RecordingDenoiser()
    batch = sd.sample(denoiser, proc, (4, 3, 5, 7), steps=6, sampler=sampler, seeds=[9, 4, 100, 7])
    alone = sd.sample(denoiser, proc, (1, 3, 5, 7), steps=6, sampler=sampler, seeds=[100])
    torch.testing.assert_close(batch[2:3], alone, rtol=1e-6, atol=1e-6)
    again = sd.sample(denoiser, proc, (2, 3, 5, 7), steps=6, sampler=sampler, seeds=[7, 9])
    torch.testing.assert_close(batch[[3, 0]], again, rtol=1e-6, atol=1e-6)
    if sampler != "momentum_ode":
        assert not torch.allclose(batch[0], batch[1])


def test_sample_from_a_given_image_restores_on_the_scaled_grid(generator, capsys):
    proc = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 10.0), levels=sd.LevelSchedule.sin2(2.0))
    x_start = torch.randn(2, 1, 6, 6, generator=generator)
    denoiser = RecordingDenoiser()
    sd.sample(denoiser, proc, (2, 1, 6, 6), steps=4, x_start=x_start, t_start=0.4, seeds=[0, 1], progress=True)
    assert "4/4" in capsys.readouterr().err  # the progress bar counts the last network call too
    assert torch.equal(denoiser.calls[0][0], x_start)
    np.testing.assert_allclose([float(t[0]) for _, t in denoiser.calls], [0.4, 0.3, 0.2, 0.1], atol=1e-7)
    for t_start in (np.float32(0.4), torch.tensor(0.4)):  # NumPy and one-element tensor scalars are numbers too
        denoiser = RecordingDenoiser()
        sd.sample(denoiser, proc, (2, 1, 6, 6), steps=4, x_start=x_start, t_start=t_start, seeds=[0, 1])
        np.testing.assert_allclose([float(t[0]) for _, t in denoiser.calls], [0.4, 0.3, 0.2, 0.1], atol=1e-7)


def test_sample_below_t_1_needs_a_start_and_takes_numpy_seeds(generator):
    proc = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 10.0), levels=sd.LevelSchedule.sin2(2.0))
    with pytest.raises(ValueError, match=r"t_start = 0\.3 needs x_start"):  # p_1 is the law at t = 1, not at 0.3
        sd.sample(RecordingDenoiser(), proc, (2, 1, 6, 6), steps=3, t_start=0.3, seeds=[1, 2])
    listed = sd.sample(RecordingDenoiser(), proc, (2, 1, 6, 6), steps=3, seeds=[5, 6])
    assert torch.equal(sd.sample(RecordingDenoiser(), proc, (2, 1, 6, 6), steps=3, seeds=np.array([5, 6])), listed)
    assert torch.equal(sd.sample(RecordingDenoiser(), proc, (2, 1, 6, 6), steps=3, seeds=[np.int64(5), 6]), listed)


def test_sample_default_seeds_follow_torch_manual_seed():
    proc = ve_process()
    torch.manual_seed(3)
    a = sd.sample(RecordingDenoiser(), proc, (2, 1, 4, 4), steps=3)
    torch.manual_seed(3)
    assert torch.equal(a, sd.sample(RecordingDenoiser(), proc, (2, 1, 4, 4), steps=3))


@pytest.mark.parametrize("operator", ["dct_blur", "identity"])
def test_momentum_converges_on_the_gaussian_oracle_and_naive_stays_biased(operator):
    if operator == "dct_blur":
        proc = sd.SoftDiffusionProcess(
            sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 20.0), levels=sd.LevelSchedule.sin2(0.36 * 8)
        )
    else:
        proc = sd.SoftDiffusionProcess(
            sd.Identity(), noise=sd.GeometricNoise(0.02, 20.0), levels=sd.LevelSchedule.zero()
        )
    oracle = sd.oracle.GaussianDenoiser.power_law(proc, (1, 8, 8))
    n = 3000  # Monte Carlo floor of the relative W2 ≈ 0.013
    w2 = {}
    for sampler in ("momentum", "naive"):
        for nfe in (10, 40, 160):
            x = sd.sample(oracle, proc, (n, 1, 8, 8), steps=nfe, sampler=sampler, seeds=range(n), dtype=torch.float64)
            w2[sampler, nfe] = oracle.relative_w2(x)
    assert w2["momentum", 10] > w2["momentum", 40] > w2["momentum", 160]
    assert w2["momentum", 160] < 0.05
    assert min(w2["naive", nfe] for nfe in (10, 40, 160)) > 0.2
