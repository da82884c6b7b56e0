"""Soft Score Matching and the preconditioned Denoiser."""

import math

import numpy as np
import pytest
import torch

import softdiff as sd
from tests.conftest import blur_reference


def make_process(operator=None, levels=None):
    return sd.SoftDiffusionProcess(
        operator or sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 80.0), levels=levels or sd.LevelSchedule.sin2(3.0)
    )


def affine_denoiser(x_t, t):
    return 0.3 * x_t + 0.2 * torch.sin(3 * x_t) + t.view(-1, 1, 1, 1).to(x_t.dtype)


@pytest.mark.parametrize("weighting", ["edm", "sigma2", "none"])
@pytest.mark.parametrize("loss", ["soft", "cold"])
def test_loss_value_matches_the_equation(weighting, loss, generator):
    proc = make_process()
    x0 = torch.rand(5, 3, 8, 7, generator=generator, dtype=torch.float64) * 2 - 1
    noise = torch.randn(5, 3, 8, 7, generator=generator, dtype=torch.float64)
    t = torch.tensor([0.01, 0.2, 0.5, 0.8, 1.0], dtype=torch.float64)
    value = sd.soft_score_matching_loss(
        affine_denoiser, x0, proc, weighting=weighting, loss=loss, t=t, noise=noise, reduction="none"
    )
    sigma = 0.02 * 4000.0 ** t.numpy()
    levels = 3.0 * np.sin(np.pi * t.numpy() / 2) ** 2
    x_t = blur_reference(x0.numpy(), levels) + sigma[:, None, None, None] * noise.numpy()
    error = affine_denoiser(torch.from_numpy(x_t), t).numpy() - x0.numpy()
    if loss == "soft":
        error = blur_reference(error, levels)
    weight = {"edm": (sigma**2 + 0.25) / (sigma * 0.5) ** 2, "sigma2": sigma**-2.0, "none": np.ones(5)}[weighting]
    expected = weight * (error**2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(value.numpy(), expected, rtol=2e-6)
    mean = sd.soft_score_matching_loss(affine_denoiser, x0, proc, weighting=weighting, loss=loss, t=t, noise=noise)
    assert mean.dim() == 0 and math.isclose(mean.item(), expected.mean(), rel_tol=2e-6)


def test_soft_loss_ignores_what_the_corruption_removes_and_cold_loss_does_not(generator):
    """With masking, C_t kills masked pixels: changing the prediction there leaves the soft loss unchanged."""
    proc = make_process(sd.Masking(seed=0), sd.LevelSchedule.from_levels([0.0, 1.0]))
    x0 = torch.rand(2, 3, 6, 6, generator=generator, dtype=torch.float64)
    t = torch.tensor([0.5, 0.5], dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    masked = proc.apply(torch.ones_like(x0), t) == 0
    perturbed = lambda x_t, t: affine_denoiser(x_t, t) + 5.0 * masked  # noqa: E731
    soft = [sd.soft_score_matching_loss(d, x0, proc, t=t, noise=noise) for d in (affine_denoiser, perturbed)]
    cold = [
        sd.soft_score_matching_loss(d, x0, proc, t=t, noise=noise, loss="cold") for d in (affine_denoiser, perturbed)
    ]
    assert torch.equal(soft[0], soft[1]) and cold[1] > cold[0] + 1


@pytest.mark.parametrize("ahead", [0.05, 0.3])
def test_loss_ahead_measures_the_error_through_the_operator_at_t_minus_ahead(ahead, generator):
    """λ(t) ‖C_{max(t − Δ, 0)} (D − x_0)‖² with x_t still drawn at t, against the float64 blur reference."""
    proc = make_process()
    x0 = torch.rand(4, 3, 8, 7, generator=generator, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    t = torch.tensor([0.02, 0.3, 0.6, 1.0], dtype=torch.float64)
    value = sd.soft_score_matching_loss(affine_denoiser, x0, proc, ahead=ahead, t=t, noise=noise, reduction="none")
    sigma = 0.02 * 4000.0 ** t.numpy()
    x_t = (
        blur_reference(x0.numpy(), 3.0 * np.sin(np.pi * t.numpy() / 2) ** 2)
        + sigma[:, None, None, None] * noise.numpy()
    )
    error = affine_denoiser(torch.from_numpy(x_t), t).numpy() - x0.numpy()
    levels_ahead = 3.0 * np.sin(np.pi * np.maximum(t.numpy() - ahead, 0) / 2) ** 2
    expected = (sigma**2 + 0.25) / (sigma * 0.5) ** 2 * (blur_reference(error, levels_ahead) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(value.numpy(), expected, rtol=2e-6)
    soft = sd.soft_score_matching_loss(affine_denoiser, x0, proc, t=t, noise=noise, reduction="none")
    assert (value > soft).all()  # less blur ahead: more of the error is seen


def test_loss_ahead_supervises_the_pixels_revealed_within_the_step(generator):
    """Masking: a prediction changed on pixels hidden at t but revealed by t − Δ moves the loss ahead, not the soft
    loss; one changed on pixels still hidden at t − Δ moves neither; Δ ≥ t is the cold loss."""
    proc = make_process(sd.Masking(seed=0), sd.LevelSchedule.from_levels([0.0, 1.0]))
    x0 = torch.rand(2, 3, 8, 8, generator=generator, dtype=torch.float64)
    t = torch.tensor([0.6, 0.6], dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    hidden_now = proc.apply(torch.ones_like(x0), t) == 0
    hidden_ahead = proc.apply(torch.ones_like(x0), t - 0.2) == 0
    revealed = hidden_now & ~hidden_ahead
    assert revealed.any() and hidden_ahead.any()

    def loss(shift, **kwargs):
        return sd.soft_score_matching_loss(lambda x_t, t: affine_denoiser(x_t, t) + 5.0 * shift, x0, proc, t=t,
                                           noise=noise, **kwargs)  # fmt: skip

    zero = torch.zeros_like(x0)
    assert torch.equal(loss(revealed), loss(zero)) and loss(revealed, ahead=0.2) > loss(zero, ahead=0.2) + 1
    assert torch.equal(loss(hidden_ahead, ahead=0.2), loss(zero, ahead=0.2))
    torch.testing.assert_close(loss(hidden_now, ahead=1.0), loss(hidden_now, loss="cold"), rtol=1e-12, atol=0)


@pytest.mark.parametrize("ahead", [-0.1, float("nan"), float("inf"), "0.1"])
def test_loss_ahead_rejects_a_bad_value(ahead):
    x0 = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="ahead must be a finite number"):
        sd.soft_score_matching_loss(affine_denoiser, x0, make_process(), ahead=ahead)


def test_loss_ahead_is_refused_with_the_cold_loss():
    with pytest.raises(ValueError, match="soft loss only"):
        sd.soft_score_matching_loss(affine_denoiser, torch.zeros(1, 1, 4, 4), make_process(), loss="cold", ahead=0.1)


def test_loss_gradient_is_correct(generator):
    """gradcheck in float64 through the fused residual C_t(D − x_0)."""
    proc = make_process()
    x0 = torch.rand(3, 2, 6, 5, generator=generator, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)

    def loss_of(weight):
        return sd.soft_score_matching_loss(lambda x_t, t: weight * x_t, x0, proc, t=t, noise=noise)

    weight = torch.randn(1, 2, 6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss_of, (weight,))


def test_stratified_times_cover_every_stratum(generator):
    t = sd.stratified_times(64, eps=1e-3, generator=generator)
    assert t.shape == (64,) and t.dtype == torch.float32
    strata = ((t.double() - 1e-3) / (1 - 1e-3) * 64).floor().long()
    assert torch.equal(strata.clamp(max=63), torch.arange(64))
    assert float(t.min()) >= 1e-3 and float(t.max()) <= 1.0


@pytest.mark.parametrize("power", [0.5, 2.0, 3.0])
def test_stratified_times_with_a_power_follow_their_law(power, generator):
    # t = ε + (1 − ε) v^p with v stratified: inverting the map must give one v in each stratum, and over many
    # draws P(t ≤ τ) = ((τ − ε)/(1 − ε))^(1/p).
    eps, batch = 1e-3, 64
    t = sd.stratified_times(batch, eps=eps, power=power, generator=generator)
    v = ((t.double() - eps) / (1 - eps)).pow(1 / power)
    assert torch.equal((v * batch).floor().long().clamp(max=batch - 1), torch.arange(batch))
    many = torch.cat([sd.stratified_times(batch, eps=eps, power=power, generator=generator) for _ in range(200)])
    for tau in (0.1, 0.25, 0.6):
        expected = ((tau - eps) / (1 - eps)) ** (1 / power)
        assert abs(float((many <= tau).double().mean()) - expected) < 0.01


@pytest.mark.parametrize("share", [0.25, 0.5])
def test_stratified_times_with_a_uniform_share_follow_their_law(share, generator):
    # t = ε + (1 − ε)(w v + (1 − w) v³): v recovered by bisection in float64 lies in its stratum, and over many
    # draws P(t ≤ τ) = g⁻¹((τ − ε)/(1 − ε)).
    eps, batch, power = 1e-3, 64, 3.0

    def inverse(y: torch.Tensor) -> torch.Tensor:
        low, high = torch.zeros_like(y), torch.ones_like(y)
        for _ in range(60):
            middle = (low + high) / 2
            below = share * middle + (1 - share) * middle.pow(power) < y
            low, high = torch.where(below, middle, low), torch.where(below, high, middle)
        return (low + high) / 2

    t = sd.stratified_times(batch, eps=eps, power=power, uniform_share=share, generator=generator)
    v = inverse((t.double() - eps) / (1 - eps))
    assert torch.equal((v * batch).floor().long().clamp(max=batch - 1), torch.arange(batch))
    many = torch.cat([sd.stratified_times(batch, eps=eps, power=power, uniform_share=share, generator=generator)
                      for _ in range(200)])  # fmt: skip
    for tau in (0.1, 0.25, 0.6):
        expected = float(inverse(torch.tensor((tau - eps) / (1 - eps), dtype=torch.float64)))
        assert abs(float((many <= tau).double().mean()) - expected) < 0.01


@pytest.mark.parametrize("power", [0, -1, float("nan"), float("inf")])
def test_stratified_times_reject_a_bad_power(power):
    with pytest.raises(ValueError, match="power"):
        sd.stratified_times(8, power=power)


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
def test_stratified_times_reject_a_bad_uniform_share(share):
    with pytest.raises(ValueError, match="uniform_share"):
        sd.stratified_times(8, power=3.0, uniform_share=share)


def test_denoiser_edm_preconditioning(generator):
    proc = make_process()
    calls = []

    def net(x, label):
        calls.append((x, label))
        return torch.full_like(x, 2.0)

    x_t = torch.randn(3, 1, 4, 4, generator=generator, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    out = sd.Denoiser(net, proc)(x_t, t)
    sigma = proc.sigma(t).view(-1, 1, 1, 1)
    c_skip, c_out, c_in = 0.25 / (sigma**2 + 0.25), sigma * 0.5 / (sigma**2 + 0.25).sqrt(), (sigma**2 + 0.25).rsqrt()
    torch.testing.assert_close(out, c_skip * x_t + c_out * 2.0)
    torch.testing.assert_close(calls[0][0], c_in * x_t)
    torch.testing.assert_close(calls[0][1], 1000 * t.float())


def test_denoiser_paper_preconditioning_is_residual(generator):
    x_t = torch.randn(2, 3, 4, 4, generator=generator)
    out = sd.Denoiser(lambda x, label: 0.5 * x, make_process(), precond="paper")(x_t, torch.tensor([0.3, 0.7]))
    torch.testing.assert_close(out, 1.5 * x_t)


@pytest.mark.parametrize("precond", ["edm", "paper"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_denoiser_feeds_a_float32_network_in_its_own_dtype(precond, dtype, generator):
    """float64 sampling (or bfloat16 images) around a float32 network: the network sees float32, the result keeps
    the images' dtype and matches the float32 computation."""
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    torch.nn.init.normal_(net.weight, std=0.1)

    def network(x, label):
        return net(x)

    module = torch.nn.Module()
    module.conv = net
    module.forward = network
    x_t = torch.randn(2, 3, 8, 8, generator=generator)
    t = torch.tensor([0.3, 0.7])
    denoiser = sd.Denoiser(module, make_process(), precond=precond)
    out = denoiser(x_t.to(dtype), t)
    assert out.dtype == dtype
    tolerance = 1e-6 if dtype == torch.float64 else 3e-2
    torch.testing.assert_close(out.float(), denoiser(x_t.to(dtype).float(), t), rtol=tolerance, atol=tolerance)


def test_denoiser_rejects_bad_network_output_and_options():
    with pytest.raises(ValueError, match="precond must be one of"):
        sd.Denoiser(lambda x, c: x, make_process(), precond="karras")
    denoiser = sd.Denoiser(lambda x, c: x[:, :1], make_process())
    with pytest.raises(ValueError, match="the network must return a tensor of the input's shape"):
        denoiser(torch.zeros(2, 3, 4, 4) + 0.1, torch.tensor([0.5, 0.5]))


def test_denoiser_is_a_module_holding_the_network(generator):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x, label):
            return self.conv(x) * label.view(-1, 1, 1, 1) / 1000

    net = Net()
    denoiser = sd.Denoiser(net, make_process())
    assert list(denoiser.parameters()) == list(net.parameters())
    out = denoiser(torch.randn(2, 3, 8, 8, generator=generator), torch.tensor([0.2, 0.9]))
    out.sum().backward()
    assert net.conv.weight.grad is not None and float(net.conv.weight.grad.abs().max()) > 0  # training reaches it
