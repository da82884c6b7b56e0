"""What the commands share: a trained model from a checkpoint, and seed lists from the command line.

Kept out of the commands themselves so that each imports it rather than another command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from .checkpoints import NotACheckpoint, UnsafeCheckpoint, load_latest, read_checkpoint
from .conditioning import NO_LABEL
from .denoiser import Denoiser
from .process import SoftDiffusionProcess
from .training.build import build_network
from .training.config import TrainConfig


def parse_seeds(text: str, name: str = "--seeds") -> list[int]:
    """'0-63', '1,5,9' or '0-9,20-29' -> the list of integers (ranges inclusive, all >= 0) of option ``name``."""
    seeds = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            first, last = int(first), int(last) if dash else int(first)
        except ValueError as error:
            raise SystemExit(f"{name} must look like 0-63 or 1,5,9; got {text!r}") from error
        if last < first:
            raise SystemExit(f"{name}: the range {part.strip()} is empty (write first-last with first <= last)")
        seeds.extend(range(first, last + 1))
    if any(s < 0 for s in seeds):
        raise SystemExit(f"{name} must be >= 0")
    return seeds


def parse_labels(text: str, label_classes: int) -> list[int]:
    """'0-9', '3' or '1,7' (or -1: none) -> the labels, checked against the checkpoint's number of classes."""
    if label_classes == 0:
        raise SystemExit("softdiff: --labels needs a class-conditional checkpoint (trained with --cond class); "
                         "this one is unconditional")  # fmt: skip
    if text.strip() == "-1":
        return [NO_LABEL]
    labels = parse_seeds(text, name="--labels")
    if any(label >= label_classes for label in labels):
        raise SystemExit(f"softdiff: --labels {text}: this checkpoint has classes 0-{label_classes - 1}")
    return labels


def labels_to_draw(text: str | None, label_classes: int, guidance: float = 1.0) -> list[int] | None:
    """The labels a command cycles over its seeds: ``--labels text`` (:func:`parse_labels`), or without ``--labels``
    every class in turn for a class-conditional checkpoint (a digit model draws the digits 0-9 unless told otherwise;
    ``--labels -1`` gives the unconditional branch ∅), or None for an unconditional checkpoint, which refuses a
    ``--guidance`` other than 1 (there is nothing to guide towards)."""
    if text is not None:
        return parse_labels(text, label_classes)
    if label_classes:
        return list(range(label_classes))
    if guidance != 1:
        raise SystemExit("softdiff: --guidance needs a class-conditional checkpoint (trained with --cond class)")
    return None


def cycled(listed: list[int] | None, count: int) -> torch.Tensor | None:
    """``[count]`` labels: sample k gets ``listed[k % len(listed)]`` (None stays None)."""
    return None if listed is None else torch.tensor([listed[k % len(listed)] for k in range(count)])


def load_model(ckpt: str, *, weights: str, device: torch.device, command: str = "softdiff"):
    """(denoiser, process, config) from a checkpoint file or run folder; exits with a message naming ``ckpt``
    (prefixed by ``command``, e.g. ``softdiff.sample``) when it is missing or not a softdiff checkpoint."""
    path = Path(ckpt)
    if path.is_dir():
        found = load_latest(path / "checkpoints" if (path / "checkpoints").is_dir() else path)
        if found is None:
            raise SystemExit(f"{command}: --ckpt {ckpt}: no readable checkpoint in {path}")
        state, path = found
    else:
        if not path.exists():
            raise SystemExit(f"{command}: --ckpt {ckpt}: checkpoint not found")
        try:
            state = read_checkpoint(path)
        except NotACheckpoint as error:
            raise SystemExit(f"{command}: --ckpt {ckpt} is not a softdiff checkpoint ({error})") from error
        except (UnsafeCheckpoint, OSError) as error:
            raise SystemExit(f"{command}: --ckpt {ckpt} cannot be read ({error})") from error
    config = TrainConfig(**state["config"])
    process = SoftDiffusionProcess.from_dict(state["process"])
    channels = state["ema"]["input.weight"].shape[1]
    net = build_network(config, channels, state.get("label_classes", 0))
    net.load_state_dict(state["ema" if weights == "ema" else "model"])
    denoiser = Denoiser(
        net.to(device).eval(), process, precond=config.precond, second_moment=state.get("second_moment")
    )
    print(f"{command}: {path} (step {state['step']}, {weights} weights)", file=sys.stderr)
    return denoiser, process, config
