"""Running the feature networks over a set of images, batch by batch, keeping what each metric needs.

Images arrive as uint8 ``[B, H, W, C]`` numpy batches (the FID convention) with their indices in the set; a
set is fed once, in any batching, on one or several ranks (:func:`gather_to_first_rank` merges the ranks).
Per image it keeps: Inception features per clean-fid mode (FID, KID), random-network features (RandFD-proxy)
and, for the first ``SWDSettings.max_images`` images, the Laplacian-pyramid patch descriptors (SWD-proxy).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from . import swd
from .errors import MetricsError
from .inception import InceptionFeatures
from .random_net import RandomFeatureNet


@dataclass(frozen=True)
class SWDSettings:
    """SWD-proxy parameters: patches per image, images used (the first ones of the set), random directions,
    quantile blocks, and the seed of the patch positions and directions."""

    patches_per_image: int = 64
    max_images: int = 4096
    directions: int = 512
    blocks: int = 1024
    seed: int = 0

    def directions_for(self, channels: int) -> torch.Tensor:
        return swd.random_directions(channels * swd.PATCH**2, self.directions, self.seed)

    def identity(self, sizes: list[tuple[int, int]], channels: int) -> dict:
        """What a summary records; two summaries compare only when everything but ``images`` agrees."""
        return {
            "name": "swd-laplacian-v1",
            "patch": swd.PATCH,
            "patches_per_image": self.patches_per_image,
            "directions": self.directions,
            "blocks": self.blocks,
            "seed": self.seed,
            "levels": [list(size) for size in sizes],
            "directions_sha256": swd.directions_fingerprint(self.directions_for(channels)),
        }


@dataclass
class SetFeatures:
    """Features of one image set, rows in index order.

    indices int64 ``[N]``; inception: mode -> float32 ``[N, D]``; randnet float32 ``[N, 480]`` or None;
    swd_levels: per pyramid level float32 descriptors ``[M·P, C·49]`` of the images ``swd_indices`` ``[M]``
    (P consecutive rows per image), or None, made with ``swd_settings``. ``identities``: what made each
    kind of feature (keys ``inception_<mode>``, ``randnet``, ``swd``). ``content_sha256``: sha256 of the uint8
    NHWC images in order (None when the set was fed by several ranks).
    """

    height: int
    width: int
    channels: int
    indices: np.ndarray
    inception: dict[str, np.ndarray] = field(default_factory=dict)
    randnet: np.ndarray | None = None
    swd_levels: list[torch.Tensor] | None = None
    swd_indices: np.ndarray | None = None
    swd_settings: SWDSettings | None = None
    identities: dict[str, dict] = field(default_factory=dict)
    content_sha256: str | None = None

    @property
    def count(self) -> int:
        return len(self.indices)


class FeatureExtractor:
    """Feeds uint8 image batches to the chosen feature networks (any of them may be absent)."""

    def __init__(
        self,
        *,
        inception: list[InceptionFeatures] = (),
        randnet: RandomFeatureNet | None = None,
        swd_settings: SWDSettings | None = None,
        device: torch.device | str = "cpu",
    ):
        self.inception = list(inception)
        self.randnet = randnet.to(device) if randnet is not None else None
        self.swd_settings = swd_settings
        self.device = torch.device(device)
        self.shape: tuple[int, int, int] | None = None
        self.indices: list[np.ndarray] = []
        self.inception_rows: dict[str, list[np.ndarray]] = {extractor.mode: [] for extractor in self.inception}
        self.randnet_rows: list[np.ndarray] = []
        self.swd_rows: list[list[torch.Tensor]] = []
        self.swd_indices: list[np.ndarray] = []
        self.digest = hashlib.sha256()

    def add(self, indices: np.ndarray, images: np.ndarray, *, source: str = "images") -> None:
        """One batch: ``indices`` int ``[B]`` (positions in the set), ``images`` uint8 ``[B, H, W, C]``."""
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            raise MetricsError(f"{source}: expected uint8 images [N, H, W, C]; got {getattr(images, 'dtype', '?')} "
                               f"{getattr(images, 'shape', '?')}")  # fmt: skip
        if images.shape[-1] not in (1, 3):
            raise MetricsError(f"{source}: expected 1 or 3 channels last [N, H, W, C]; got shape {images.shape}")
        if self.shape is None:
            self.shape = images.shape[1:]
        elif images.shape[1:] != self.shape:
            raise MetricsError(f"{source}: image size {images.shape[1:]} differs from the first images' {self.shape}")
        images = np.ascontiguousarray(images)
        indices = np.asarray(indices, dtype=np.int64)
        self.digest.update(images.tobytes())
        self.indices.append(indices)
        for extractor in self.inception:
            self.inception_rows[extractor.mode].append(extractor(images))
        tensor = None
        if self.randnet is not None:
            tensor = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2)
            with torch.no_grad():
                self.randnet_rows.append(self.randnet(tensor).cpu().numpy())
        if self.swd_settings is not None:
            keep = indices < self.swd_settings.max_images
            if keep.any():
                tensor = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2) if tensor is None else tensor
                self._add_swd(indices[keep], tensor[torch.from_numpy(keep).to(self.device)])

    def _add_swd(self, indices: np.ndarray, images: torch.Tensor) -> None:
        sizes = swd.pyramid_sizes(images.shape[2], images.shape[3])
        corners = swd.patch_corners(indices, sizes, self.swd_settings.patches_per_image, self.swd_settings.seed)
        levels = swd.laplacian_pyramid(images.float(), len(sizes))
        self.swd_rows.append([swd.patch_descriptors(level, c.to(self.device)).cpu() for level, c in
                              zip(levels, corners, strict=True)])  # fmt: skip
        self.swd_indices.append(indices)

    def result(self) -> SetFeatures:
        if self.shape is None:
            raise MetricsError("no images were given")
        height, width, channels = self.shape
        features = SetFeatures(height, width, channels, np.concatenate(self.indices), swd_settings=self.swd_settings,
                               content_sha256=self.digest.hexdigest())  # fmt: skip
        for extractor in self.inception:
            features.inception[extractor.mode] = np.concatenate(self.inception_rows[extractor.mode])
            features.identities[f"inception_{extractor.mode}"] = extractor.identity()
        if self.randnet is not None:
            features.randnet = np.concatenate(self.randnet_rows)
            features.identities["randnet"] = self.randnet.identity()
        if self.swd_settings is not None:
            features.identities["swd"] = self.swd_settings.identity(swd.pyramid_sizes(height, width), channels)
            if self.swd_rows:
                features.swd_levels = [torch.cat(level) for level in zip(*self.swd_rows, strict=True)]
                features.swd_indices = np.concatenate(self.swd_indices)
            else:  # none of this share's images is among the first max_images
                levels = len(swd.pyramid_sizes(height, width))
                features.swd_levels = [torch.empty(0, channels * swd.PATCH**2) for _ in range(levels)]
                features.swd_indices = np.empty(0, dtype=np.int64)
        return sort_by_index(features)


def sort_by_index(features: SetFeatures) -> SetFeatures:
    """The same features with rows in increasing index order (images and, for SWD, their patch rows)."""
    order = np.argsort(features.indices, kind="stable")
    features.indices = features.indices[order]
    features.inception = {mode: rows[order] for mode, rows in features.inception.items()}
    if features.randnet is not None:
        features.randnet = features.randnet[order]
    if features.swd_levels is not None:
        image_order = np.argsort(features.swd_indices, kind="stable")
        per_image = features.swd_levels[0].shape[0] // max(len(image_order), 1)
        rows = torch.from_numpy((image_order[:, None] * per_image + np.arange(per_image)).reshape(-1))
        features.swd_levels = [level[rows] for level in features.swd_levels]
        features.swd_indices = features.swd_indices[image_order]
    return features


def _gather_rows(rows: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """all_gather of a ``[n_r, ...]`` tensor whose first size differs between ranks: every rank's rows."""
    world = dist.get_world_size()
    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([rows.shape[0]], dtype=torch.int64, device=device))
    counts = [int(c.item()) for c in counts]
    padded = rows.new_zeros(max(counts), *rows.shape[1:]).to(device)
    padded[: rows.shape[0]] = rows.to(device)
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return [part[:count].cpu() for part, count in zip(gathered, counts, strict=True)]


def gather_to_first_rank(features: SetFeatures, device: torch.device) -> SetFeatures | None:
    """Merge the features every rank computed for its share of the set: the whole set on rank 0 (in index
    order, ``content_sha256`` None), None on the other ranks. Collective: every rank must call it."""

    def gather(array: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.cat(_gather_rows(torch.as_tensor(array), device))

    merged = SetFeatures(features.height, features.width, features.channels, gather(features.indices).numpy(),
                         swd_settings=features.swd_settings, identities=features.identities)  # fmt: skip
    for mode in sorted(features.inception):
        merged.inception[mode] = gather(features.inception[mode]).numpy()
    if features.randnet is not None:
        merged.randnet = gather(features.randnet).numpy()
    if features.swd_levels is not None:
        merged.swd_levels = [gather(level) for level in features.swd_levels]
        merged.swd_indices = gather(features.swd_indices).numpy()
    return sort_by_index(merged) if dist.get_rank() == 0 else None
