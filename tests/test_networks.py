"""The U-Net: shapes, sizes, zero-initialised output, gradients, attention placement."""

import pytest
import torch

import softdiff as sd
from softdiff.denoiser import noise_label
from softdiff.networks import (
    NETWORK_SIZES,
    AutocastNetwork,
    SelfAttention,
    UNet,
    UNetConfig,
    build_unet,
    count_parameters,
)
from softdiff_kernels import dct2, idct2


@pytest.fixture(autouse=True)
def seeded_initialisation():
    """Networks initialise from torch's global generator: seeded for each test, and restored after it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(19)
        yield


@pytest.mark.parametrize(("size", "resolution", "channels"), [("tiny", 16, 3), ("tiny", 32, 1), ("small", 32, 3)])
def test_unet_maps_images_to_images(size, resolution, channels, generator):
    net = build_unet(size, resolution=resolution, image_channels=channels)
    x = torch.randn(2, channels, resolution, resolution, generator=generator)
    out = net(x, torch.tensor([3.0, 900.0]))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))  # the last conv starts at zero: D = c_skip x_t at init
    torch.nn.init.normal_(net.output[-1].weight, std=0.1)
    out = net(x, torch.tensor([3.0, 900.0]))
    assert out.abs().mean() > 0
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_noise_label_changes_the_output(generator):
    net = build_unet("tiny", resolution=16)
    for module in net.modules():  # undo the zero initialisations
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.05)
    x = torch.randn(1, 3, 16, 16, generator=generator)
    assert not torch.allclose(net(x, torch.tensor([10.0])), net(x, torch.tensor([700.0])))


def test_paper_size_and_attention_placement():
    paper = build_unet("paper", resolution=32)
    assert 55e6 < count_parameters(paper) < 70e6  # NCSN++/DDPM++ at CIFAR-10: ~56-62M
    attention_channels = {m.norm.num_channels for m in paper.modules() if isinstance(m, SelfAttention)}
    assert attention_channels == {256}  # 16x16 level (multiplier 2) and the middle
    assert NETWORK_SIZES["paper"] == UNetConfig()


def test_unet_rejects_sides_it_cannot_halve():
    with pytest.raises(ValueError, match="divisible by 4"):
        build_unet("tiny", resolution=16)(torch.zeros(1, 3, 18, 16) + 0.1, torch.ones(1))
    with pytest.raises(ValueError, match="network size must be one of"):
        build_unet("huge", resolution=32)


def test_unet_from_a_config_maps_each_image_to_an_output_that_depends_on_it(generator):
    """UNet(config) with the config's defaults elsewhere (resolution 32, attention at 16, dropout; eval mode):
    images to images, zero at initialisation, and once the weights are drawn, each output depends on its own input
    and on no other image of the batch."""
    config = UNetConfig(channels=16, channel_multipliers=(1, 2), blocks_per_level=1)
    net = UNet(config).eval().requires_grad_(False)
    assert net.config == config and any(isinstance(m, SelfAttention) for m in net.modules())
    x, label = torch.randn(2, 3, 32, 32, generator=generator), torch.tensor([3.0, 900.0])
    out = net(x, label)
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(out))  # the zero-initialised last conv
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.05, generator=generator)
    out = net(x, label)
    assert out.shape == x.shape and float(out.abs().mean()) > 0
    changed = x.clone()
    changed[0] += torch.randn(3, 32, 32, generator=generator)
    again = net(changed, label)
    assert (again[0] - out[0]).abs().max() > 1e-3 * out[0].abs().max()
    torch.testing.assert_close(again[1], out[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("width", [24, 48, 96])
def test_unet_builds_at_widths_whose_concatenations_32_does_not_divide(width, generator):
    # Decoder inputs concatenate skips (48 + 96 = 144 channels at width 48): GroupNorm's group count must divide them.
    net = UNet(UNetConfig(resolution=8, channels=width, channel_multipliers=(1, 2), blocks_per_level=1,
                          attention_resolutions=(8,)))  # fmt: skip
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert all(m.num_channels % m.num_groups == 0 and m.num_channels // m.num_groups >= 4 for m in norms)
    assert net(torch.randn(2, 3, 8, 8, generator=generator), torch.ones(2)).shape == (2, 3, 8, 8)


def test_autocast_network_runs_the_net_in_reduced_precision_and_returns_float32(generator):
    net = build_unet("tiny", resolution=16)
    for module in net.modules():  # undo the zero initialisations so that the output depends on the precision
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.05)
    x, label = torch.randn(2, 3, 16, 16, generator=generator), torch.tensor([3.0, 700.0])
    wrapped = AutocastNetwork(net, torch.bfloat16)
    out = wrapped(x, label)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = net(x, label).float()
    assert out.dtype == torch.float32 and torch.equal(out, expected)
    full = net(x, label)
    assert 0 < (out - full).abs().max() < 0.05 * full.abs().max()  # rounded, not another function
    with pytest.raises(ValueError, match="autocast dtype must be"):
        AutocastNetwork(net, torch.float32)


def test_wiener_denoiser_around_an_autocast_network_preconditions_in_float32(generator):
    """Under --amp only the network is rounded: D = Bᵀ(c_skip B x_t + c_out B F) is float32-exact given F's output."""
    proc = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 5.0), levels=sd.LevelSchedule.sin2(5.0))
    net = build_unet("tiny", resolution=16)
    torch.nn.init.normal_(net.output[-1].weight, std=0.1)
    wrapped = AutocastNetwork(net, torch.bfloat16)
    moment = 0.05 + torch.rand(3, 16, 16, generator=generator, dtype=torch.float64)
    denoiser = sd.Denoiser(wrapped, proc, precond="wiener", second_moment=moment)
    x_t, t = torch.randn(3, 3, 16, 16, generator=generator), torch.tensor([0.01, 0.4, 0.9])
    with torch.no_grad():
        out = denoiser(x_t, t)
        c_skip, c_out, c_in = denoiser.wiener_scalings(t.double(), 16, 16)
        f = wrapped(c_in.float().view(-1, 1, 1, 1) * x_t, noise_label(t))
    expected = idct2(c_skip * dct2(x_t.double()) + c_out * dct2(f.double()))
    assert out.dtype == torch.float32
    assert (out.double() - expected).abs().max() < 2e-5 * (1 + expected.abs().max())


def test_unet_names_bad_configurations_and_inputs(generator):
    with pytest.raises(ValueError, match="need an even channels"):
        UNet(UNetConfig(channels=15, channel_multipliers=(1, 2), blocks_per_level=1))
    with pytest.raises(ValueError, match=r"attention_heads \(3\) must divide the \d+ channels"):
        UNet(UNetConfig(channels=16, channel_multipliers=(1, 2), blocks_per_level=1, attention_heads=3))
    with pytest.warns(UserWarning, match=r"match no level of a 48-pixel U-Net \(level sides \[48, 24, 12\]\)"):
        UNet(UNetConfig(resolution=48, channels=16, channel_multipliers=(1, 2, 2), blocks_per_level=1))
    net = build_unet("tiny", resolution=16)
    x = torch.randn(2, 3, 16, 16, generator=generator)
    with pytest.raises(ValueError, match=r"c_noise must be \[B\] = \[2\]"):
        net(x, torch.tensor(5.0))
    with pytest.raises(ValueError, match=r"x must be \[B, 3, H, W\]"):
        net(x[:, :1], torch.ones(2))
