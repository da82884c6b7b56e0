"""A fixed, seeded, untrained convolutional network whose features feed the ``RandFD-proxy``: the Fréchet
distance between Gaussian fits of its features. It needs no download and no training, so it works offline,
but it is **not FID** (random features see texture and colour statistics, not what Inception learned) and is
always reported as ``RandFD-proxy``.

Architecture (``randconv-v1``): four 3×3 convolutions with widths 32, 64, 128, 256 (stride 1, then 2, 2, 2),
each followed by LeakyReLU(0.2); weights ~ N(0, 2 / ((1 + 0.2²) fan_in)) (He init for that slope) drawn from
``torch.Generator().manual_seed(seed)``, biases 0. The feature of an image is the concatenation of the
spatial means of the four activation maps (32 + 64 + 128 + 256 = 480 numbers). Inputs are uint8 images
scaled to [-1, 1]; a single channel is repeated to three.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from ..data import to_model_range

NAME = "randconv-v1"
WIDTHS = (32, 64, 128, 256)
SLOPE = 0.2


class RandomFeatureNet(torch.nn.Module):
    """uint8-valued images ``[N, C, H, W]`` (C = 1 or 3, any H, W ≥ 8) -> features float32 ``[N, 480]``."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        self.convs = torch.nn.ModuleList()
        channels = 3
        for width in WIDTHS:
            conv = torch.nn.Conv2d(channels, width, 3, padding=1, stride=1 if channels == 3 else 2)
            fan_in = channels * 9
            std = (2 / ((1 + SLOPE**2) * fan_in)) ** 0.5
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * std)
                conv.bias.zero_()
            self.convs.append(conv)
            channels = width
        self.requires_grad_(False).eval()

    @property
    def feature_width(self) -> int:
        return sum(WIDTHS)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_model_range(images)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), SLOPE)
            features.append(x.mean(dim=(2, 3)))
        return torch.cat(features, dim=1)

    def identity(self) -> dict:
        """What a statistics file records: name, seed and the sha256 of the weights (float32 bytes)."""
        digest = hashlib.sha256()
        for tensor in self.state_dict().values():
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return {"name": NAME, "seed": self.seed, "weights_sha256": digest.hexdigest()}
