"""The state of a run besides its weights: the randomness of each step as a function of (seed, step), the global
generators' states, the EMA, the learning-rate schedule, and the log cut back to a checkpoint on resume.

Every random draw of a step comes from :func:`step_generator`, so a run killed at any point and resumed reaches
the same weights as an uninterrupted one (bit for bit on the CPU).
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig


def learning_rate(config: TrainConfig, step: int) -> float:
    """Adam's learning rate at optimizer step ``step`` (0-based): linear warm-up over ``config.warmup`` steps, then
    constant or, with ``lr_decay="cosine"``, lr · (1 + cos(π s / steps)) / 2, reaching 0 at ``config.steps``."""
    warm = min(1.0, (step + 1) / max(1, config.warmup))
    if config.lr_decay == "cosine":
        warm *= 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps))
    return config.lr * warm


def step_generator(seed: int, step: int, purpose: int) -> torch.Generator:
    """A CPU generator that is a pure function of (seed, step, purpose)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 8 + purpose)


def batch_indices(config: TrainConfig, step: int, count: int) -> torch.Tensor:
    """Global indices of the batch of ``step``: epochs are seeded permutations, read in order."""
    start = step * config.batch
    indices = []
    while len(indices) < config.batch:
        epoch, offset = divmod(start + len(indices), count)
        order = torch.randperm(count, generator=step_generator(config.seed, epoch, 7))
        indices.extend(order[offset : offset + config.batch - len(indices)].tolist())
    return torch.tensor(indices)


def rng_states() -> dict:
    """The global generators' states as tensors and plain values (so a weights-only ``torch.load`` reads them)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()  # noqa: NPY002 - the global state
    states = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    """Set the global generators to :func:`rng_states`' values. Each step reseeds what it draws, so this only
    matters to code outside the step that draws from the global generators."""
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))  # noqa: NPY002
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def ema_decay(decay: float, step: int) -> float:
    """The EMA decay after ``step`` steps, warmed up as min(decay, (1 + step) / (10 + step)) so that short runs
    are not dominated by the initial weights (0.999^1000 still gives them 37%)."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    for ema_parameter, parameter in zip(ema.parameters(), net.parameters(), strict=True):
        ema_parameter.lerp_(parameter.detach(), 1 - decay)


def rewrite_log(path: Path, last_step: int) -> None:
    """Keep the log lines of steps ≤ last_step: the run goes on from its checkpoint at last_step (0: a fresh start)
    and repeats the steps after it. A line torn by a kill is dropped. Atomic: the old log stays whole until the
    new one replaces it."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text("".join(line + "\n" for line in kept))
    os.replace(temporary, path)
