"""The U-Net: shapes, sizes, zero-initialised output, gradients, attention placement."""

import pytest
import torch

from softdiff.networks import NETWORK_SIZES, SelfAttention, UNet, UNetConfig, build_unet, count_parameters


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


def test_unet_default_config_builds():
    assert isinstance(UNet(UNetConfig(channels=16, channel_multipliers=(1, 2), blocks_per_level=1)), UNet)
