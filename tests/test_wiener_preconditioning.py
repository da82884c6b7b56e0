"""precond="wiener": EDM's scalings per coefficient of the operator's basis, from the data's second moment."""

import numpy as np
import pytest
import scipy.fft
import torch

import softdiff as sd
from softdiff.denoiser import data_second_moment


def blur_process(noise=(0.02, 5.0), blur_max=3.0):
    levels = sd.LevelSchedule.sin2(blur_max)
    return sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(*noise), levels=levels)


def zero_net(x, label):
    return torch.zeros_like(x)


def random_moment(generator, shape=(3, 6, 5)):
    return 0.05 + torch.rand(shape, generator=generator, dtype=torch.float64)


def test_identity_with_a_flat_spectrum_is_exactly_edm(generator):
    proc = sd.SoftDiffusionProcess(sd.Identity(), noise=sd.GeometricNoise(0.02, 80.0), levels=sd.LevelSchedule.zero())
    weight = torch.randn(3, 3, 3, 3, generator=generator, dtype=torch.float64)

    def net(x, label):
        return torch.nn.functional.conv2d(x, weight, padding=1) + 1e-3 * label.view(-1, 1, 1, 1)

    x_t = torch.randn(4, 3, 6, 5, generator=generator, dtype=torch.float64)
    t = torch.tensor([0.0, 0.2, 0.7, 1.0], dtype=torch.float64)
    edm = sd.Denoiser(net, proc)(x_t, t)
    wiener = sd.Denoiser(net, proc, precond="wiener", second_moment=torch.full((3, 6, 5), 0.25))(x_t, t)
    torch.testing.assert_close(wiener, edm, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("moment_dims", [3, 2])
def test_skip_path_is_the_exact_gaussian_posterior_mean(moment_dims, generator):
    """With F = 0 the denoiser is the best linear estimate, which for zero-mean Gaussian data whose DCT coefficients
    are independent with variances s_f is E[x_0 | x_t] exactly (softdiff.oracle.GaussianDenoiser)."""
    proc = blur_process()
    moment = random_moment(generator)
    if moment_dims == 2:
        moment = moment[0]
    x_t = torch.randn(5, 3, 6, 5, generator=generator, dtype=torch.float64)
    t = torch.tensor([0.0, 0.1, 0.4, 0.8, 1.0], dtype=torch.float64)
    wiener = sd.Denoiser(zero_net, proc, precond="wiener", second_moment=moment)(x_t, t)
    oracle = sd.oracle.GaussianDenoiser(moment.expand(3, 6, 5).clone(), proc)(x_t, t)
    torch.testing.assert_close(wiener, oracle, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_scalings_match_the_equations(dtype, generator):
    """D = Bᵀ[c_skip,f (B x_t)_f + c_out,f (B F)_f] with the per-coefficient formulas, against scipy's DCT."""
    proc = blur_process()
    moment = random_moment(generator)
    seen = {}

    def net(x, label):
        seen["input"] = x
        return torch.tanh(x) + 0.5

    x_t = torch.randn(3, 3, 6, 5, generator=generator, dtype=torch.float64)
    t = torch.tensor([0.05, 0.5, 0.9], dtype=torch.float64)
    out = sd.Denoiser(net, proc, precond="wiener", second_moment=moment)(x_t.to(dtype), t.to(dtype))

    sigma = proc.sigma(t).numpy()[:, None, None, None]
    level = proc.level(t).numpy()
    omega_h = np.pi * np.arange(6) / 6
    omega_w = np.pi * np.arange(5) / 5
    d = np.exp(-(level[:, None, None, None] ** 2) * (omega_h[:, None] ** 2 + omega_w[None, :] ** 2) / 2)
    s = moment.numpy()[None]
    c_skip = d * s / (d**2 * s + sigma**2)
    c_out = np.sqrt(s * sigma**2 / (d**2 * s + sigma**2))
    c_in = 1 / np.sqrt((d**2 * s).mean(axis=(1, 2, 3)) + sigma[:, 0, 0, 0] ** 2)
    net_input = c_in[:, None, None, None] * x_t.numpy()
    dct = scipy.fft.dctn(x_t.numpy(), axes=(-2, -1), norm="ortho")
    dct_out = scipy.fft.dctn(np.tanh(net_input) + 0.5, axes=(-2, -1), norm="ortho")
    expected = scipy.fft.idctn(c_skip * dct + c_out * dct_out, axes=(-2, -1), norm="ortho")
    tolerance = {torch.float64: 1e-10, torch.float32: 2e-5}[dtype]
    assert out.dtype == dtype
    np.testing.assert_allclose(seen["input"].double().numpy(), net_input, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=tolerance, atol=tolerance)


def test_sigma2_soft_loss_is_the_noise_prediction_loss(generator):
    """λ = 1/σ²: λ ‖C(D − x_0)‖² = ‖ε̂ − η‖² with ε̂ = (x_t − C D) / σ, whatever D is."""
    proc = blur_process()
    moment = random_moment(generator)
    x0 = torch.rand(4, 3, 6, 5, generator=generator, dtype=torch.float64) * 2 - 1
    noise = torch.randn(4, 3, 6, 5, generator=generator, dtype=torch.float64)
    t = torch.tensor([0.01, 0.3, 0.6, 1.0], dtype=torch.float64)
    denoiser = sd.Denoiser(lambda x, label: torch.sin(x), proc, precond="wiener", second_moment=moment)
    loss = sd.soft_score_matching_loss(denoiser, x0, proc, weighting="sigma2", t=t, noise=noise, reduction="none")
    x_t = proc.corrupt(x0, t, noise=noise)
    predicted_noise = (x_t - proc.apply(denoiser(x_t, t), t)) / proc.sigma(t).view(-1, 1, 1, 1)
    torch.testing.assert_close(loss, (predicted_noise - noise).square().mean(dim=(1, 2, 3)))


def test_data_second_moment_matches_scipy(generator):
    images = torch.rand(7, 3, 6, 5, generator=generator) * 2 - 1
    expected = (scipy.fft.dctn(images.double().numpy(), axes=(-2, -1), norm="ortho") ** 2).mean(axis=0)
    moment = data_second_moment(sd.DCTBlur(), images, batch_size=3)  # several batches
    assert moment.dtype == torch.float64 and moment.shape == (3, 6, 5)
    np.testing.assert_allclose(moment.numpy(), np.maximum(expected, 1e-6 * expected.mean()), rtol=1e-6)


def test_data_second_moment_is_floored_above_zero():
    images = torch.ones(4, 1, 4, 4)  # only the DC coefficient is non-zero
    moment = data_second_moment(sd.DCTBlur(), images)
    assert bool((moment > 0).all())
    assert moment[0, 0, 0] == pytest.approx(16.0)


def test_bad_second_moments_are_rejected(generator):
    proc = blur_process()
    with pytest.raises(ValueError, match="needs second_moment"):
        sd.Denoiser(zero_net, proc, precond="wiener")
    with pytest.raises(ValueError, match="finite, positive"):
        sd.Denoiser(zero_net, proc, precond="wiener", second_moment=torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="finite, positive"):
        sd.Denoiser(zero_net, proc, precond="wiener", second_moment=torch.full((4,), 0.25))
    with pytest.raises(ValueError, match="finite, positive"):
        sd.Denoiser(zero_net, proc, precond="wiener", second_moment=torch.full((3, 4, 4), float("nan")))
    denoiser = sd.Denoiser(zero_net, proc, precond="wiener", second_moment=torch.full((3, 4, 4), 0.25))
    with pytest.raises(ValueError, match=r"second_moment is \(4, 4\) but the images are \(8, 8\)"):
        denoiser(torch.randn(2, 3, 8, 8, generator=generator), torch.tensor([0.2, 0.4]))
    with pytest.raises(ValueError, match="second_moment has 3 channels but x_t has 1"):
        denoiser(torch.randn(2, 1, 4, 4, generator=generator), torch.tensor([0.2, 0.4]))
