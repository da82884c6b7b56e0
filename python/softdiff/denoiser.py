"""Preconditioning: turn a network F(x, c_noise) into a denoiser D(x_t, t) -> x̂_0 (DESIGN §1.2).

- ``precond="edm"`` (default; Karras et al. 2022, Table 1, with σ = σ_t):
      D(x_t, t) = c_skip(σ) x_t + c_out(σ) F(c_in(σ) x_t, c_noise(t))
      c_skip = σ_d² / (σ² + σ_d²),  c_out = σ σ_d / √(σ² + σ_d²),  c_in = 1 / √(σ² + σ_d²)
- ``precond="paper"``: the paper's residual form x̂_0 = x_t + φ(x_t, t), i.e. c_skip = c_out = c_in = 1.

c_noise(t) = 1000 t: the label is built from t, not σ, because with blur the corruption is not a function of
σ alone (a constant-σ schedule is legal). The scale 1000 suits the positional embeddings of DDPM++/NCSN++.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ._checks import as_times, check_choice, check_images

PRECONDITIONINGS = ("edm", "paper")
NOISE_LABEL_SCALE = 1000.0


def edm_scalings(sigma: torch.Tensor, sigma_data: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in) of EDM for σ ``[B]`` -> three ``[B]`` tensors."""
    total = sigma.square() + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), total.rsqrt()


def noise_label(t: torch.Tensor) -> torch.Tensor:
    """c_noise(t) = 1000 t: the conditioning the network sees."""
    return NOISE_LABEL_SCALE * t


class Denoiser(nn.Module):
    """D(x_t, t) -> x̂_0 around a network ``net(x [B, C, H, W], c_noise [B]) -> [B, C, H, W]``.

    Args:
        net: the network F_θ (any callable; registered as a submodule when it is an ``nn.Module``).
        process: the :class:`~softdiff.process.SoftDiffusionProcess` whose σ_t the scalings use.
        precond: ``"edm"`` (default) or ``"paper"`` (the literal residual form).
        sigma_data: σ_d, the data standard deviation assumed by ``"edm"`` (0.5 for data in [-1, 1]).
    """

    def __init__(self, net: Callable, process, *, precond: str = "edm", sigma_data: float = 0.5):
        super().__init__()
        self.net = net
        self.process = process
        self.precond = check_choice("precond", precond, PRECONDITIONINGS)
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0; got {sigma_data}")
        self.sigma_data = float(sigma_data)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t ``[B, C, H, W]``, t ``[B]`` in [0, 1] -> x̂_0 ``[B, C, H, W]``."""
        check_images("x_t", x_t)
        t = as_times("t", t, x_t.shape[0], device=x_t.device)
        label = noise_label(t.to(torch.float32))
        if self.precond == "paper":
            out = self.net(x_t, label)
            _check_network_output(out, x_t)
            return x_t + out.to(x_t.dtype)
        c_skip, c_out, c_in = (
            c.to(x_t.dtype).view(-1, 1, 1, 1)
            for c in edm_scalings(self.process.sigma(t.to(torch.float64)), self.sigma_data)
        )
        out = self.net(c_in * x_t, label)
        _check_network_output(out, x_t)
        return c_skip * x_t + c_out * out.to(x_t.dtype)


def _check_network_output(out: object, x_t: torch.Tensor) -> None:
    if not isinstance(out, torch.Tensor) or out.shape != x_t.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the network must return a tensor of the input's shape {tuple(x_t.shape)}; got {shape}")
