"""Class conditioning (beyond the paper, as EDM, ADM and k-diffusion train it): labels, the unconditional label ∅,
label dropout in training and classifier-free guidance in sampling.

A class-conditional denoiser is called as ``denoiser(x_t, t, labels)`` with int64 labels ``[B]``; the label
NO_LABEL (−1) asks for the unconditional prediction x̂_0(∅), which label dropout trains: each training image's
label is replaced by ∅ with probability p (``--label-dropout``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch

from ._checks import ValueChecks

NO_LABEL = -1


def drop_labels(labels: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """``labels`` ``[B]`` with each replaced by NO_LABEL with ``probability``, drawn from ``generator`` (CPU)."""
    dropped = torch.rand(labels.shape, generator=generator) < probability
    return torch.where(dropped.to(labels.device), torch.full_like(labels, NO_LABEL), labels)


def guided_denoiser(denoiser: Callable, labels: torch.Tensor | None, guidance: float) -> Callable:
    """x̂_0(x_t, t) of ``sample``: the denoiser alone (``labels`` None), conditional on ``labels`` (guidance 1), or
    with classifier-free guidance (Ho & Salimans 2022) x̂_0 = x̂_0(∅) + w (x̂_0(y) − x̂_0(∅)), w = ``guidance``,
    from one call on the batch doubled (conditional half, then the ∅ half)."""
    if labels is None:
        return denoiser
    if guidance == 1:
        return lambda x, t: denoiser(x, t, labels)
    unconditional = torch.full_like(labels, NO_LABEL)

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        both = denoiser(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, unconditional]))
        conditional, plain = both.chunk(2)
        return plain + guidance * (conditional - plain)

    return guided


def check_labels(labels, guidance, batch: int, device: torch.device, checks: ValueChecks) -> torch.Tensor | None:
    """``sample``'s labels as int64 ``[B]`` on ``device`` (None: unconditional), checked with ``guidance``; their
    values are checked through ``checks`` (read back with the call's other value checks)."""
    if not isinstance(guidance, numbers.Real) or isinstance(guidance, bool) or not guidance >= 0:
        raise ValueError(f"guidance must be a number >= 0 (1: conditional, no guidance); got {guidance!r}")
    if labels is None:
        if guidance != 1:
            raise ValueError("guidance needs labels (the classes to guide towards)")
        return None
    labels = torch.as_tensor(labels, device=device)
    if labels.dtype not in (torch.int64, torch.int32) or labels.shape != (batch,):
        raise ValueError(f"labels must be integers of shape [{batch}] (one per sample; {NO_LABEL}: none); got "
                         f"{labels.dtype} {tuple(labels.shape)}")  # fmt: skip
    checks.add(lambda: labels >= NO_LABEL, _raise_negative_labels)
    return labels.long()


def _raise_negative_labels():
    raise ValueError(f"labels must be class indices >= 0, or {NO_LABEL} for none")
