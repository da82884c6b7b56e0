"""U-Net denoiser backbone in the DDPM/NCSN++ line (Ho et al. 2020; Song et al. 2021), the network
F_θ(x, c_noise) that :class:`~softdiff.denoiser.Denoiser` preconditions.

Residual blocks (GroupNorm → SiLU → 3×3 conv, the noise embedding applied as a per-channel scale and shift as in
ADM, GroupNorm → SiLU → dropout → 3×3 conv initialised at zero), skip connections rescaled by 1/√2,
self-attention in every block of the chosen resolutions and in the middle, positional embedding of c_noise, and
an encoder/decoder with one skip per encoder block. Resampling is DDPM's: a stride-2 3×3 convolution down,
nearest-neighbour upsampling and a 3×3 convolution up (EDM's SongUNet resamples inside residual blocks with a
FIR filter and puts decoder attention in the last block of a level only; at the ``paper`` size this net has
63.1M parameters against its 61.8-62.8M). Sizes (DESIGN §1.6): ``paper`` = 128 channels, multipliers
(1, 2, 2, 2), 4 blocks per level, attention at 16×16, dropout 0.1; ``small``; ``tiny`` (trains on a CPU).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_values_enabled
from .conditioning import NO_LABEL


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNet` for inputs of side ``resolution``; ``attention_resolutions`` are feature-map
    sides (pixels) at which blocks get self-attention."""

    resolution: int = 32
    channels: int = 128
    channel_multipliers: tuple[int, ...] = (1, 2, 2, 2)
    blocks_per_level: int = 4
    attention_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    image_channels: int = 3
    attention_heads: int = 1
    skip_scale: float = field(default=math.sqrt(0.5))
    label_classes: int = 0  # > 0: class-conditional, labels 0..label_classes-1 and NO_LABEL (the unconditional ∅)

    @property
    def side_multiple(self) -> int:
        """What image sides must be a multiple of: the U-Net halves them once per level after the first."""
        return 2 ** (len(self.channel_multipliers) - 1)

    def to_dict(self) -> dict:
        return asdict(self)


NETWORK_SIZES = {
    "paper": UNetConfig(),
    "small": UNetConfig(channels=64, channel_multipliers=(1, 2, 2), blocks_per_level=2, attention_resolutions=(16,)),
    "tiny": UNetConfig(channels=32, channel_multipliers=(1, 2, 2), blocks_per_level=1, attention_resolutions=(8,),
                       dropout=0.0),
}  # fmt: skip


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels: the largest such count that divides ``channels``."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6)


def zero_init(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class PositionalEmbedding(nn.Module):
    """c_noise [B] -> [B, channels]: cos/sin at geometric frequencies max_positions^(-k/half), k = 0 .. half − 1
    (Vaswani et al.: from 1 down to just above 1/max_positions)."""

    def __init__(self, channels: int, max_positions: int = 10_000):
        super().__init__()
        half = channels // 2
        self.register_buffer("frequencies", (1.0 / max_positions) ** (torch.arange(half) / half), persistent=False)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = c_noise.float()[:, None] * self.frequencies[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class SelfAttention(nn.Module):
    """x + proj(softmax(q kᵀ / √d) v) over the H·W positions, q, k, v from a 1×1 conv of GroupNorm(x)."""

    def __init__(self, channels: int, heads: int, skip_scale: float):
        super().__init__()
        if heads < 1 or channels % heads:
            raise ValueError(f"attention_heads ({heads}) must divide the {channels} channels of an attention layer")
        self.heads, self.skip_scale = heads, skip_scale
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(batch, 3, self.heads, channels // self.heads, height * width).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out = out.transpose(-1, -2).reshape(batch, channels, height, width)
        return (x + self.proj(out)) * self.skip_scale


class ResidualBlock(nn.Module):
    """(skip(x) + conv(dropout(silu(norm(h) · (1 + scale) + shift)))) / √2, h = conv(silu(norm(x)));
    (scale, shift) from the noise embedding. Optional self-attention after it."""

    def __init__(self, in_channels, out_channels, embedding_channels, *, dropout, skip_scale, attention, heads):
        super().__init__()
        self.skip_scale = skip_scale
        self.norm0 = group_norm(in_channels)
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embedding = nn.Linear(embedding_channels, 2 * out_channels)
        self.norm1 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.attention = SelfAttention(out_channels, heads, skip_scale) if attention else None

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.embedding(embedding)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        h = self.conv1(self.dropout(h))
        x = (self.skip(x) + h) * self.skip_scale
        return self.attention(x) if self.attention is not None else x


class UNet(nn.Module):
    """F_θ(x [B, C, H, W], c_noise [B], labels [B] | None) -> [B, C, H, W]; H and W divisible by 2^(levels − 1).

    With ``label_classes`` K > 0 the network is class-conditional: an embedding of the label (K classes and ∅, the
    NO_LABEL entry that label dropout trains and guidance uses) is added to the positional features of c_noise
    before the embedding MLP, as the class embedding of EDM's networks; labels None means ∅ for every image."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = config = config or UNetConfig()
        width = config.channels
        if width < 2 or width % 2 or not config.channel_multipliers or config.blocks_per_level < 1:
            raise ValueError(f"need an even channels >= 2, channel multipliers and blocks_per_level >= 1; got "
                             f"{width}, {config.channel_multipliers}, {config.blocks_per_level}")  # fmt: skip
        sides = [config.resolution >> level for level in range(len(config.channel_multipliers))]
        if config.attention_resolutions and not set(config.attention_resolutions) & set(sides):
            warnings.warn(f"attention_resolutions {config.attention_resolutions} match no level of a "
                          f"{config.resolution}-pixel U-Net (level sides {sides}): attention only in the middle",
                          stacklevel=2)  # fmt: skip
        embedding_channels = 4 * width
        self.noise_embedding = nn.Sequential(
            PositionalEmbedding(width),
            nn.Linear(width, embedding_channels),
            nn.SiLU(),
            nn.Linear(embedding_channels, embedding_channels),
            nn.SiLU(),
        )
        if config.label_classes < 0:
            raise ValueError(f"label_classes must be >= 0 (0: unconditional); got {config.label_classes}")
        # Row K is ∅. Added to the positional features of c_noise before the embedding MLP (as EDM's class
        # embedding), at their scale (N(0, 1) entries): added after the MLP and zero-initialised, the labels stayed
        # a small perturbation that 1200 steps did not grow (samples matched their label at chance).
        self.label_embedding = nn.Embedding(config.label_classes + 1, width) if config.label_classes else None
        block = dict(embedding_channels=embedding_channels, dropout=config.dropout, skip_scale=config.skip_scale,
                     heads=config.attention_heads)  # fmt: skip
        self.levels = len(config.channel_multipliers)
        self.input = nn.Conv2d(config.image_channels, width, 3, padding=1)
        self.encoder, self.downsample = nn.ModuleList(), nn.ModuleList()
        skip_channels, channels = [width], width
        for level, multiplier in enumerate(config.channel_multipliers):
            stage = nn.ModuleList()
            for _ in range(config.blocks_per_level):
                stage.append(ResidualBlock(channels, width * multiplier, attention=level in self._attention_levels(),
                                           **block))  # fmt: skip
                channels = width * multiplier
                skip_channels.append(channels)
            self.encoder.append(stage)
            if level < self.levels - 1:
                self.downsample.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
                skip_channels.append(channels)
        self.middle = nn.ModuleList([ResidualBlock(channels, channels, attention=True, **block),
                                     ResidualBlock(channels, channels, attention=False, **block)])  # fmt: skip
        self.decoder, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(self.levels)):
            stage = nn.ModuleList()
            for _ in range(config.blocks_per_level + 1):
                out_channels = width * config.channel_multipliers[level]
                stage.append(ResidualBlock(channels + skip_channels.pop(), out_channels,
                                           attention=level in self._attention_levels(), **block))  # fmt: skip
                channels = out_channels
            self.decoder.append(stage)
            if level > 0:
                self.upsample.append(nn.Conv2d(channels, channels, 3, padding=1))
        self.output = nn.Sequential(group_norm(channels), nn.SiLU(),
                                    zero_init(nn.Conv2d(channels, config.image_channels, 3, padding=1)))  # fmt: skip

    def _attention_levels(self) -> set[int]:
        """Levels whose feature-map side (resolution / 2^level) is in attention_resolutions."""
        return {level for level in range(len(self.config.channel_multipliers))
                if (self.config.resolution >> level) in self.config.attention_resolutions}  # fmt: skip

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        factor = self.config.side_multiple
        if x.dim() != 4 or x.shape[1] != self.config.image_channels:
            raise ValueError(f"x must be [B, {self.config.image_channels}, H, W] for this U-Net; got {tuple(x.shape)}")
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"image sides must be divisible by {factor} for this U-Net; got {tuple(x.shape[-2:])}")
        if c_noise.shape != (x.shape[0],):
            raise ValueError(f"c_noise must be [B] = [{x.shape[0]}] (one noise label per image); got "
                             f"{tuple(c_noise.shape)}")  # fmt: skip
        features = self.noise_embedding[0](c_noise)  # the positional features of c_noise
        if self.label_embedding is not None:
            features = features + self.label_embedding(self._label_rows(labels, x.shape[0], x.device))
        elif labels is not None:
            raise ValueError("labels given to an unconditional network (label_classes = 0)")
        embedding = self.noise_embedding[1:](features)
        h = self.input(x)
        skips = [h]
        for level, stage in enumerate(self.encoder):
            for block in stage:
                h = block(h, embedding)
                skips.append(h)
            if level < self.levels - 1:
                h = self.downsample[level](h)
                skips.append(h)
        for block in self.middle:
            h = block(h, embedding)
        for index, stage in enumerate(self.decoder):
            for block in stage:
                h = block(torch.cat([h, skips.pop()], dim=1), embedding)
            if index < self.levels - 1:
                h = self.upsample[index](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.output(h)

    def _label_rows(self, labels: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """Rows of the label embedding: the label, or K for NO_LABEL (and for labels None)."""
        classes = self.config.label_classes
        if labels is None:
            return torch.full((batch,), classes, dtype=torch.long, device=device)
        if labels.shape != (batch,) or labels.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"labels must be an integer tensor [B] = [{batch}]; got {labels.dtype} "
                             f"{tuple(labels.shape)}")  # fmt: skip
        if check_values_enabled() and bool(((labels < NO_LABEL) | (labels >= classes)).any()):
            raise ValueError(f"labels must lie in 0..{classes - 1}, or {NO_LABEL} for none; got "
                             f"{sorted(set(labels.tolist()))[:12]}")  # fmt: skip
        return torch.where(labels == NO_LABEL, classes, labels).long()


class AutocastNetwork(nn.Module):
    """Mixed precision for the network alone: runs ``net(x, c_noise)`` under ``torch.autocast(dtype)`` (convolutions,
    attention and linear layers in bfloat16/float16) and returns float32 ``[B, C, H, W]``.

    Wrap the network, not the loss: preconditioning, the corruption, the sampler steps and the soft loss then stay
    in float32, where a bfloat16 DCT would make errors as large as σ_min.
    """

    def __init__(self, net: nn.Module, dtype: torch.dtype):
        super().__init__()
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"autocast dtype must be torch.bfloat16 or torch.float16; got {dtype}")
        self.net, self.dtype = net, dtype

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            out = self.net(x, c_noise) if labels is None else self.net(x, c_noise, labels)
        return out.float()


def build_unet(size: str, *, resolution: int, image_channels: int = 3, label_classes: int = 0) -> UNet:
    """A U-Net of a named size (``paper``, ``small``, ``tiny``) for square images of side ``resolution``, class-
    conditional on ``label_classes`` classes when > 0."""
    if size not in NETWORK_SIZES:
        raise ValueError(f"network size must be one of {sorted(NETWORK_SIZES)}; got {size!r}")
    config = {**NETWORK_SIZES[size].to_dict(), "resolution": resolution, "image_channels": image_channels,
              "label_classes": label_classes}  # fmt: skip
    return UNet(UNetConfig(**config))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
