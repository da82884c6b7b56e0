"""Inception-v3 features exactly as clean-fid computes them (Parmar et al. 2022), from a local weights file.

clean-fid downloads ``inception-2015-12-05.pt`` (a TorchScript file, NVIDIA's port of the TF-Inception used
for the original FID) into /tmp on first use. Offline-first, we load it from an explicit path instead
(``--inception PATH`` or ``SOFTDIFF_INCEPTION``) and call it the way clean-fid's ``InceptionV3W`` does:

- ``clean``: each uint8 HWC image is resized to 299×299 by clean-fid's own ``build_resizer("clean")`` (PIL
  bicubic on float32 channels, no quantisation), scaled by (x − 128) / 128 and fed to ``model.layers``.
- ``legacy_tensorflow``: the uint8 image goes to ``model(x, return_features=True)``, which resizes inside
  the network the way TensorFlow's FID code did (the numbers of the original FID papers).

Features are the 2048-wide pool3 vectors. cleanfid is imported inside the functions only.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .errors import MetricsError, MissingInceptionWeights

FILE_NAME = "inception-2015-12-05.pt"
MODES = ("clean", "legacy_tensorflow")
ENVIRONMENT_VARIABLE = "SOFTDIFF_INCEPTION"


def download_url() -> str:
    """The URL clean-fid downloads the weights from."""
    from cleanfid.downloads_helper import inception_url

    return inception_url


def weights_path(path: str | os.PathLike | None) -> Path:
    """The weights file: ``path``, else $SOFTDIFF_INCEPTION; raises :class:`MissingInceptionWeights` naming the
    file needed, where to download it and how to pass it when neither points at an existing file."""
    given = path if path is not None else os.environ.get(ENVIRONMENT_VARIABLE)
    if given and Path(given).is_file():
        return Path(given)
    where = f"{given} does not exist" if given else f"neither --inception nor ${ENVIRONMENT_VARIABLE} was given"
    raise MissingInceptionWeights(
        f"FID and KID need the Inception-v3 weights file {FILE_NAME} (TorchScript, ~92 MB), and {where}.\n"
        f"  Download it (on a machine with internet) from\n    {download_url()}\n"
        f"  (the file clean-fid uses), then pass it with --inception PATH/{FILE_NAME} or "
        f"{ENVIRONMENT_VARIABLE}=PATH/{FILE_NAME}.\n"
        "  Without it, the offline proxies run with --metrics swd,randfd (they are not FID)."
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class InceptionFeatures:
    """uint8 images ``[N, H, W, C]`` (C = 1 or 3) -> float32 features ``[N, 2048]``, as clean-fid in ``mode``."""

    def __init__(self, path: str | os.PathLike | None, *, mode: str = "clean", device: torch.device | str = "cpu"):
        from cleanfid.resize import build_resizer

        if mode not in MODES:
            raise MetricsError(f"mode must be one of {MODES}; got {mode!r}")
        self.path = weights_path(path)
        self.mode = mode
        self.device = torch.device(device)
        try:
            self.model = torch.jit.load(str(self.path), map_location=self.device).eval()
        except Exception as error:
            raise MetricsError(
                f"{self.path}: not a readable TorchScript file ({type(error).__name__}: {error}); expected "
                f"{FILE_NAME} from {download_url()} (a truncated download looks like this)"
            ) from error
        if not hasattr(self.model, "layers"):
            raise MetricsError(f"{self.path}: a TorchScript file without the 'layers' module of {FILE_NAME}")
        self.resize = build_resizer(mode)
        self.sha256 = file_sha256(self.path)

    def identity(self) -> dict:
        return {"name": FILE_NAME, "mode": self.mode, "path": str(self.path), "weights_sha256": self.sha256}

    def _network_input(self, images: np.ndarray) -> torch.Tensor:
        """What clean-fid's data loader hands the network: float ``[N, 3, S, S]`` in [0, 255]."""
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)  # clean-fid reads files with .convert("RGB")
        if self.mode == "clean":
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                resized = list(pool.map(self.resize, images))  # float32 [299, 299, 3] each, clipped to [0, 255]
            return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2)
        # legacy_tensorflow: torchvision's ToTensor()(uint8) * 255, as clean-fid does, bit for bit.
        return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255) * 255

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        batch = self._network_input(images).to(self.device)
        if self.mode == "clean":
            features = self.model.layers.forward((batch - 128) / 128)
        else:
            features = self.model(batch, return_features=True)
        return features.reshape(len(images), -1).float().cpu().numpy()
