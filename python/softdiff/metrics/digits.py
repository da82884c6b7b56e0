"""The digit metric: does a set of generated MNIST-like images read as digits? Scored by a small CNN classifier that
softdiff trains on MNIST itself (the practice for MNIST generative models; Inception features are not meant for
28×28 grey digits).

The classifier (``digits-cnn-v1``): two blocks of two 3×3 convolutions (32, then 64 channels, ReLU) each followed
by 2×2 max pooling, a 128-unit ReLU layer (the *features*) and a linear layer to 10 logits. Trained with a fixed
seed on the 5000 digits of ``--data mnist`` less a held-out part (the last 100 images of each digit: 1000
images), 16 epochs of Adam (batch 64; lr 1e-3, then 1e-4 from the 12th epoch) with random shifts of up to 2
pixels; its held-out accuracy is reported with every score. It is cached under ``$SOFTDIFF_CACHE/digits`` (trained
once, about a minute on two CPU cores) by a key of the data file and the recipe.

For a set of samples (``[N, 1, H, W]``; 32×32 is centre-cropped to MNIST's 28×28, other sides resized):

- ``confident``: the share classified with a maximum softmax probability ≥ 0.9;
- ``balance``: the entropy of the predicted-class histogram over log 10 (1 = every digit equally often);
- ``feature_fd``: the Fréchet distance between Gaussian fits of the classifier's features of the samples and of
  the 1000 held-out digits, beside its ``floor``: the same distance for as many real training digits (what a
  perfect generator would score at that sample count);
- ``label_match``: with requested labels, the share classified as the label asked for.

These are reported as the *digit metric*, never as FID.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..images import to_model_range
from .frechet import frechet_distance, gaussian_statistics

NAME = "digits-cnn-v1"
SIDE = 28
HELD_OUT_PER_DIGIT = 100
CONFIDENT = 0.9
RECIPE = dict(epochs=16, lr_drop_epoch=11, batch=64, lr=1e-3, shift=2, seed=0, held_out_per_digit=HELD_OUT_PER_DIGIT)


class DigitClassifier(nn.Module):
    """Digits ``[N, 1, 28, 28]`` in [-1, 1] -> logits ``[N, 10]``; :meth:`features` gives the 128 features."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.hidden = nn.Linear(64 * 7 * 7, 128)
        self.head = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.hidden(self.blocks(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def as_digits(images: torch.Tensor) -> torch.Tensor:
    """uint8 or float [-1, 1] images ``[N, 1, H, W]`` -> float32 ``[N, 1, 28, 28]`` in [-1, 1]: a side of 32 (MNIST
    padded by 2) is centre-cropped, other sides are resized (bilinear, antialiased)."""
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"the digit metric takes one-channel images [N, 1, H, W]; got {tuple(images.shape)}")
    x = to_model_range(images) if images.dtype == torch.uint8 else images.float().clamp(-1, 1)
    height, width = x.shape[-2:]
    if (height, width) == (SIDE + 4, SIDE + 4):
        return x[..., 2:-2, 2:-2]
    if (height, width) != (SIDE, SIDE):
        x = F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", antialias=True, align_corners=False)
    return x


def held_out_split(labels: torch.Tensor, per_digit: int = HELD_OUT_PER_DIGIT) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices): the last ``per_digit`` images of each digit are held out."""
    held = torch.cat([torch.nonzero(labels == digit).flatten()[-per_digit:] for digit in range(10)])
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held] = False
    return torch.nonzero(mask).flatten(), held.sort().values


def _shifted(x: torch.Tensor, generator: torch.Generator, shift: int) -> torch.Tensor:
    """Each image moved by a random whole number of pixels in [-shift, shift] per axis (background fill −1)."""
    padded = F.pad(x, (shift,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * shift + 1, (len(x), 2), generator=generator)
    return torch.stack([padded[i, :, r : r + SIDE, c : c + SIDE] for i, (r, c) in enumerate(offsets.tolist())])


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, recipe: dict = RECIPE) -> DigitClassifier:
    """The classifier trained as the module docstring says on ``images`` (uint8 ``[N, 1, 28, 28]``) and labels."""
    generator = torch.Generator().manual_seed(recipe["seed"])
    torch.manual_seed(recipe["seed"])
    model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    x = as_digits(images)
    model.train()
    for epoch in range(recipe["epochs"]):
        if epoch == recipe["lr_drop_epoch"]:
            for group in optimizer.param_groups:
                group["lr"] = recipe["lr"] / 10
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), recipe["batch"]):
            batch = order[start : start + recipe["batch"]]
            loss = F.cross_entropy(model(_shifted(x[batch], generator, recipe["shift"])), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def _predict(model: DigitClassifier, x: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax probabilities ``[N, 10]``, features float64 ``[N, 128]``) of digits ``[N, 1, 28, 28]``."""
    probabilities, features = [], []
    for part in x.split(batch):
        hidden = model.features(part)
        probabilities.append(model.head(hidden).softmax(dim=1))
        features.append(hidden.double())
    return torch.cat(probabilities), torch.cat(features)


@dataclass
class DigitReference:
    """The trained classifier, the held-out digits' feature statistics and the training digits (for the floor)."""

    model: DigitClassifier
    held_out_accuracy: float
    held_out_mean: np.ndarray
    held_out_covariance: np.ndarray
    train_digits: torch.Tensor  # float32 [N, 1, 28, 28]
    key: str


def _cache_file(key: str) -> Path:
    root = Path(os.environ.get("SOFTDIFF_CACHE", Path.home() / ".cache" / "softdiff"))
    return root / "digits" / f"{NAME}-{key}.pt"


def digit_reference(data_spec: str = "mnist", *, recipe: dict = RECIPE, progress=print) -> DigitReference:
    """The classifier for ``data_spec`` (an MNIST spec), trained by ``recipe`` on first use and cached by a key of
    both, with its reference data."""
    from ..data.cache import data_path, fingerprint
    from ..data.loaders import load_data

    data = load_data(data_spec, size=SIDE)
    if data.labels is None or data.images.shape[1:] != (1, SIDE, SIDE):
        raise ValueError(f"the digit metric needs labelled one-channel 28x28 digits; {data_spec!r} is not MNIST")
    key_text = json.dumps([data_spec, fingerprint(data_path(data_spec)), recipe, NAME])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    train_index, held_index = held_out_split(data.labels, recipe["held_out_per_digit"])
    path = _cache_file(key)
    model = DigitClassifier()
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.eval()
    except (OSError, RuntimeError, EOFError, ValueError):  # absent or torn: train it (again)
        progress(f"softdiff digit metric: training the {NAME} classifier on {len(train_index)} digits of "
                 f"{data_spec} (once; cached in {path.parent})")  # fmt: skip
        model = train_classifier(data.images[train_index], data.labels[train_index], recipe=recipe)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        torch.save(model.state_dict(), temporary)
        os.replace(temporary, path)
    held = as_digits(data.images[held_index])
    probabilities, features = _predict(model, held)
    accuracy = (probabilities.argmax(1) == data.labels[held_index]).double().mean().item()
    mean, covariance = gaussian_statistics(features.numpy())
    return DigitReference(model, accuracy, mean, covariance, as_digits(data.images[train_index]), key)


@dataclass
class DigitScores:
    """The digit metric of one sample set (see the module docstring)."""

    count: int
    confident: float
    balance: float
    feature_fd: float
    floor: float
    label_match: float | None
    histogram: list[int]
    classifier_accuracy: float

    def to_dict(self) -> dict:
        return asdict(self) | {"metric": f"digit metric ({NAME} classifier), not FID"}

    def line(self) -> str:
        match = "" if self.label_match is None else f", label match {self.label_match:.1%}"
        return (f"digits ({NAME}, held-out accuracy {self.classifier_accuracy:.1%}; not FID): {self.count} samples, "
                f"confident {self.confident:.1%}, class balance {self.balance:.3f}, feature FD {self.feature_fd:.2f} "
                f"(floor {self.floor:.2f}){match}")  # fmt: skip


def digit_scores(images: torch.Tensor, reference: DigitReference, *, labels: torch.Tensor | None = None,
                 seed: int = 0) -> DigitScores:  # fmt: skip
    """The digit metric of ``images`` ``[N, 1, H, W]`` (N ≥ 2; uint8, or float in [-1, 1]) against ``reference``;
    ``labels`` ``[N]``: the classes the samples were asked to be. ``seed`` picks the real digits of the floor."""
    x = as_digits(images)
    if len(x) < 2:
        raise ValueError(f"the digit metric needs at least 2 images; got {len(x)}")
    if labels is not None and labels.shape != (len(x),):
        raise ValueError(f"labels must have shape [{len(x)}]; got {tuple(labels.shape)}")
    probabilities, features = _predict(reference.model, x)
    predicted = probabilities.argmax(1)
    histogram = torch.bincount(predicted, minlength=10).double()
    share = histogram / histogram.sum()
    balance = 0.0 - (share[share > 0] * share[share > 0].log()).sum().item() / np.log(10)  # 0.0 -: no -0
    mean, covariance = gaussian_statistics(features.numpy())
    fd = frechet_distance(mean, covariance, reference.held_out_mean, reference.held_out_covariance)
    count = min(len(x), len(reference.train_digits))
    pick = torch.randperm(len(reference.train_digits), generator=torch.Generator().manual_seed(seed))[:count]
    real_features = _predict(reference.model, reference.train_digits[pick])[1]
    floor_mean, floor_covariance = gaussian_statistics(real_features.numpy())
    floor = frechet_distance(floor_mean, floor_covariance, reference.held_out_mean, reference.held_out_covariance)
    match = None if labels is None else (predicted == labels.cpu()).double().mean().item()
    return DigitScores(len(x), (probabilities.max(1).values >= CONFIDENT).double().mean().item(), balance, fd, floor,
                       match, histogram.long().tolist(), reference.held_out_accuracy)  # fmt: skip
