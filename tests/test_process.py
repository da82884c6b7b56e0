"""Schedules, the forward process x_t = C_t x_0 + σ_t η, and the prior p_1."""

import math

import numpy as np
import pytest
import torch

import softdiff as sd
import softdiff_kernels as sk
from tests.conftest import assert_close, blur_reference


def make_process(**kwargs):
    defaults = dict(noise=sd.GeometricNoise(0.02, 100.0), levels=sd.LevelSchedule.sin2(3.0))
    return sd.SoftDiffusionProcess(sd.DCTBlur(), **{**defaults, **kwargs})


def test_geometric_noise():
    noise = sd.GeometricNoise(0.02, 100.0)
    t = torch.tensor([0.0, 0.5, 1.0, 0.25], dtype=torch.float64)
    expected = 0.02 * (100.0 / 0.02) ** t.numpy()
    np.testing.assert_allclose(noise(t).numpy(), expected, rtol=1e-14)
    assert noise(t.float()).dtype == torch.float32
    assert torch.equal(sd.GeometricNoise(0.3, 0.3)(t), torch.full_like(t, 0.3))


@pytest.mark.parametrize("args", [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0), (float("nan"), 1.0), (1.0, float("inf"))])
def test_geometric_noise_rejects_bad_values(args):
    with pytest.raises(ValueError, match="sigma_m"):
        sd.GeometricNoise(*args)


def test_level_schedules():
    t = torch.tensor([0.0, 0.1, 0.5, 0.75, 1.0], dtype=torch.float64)
    np.testing.assert_allclose(
        sd.LevelSchedule.sin2(11.5)(t).numpy(), 11.5 * np.sin(np.pi * t.numpy() / 2) ** 2, rtol=1e-14
    )
    piecewise = sd.LevelSchedule.from_levels([0.0, 1.0, 4.0])  # knots at t = 0, 0.5, 1
    np.testing.assert_allclose(piecewise(t).numpy(), [0.0, 0.2, 1.0, 2.5, 4.0], rtol=1e-14)
    assert torch.equal(sd.LevelSchedule.constant(2.0)(t), torch.full_like(t, 2.0))
    assert torch.equal(sd.LevelSchedule.zero()(t), torch.zeros_like(t))
    assert sd.LevelSchedule.from_levels(torch.tensor([0.0, 3.0])).level_max == 3.0
    for schedule in (sd.LevelSchedule.sin2(2.0), piecewise):
        assert sd.LevelSchedule.from_dict(schedule.to_dict())(t).equal(schedule(t))


@pytest.mark.parametrize(
    ("levels", "match"),
    [
        ([], "non-empty"),
        ([0.0, -1.0], ">= 0"),
        ([0.0, 2.0, 1.0], "non-decreasing"),
        ([0.0, float("nan")], "finite"),
        ([3.0, 5.0], r"first level \(t = 0\) must be 0"),
    ],
)
def test_level_schedule_rejects_bad_levels(levels, match):
    with pytest.raises(ValueError, match=match):
        sd.LevelSchedule.from_levels(levels)
    with pytest.raises(ValueError, match=match):  # a checkpoint's stored schedule passes the same checks
        sd.LevelSchedule.from_dict({"kind": "piecewise_linear", "levels": levels})


@pytest.mark.parametrize("t", [-0.1, 1.5, float("nan")])
def test_schedules_reject_times_outside_unit_interval(t):
    for schedule in (sd.GeometricNoise(0.1, 1.0), sd.LevelSchedule.sin2(1.0)):
        with pytest.raises(ValueError, match="t "):
            schedule(torch.tensor([0.5, t]))


def test_schedules_take_scalar_times_and_compute_half_precision_times_in_float32():
    noise, levels = sd.GeometricNoise(0.02, 100.0), sd.LevelSchedule.sin2(11.5)
    assert noise(0.5).shape == () and noise(0.5).item() == pytest.approx(math.sqrt(2.0), rel=1e-6)
    assert levels(torch.tensor(0.5)).item() == pytest.approx(5.75, rel=1e-6)
    half = torch.tensor([0.25, 0.5], dtype=torch.bfloat16)  # exact in bfloat16; σ there is not
    assert noise(half).dtype == torch.float32
    torch.testing.assert_close(noise(half), noise(half.float()), rtol=0, atol=0)


def test_python_float_times_keep_float64_precision_in_a_float64_pipeline(generator):
    """t = 0.3 as a Python float gives the same float64 result as t = 0.3 as a float64 tensor (it used to pass
    through float32 first: an error of ~1e-7 relative in σ_t); float32 images keep float32 times."""
    proc = make_process()
    x0, noise, x_t = (torch.randn(2, 3, 9, 12, generator=generator, dtype=torch.float64) for _ in range(3))
    t, t_next = (torch.full((2,), v, dtype=torch.float64) for v in (0.3, 0.299))
    assert proc.corrupt(x0, 0.3, noise=noise).equal(proc.corrupt(x0, t, noise=noise))
    assert proc.apply(x0, 0.3).equal(proc.apply(x0, t))
    stepped = sd.samplers.momentum_step(proc, x_t, x0, 0.3, 0.299, noise)
    assert stepped.equal(sd.samplers.momentum_step(proc, x_t, x0, t, t_next, noise))
    assert proc.corrupt(x0.float(), 0.3, noise=noise.float()).dtype == torch.float32


def test_gaussian_prior_mean_of_another_shape_is_named():
    proc = make_process(prior=sd.GaussianPrior(torch.zeros(1, 4, 4)))
    with pytest.raises(ValueError, match=r"prior's mean has shape \(1, 4, 4\).*\(1, 5, 6\)"):
        proc.sample_prior((1, 5, 6), [0])


def test_process_rejects_levels_outside_operator_domain():
    with pytest.raises(ValueError, match="fraction of pixels masked"):
        sd.SoftDiffusionProcess(sd.Masking(), noise=sd.GeometricNoise(0.1, 1.0), levels=sd.LevelSchedule.sin2(2.0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_corrupt_with_explicit_noise_is_exact(dtype, generator):
    proc = make_process()
    x0 = (torch.rand(4, 3, 9, 12, generator=generator, dtype=torch.float64) * 2 - 1).to(dtype)
    noise = torch.randn(4, 3, 9, 12, generator=generator, dtype=torch.float64).to(dtype)
    t = torch.tensor([0.05, 0.3, 0.6, 0.9], dtype=torch.float64)
    out = proc.corrupt(x0, t, noise=noise)
    assert out.dtype == dtype
    sigma = (0.02 * 5000.0 ** t.numpy())[:, None, None, None]
    levels = 3.0 * np.sin(np.pi * t.numpy() / 2) ** 2
    expected = blur_reference(x0.double().numpy(), levels) + sigma * noise.double().numpy()
    assert_close(out, expected, dtype, scale=float(sigma.max()))
    assert_close(proc.apply(x0, t), blur_reference(x0.double().numpy(), levels), dtype)


def test_corrupt_with_seeds_is_repeatable_and_has_the_right_law(generator):
    proc = make_process(noise=sd.GeometricNoise(0.5, 0.5))
    x0 = torch.rand(1, 2, 6, 5, generator=generator, dtype=torch.float64).expand(3000, -1, -1, -1)
    t = torch.full((3000,), 0.7, dtype=torch.float64)
    a = proc.corrupt(x0, t, seed=10)
    assert torch.equal(a, proc.corrupt(x0, t, seed=10))
    assert torch.equal(a[5:8], proc.corrupt(x0[:3], t[:3], seed=[15, 16, 17]))  # seed s: rows use s, s+1, ...
    assert torch.equal(a[5:8], proc.corrupt(x0[:3], t[:3], seed=15))
    assert not torch.equal(a[:3], proc.corrupt(x0[:3], t[:3], seed=11))
    mean = proc.apply(x0[:1], t[:1])[0]
    standard_error = 0.5 / math.sqrt(3000)
    assert (a.mean(0) - mean).abs().max().item() < 5 * standard_error
    assert abs(a.std(0).mean().item() - 0.5) < 0.01


def test_corrupt_without_noise_or_seed_uses_torch_generator(generator):
    proc = make_process()
    x0 = torch.rand(2, 1, 8, 8, generator=generator)
    torch.manual_seed(0)
    a = proc.corrupt(x0, 0.5)
    torch.manual_seed(0)
    assert torch.equal(a, proc.corrupt(x0, 0.5))


def test_gaussian_prior_law():
    proc = make_process(noise=sd.GeometricNoise(0.02, 3.0))
    x1 = proc.sample_prior((2, 6, 7), range(4000), dtype=torch.float64)
    assert x1.shape == (4000, 2, 6, 7)
    assert x1.mean().abs().item() < 5 * 3.0 / math.sqrt(x1.numel())
    assert abs(x1.std().item() - 3.0) < 0.02
    assert torch.equal(x1[7:9], proc.sample_prior((2, 6, 7), [7, 8], dtype=torch.float64))


def test_gaussian_prior_with_mean_blurs_it(generator):
    mean = torch.rand(1, 5, 6, generator=generator, dtype=torch.float64)
    proc = make_process(noise=sd.GeometricNoise(0.02, 0.5), prior=sd.GaussianPrior(mean))
    x1 = proc.sample_prior((1, 5, 6), range(3000), dtype=torch.float64)
    expected = blur_reference(mean[None].numpy(), np.array([3.0]))[0]
    assert np.abs(x1.mean(0).numpy() - expected).max() < 5 * 0.5 / math.sqrt(3000)


def make_correlated_dct_data(n, generator):
    """Images whose DCT coefficients have a known mean and channel covariance per frequency."""
    channels, height, width = 3, 6, 5
    mean = torch.randn(channels, height, width, generator=generator, dtype=torch.float64)
    mixing = torch.randn(height, width, channels, channels, generator=generator, dtype=torch.float64)
    covariance = mixing @ mixing.transpose(-1, -2)
    xi = torch.randn(n, channels, height, width, generator=generator, dtype=torch.float64)
    z = mean + torch.einsum("hwij,bjhw->bihw", mixing, xi)
    return sk.idct2(z), mean, covariance


def test_dct_gaussian_prior_fit_and_sample(generator):
    proc = make_process(noise=sd.GeometricNoise(0.02, 0.1), levels=sd.LevelSchedule.sin2(1.0))
    data, mean, covariance = make_correlated_dct_data(20000, generator)
    prior = proc.fit_prior(data, batch_size=3000)
    d = sd.DCTBlur().spectrum(torch.ones(1, dtype=torch.float64), 6, 5)[0]  # [H, W]
    np.testing.assert_allclose(prior.mean.numpy(), (d * mean).numpy(), atol=0.05)
    expected_cov = d[..., None, None] ** 2 * covariance
    scale = expected_cov.abs().amax(dim=(-1, -2), keepdim=True)
    assert ((prior.covariance - expected_cov).abs() / scale).max().item() < 0.08
    x1 = proc.sample_prior((3, 6, 5), range(20000), dtype=torch.float64)
    z1 = sk.dct2(x1).permute(2, 3, 0, 1)  # [H, W, N, C]
    centred = z1 - z1.mean(dim=2, keepdim=True)
    sample_cov = centred.transpose(-1, -2) @ centred / (z1.shape[2] - 1)
    total = expected_cov + 0.1**2 * torch.eye(3, dtype=torch.float64)
    assert ((sample_cov - total).abs() / total.abs().amax(dim=(-1, -2), keepdim=True)).max().item() < 0.1
    # Serialisable: the rebuilt process draws the same x_1.
    rebuilt = sd.SoftDiffusionProcess.from_dict(proc.to_dict())
    assert torch.equal(rebuilt.sample_prior((3, 6, 5), [4, 5], dtype=torch.float64), x1[4:6])


def test_dct_gaussian_prior_refuses_another_process(generator):
    proc = make_process()
    proc.fit_prior(torch.rand(10, 1, 4, 4, generator=generator))
    other = make_process(noise=sd.GeometricNoise(0.02, 50.0), prior=proc.prior)
    with pytest.raises(ValueError, match="fit it again"):
        other.sample_prior((1, 4, 4), [0])
    with pytest.raises(ValueError, match="fitted on images of shape"):
        proc.sample_prior((1, 5, 4), [0])


def test_fit_prior_rejects_bad_data(generator):
    proc = make_process()
    with pytest.raises(ValueError, match="at least 2"):
        proc.fit_prior(torch.rand(1, 1, 4, 4, generator=generator))
    bad = torch.rand(4, 1, 4, 4, generator=generator)
    bad[2, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="data batch 0 contains NaN"):
        proc.fit_prior(bad)
    with pytest.raises(ValueError, match="data batch 1 has images of shape"):
        proc.fit_prior([torch.rand(3, 1, 4, 4), torch.rand(3, 1, 5, 4)])
