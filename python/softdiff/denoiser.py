"""Preconditioning: turn a network F(x, c_noise) into a denoiser D(x_t, t) -> x̂_0 (DESIGN §1.2).

- ``precond="edm"`` (default; Karras et al. 2022, Table 1, with σ = σ_t):
      D(x_t, t) = c_skip(σ) x_t + c_out(σ) F(c_in(σ) x_t, c_noise(t))
      c_skip = σ_d² / (σ² + σ_d²),  c_out = σ σ_d / √(σ² + σ_d²),  c_in = 1 / √(σ² + σ_d²)
- ``precond="paper"``: the paper's residual form x̂_0 = x_t + φ(x_t, t), i.e. c_skip = c_out = c_in = 1.
- ``precond="wiener"``: EDM's scalings generalised to the linear corruption, per coefficient f of the operator's
  basis, from the data's second moment s_f = E[z_f²] (z = B x_0) and the eigenvalues d_f of C_t:
      D = Bᵀ [ c_skip,f (B x_t)_f + c_out,f (B F(c_in x_t, c_noise(t)))_f ]
      c_skip,f = d_f s_f / (d_f² s_f + σ²)             (the Wiener filter: z_f's best linear estimate from (B x_t)_f)
      c_out,f  = √(s_f σ² / (d_f² s_f + σ²))           (the standard deviation of that estimate's error)
      c_in     = 1 / √(mean_f(d_f² s_f) + σ²)           (x_t at unit scale)
  With C = I and s_f = σ_d² for every f these are exactly EDM's. The skip path then already deblurs and denoises
  as well as a per-coefficient linear filter can (exactly the best linear filter when the data's covariance is
  diagonal in the basis; for the shapes at 16×16 the best full-covariance one errs 2–13% less), so F has the same
  job at every t (correct what the filter cannot) instead of denoising at small t and sharpening at mid t; what
  the soft loss leaves free (c_out,f where d_f ≈ 0) is generated at the data's own scale √s_f.

c_noise(t) = 1000 t: the label is built from t, not σ, because with blur the corruption is not a function of
σ alone (a constant-σ schedule is legal). The scale 1000 suits the positional embeddings of DDPM++/NCSN++.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from softdiff_kernels import compute_dtype

from ._checks import as_times, check_choice, check_images
from .operators import basis_second_moment, require_basis
from .spectra import wiener_gain

PRECONDITIONINGS = ("edm", "paper", "wiener")
NOISE_LABEL_SCALE = 1000.0


def edm_scalings(sigma: torch.Tensor, sigma_data: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in) of EDM for σ ``[B]`` -> three ``[B]`` tensors."""
    total = sigma.square() + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), total.rsqrt()


def noise_label(t: torch.Tensor) -> torch.Tensor:
    """c_noise(t) = 1000 t: the conditioning the network sees."""
    return NOISE_LABEL_SCALE * t


class Denoiser(nn.Module):
    """D(x_t, t[, labels]) -> x̂_0 around a network ``net(x [B, C, H, W], c_noise [B][, labels [B]]) -> [B, C, H, W]``
    (labels reach the network only when given, so any two-argument network fits).

    Args:
        net: the network F_θ (any callable; registered as a submodule when it is an ``nn.Module``).
        process: the :class:`~softdiff.process.SoftDiffusionProcess` whose σ_t the scalings use.
        precond: ``"edm"`` (default), ``"paper"`` (the literal residual form x_t + F_θ: pair it with the 1/σ² loss
            weighting, as EDM's λ = 1/c_out² assumes EDM's output scale) or ``"wiener"`` (EDM's scalings per
            coefficient of the operator's basis, from the data's second moment).
        sigma_data: σ_d, the data standard deviation assumed by ``"edm"`` (0.5 for data in [-1, 1]).
        second_moment: s_f = E[z_f²] of the data in the operator's basis, ``[C, H, W]`` or ``[H, W]``, all > 0
            (see :func:`data_second_moment`); required by ``"wiener"``.
    """

    def __init__(
        self,
        net: Callable,
        process,
        *,
        precond: str = "edm",
        sigma_data: float = 0.5,
        second_moment: torch.Tensor | None = None,
    ):
        super().__init__()
        self.net = net
        self.process = process
        self.precond = check_choice("precond", precond, PRECONDITIONINGS)
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0; got {sigma_data}")
        self.sigma_data = float(sigma_data)
        self.second_moment = None
        if precond == "wiener":
            require_basis(process.operator, 'precond="wiener"')
            if second_moment is None:
                raise ValueError('precond="wiener" needs second_moment (the data\'s E[z_f²]; see data_second_moment)')
            moment = torch.as_tensor(second_moment, dtype=torch.float64)
            if moment.dim() not in (2, 3) or not bool(torch.isfinite(moment).all() and (moment > 0).all()):
                raise ValueError(f"second_moment must be a finite, positive [C, H, W] or [H, W] tensor; got shape "
                                 f"{tuple(moment.shape)}")  # fmt: skip
            self.second_moment = moment

    def wiener_scalings(self, t: torch.Tensor, height: int, width: int):
        """(c_skip ``[B, C|1, H, W]``, c_out ``[B, C|1, H, W]``, c_in ``[B]``), float64, for times t ``[B]``."""
        if self.second_moment.device != t.device:  # moved once, not on every call
            self.second_moment = self.second_moment.to(t.device)
        moment = self.second_moment
        moment = moment if moment.dim() == 3 else moment[None]
        if moment.shape[-2:] != (height, width):
            raise ValueError(f"second_moment is {tuple(moment.shape[-2:])} but the images are {(height, width)}")
        d = self.process.operator.spectrum(self.process.level(t), height, width)  # [B, K, H, W]
        var = self.process.sigma(t).view(-1, 1, 1, 1).square()
        visible = d.square() * moment  # d_f² s_f
        c_skip = wiener_gain(moment, d, var)
        c_out = (moment * var / (visible + var)).sqrt()
        c_in = (visible.mean(dim=(1, 2, 3)) + var.view(-1)).rsqrt()
        return c_skip, c_out, c_in

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x_t ``[B, C, H, W]``, t ``[B]`` in [0, 1], optional class labels int64 ``[B]`` (NO_LABEL = −1: none) for a
        class-conditional network -> x̂_0 ``[B, C, H, W]``."""
        check_images("x_t", x_t)
        t = as_times("t", t, x_t.shape[0], device=x_t.device, images_dtype=x_t.dtype)
        c_noise = noise_label(t.to(torch.float32))
        if self.precond == "paper":
            out = self._network(x_t, c_noise, labels)
            _check_network_output(out, x_t)
            return x_t + out.to(x_t.dtype)
        if self.precond == "wiener":
            return self._wiener(x_t, t, c_noise, labels)
        c_skip, c_out, c_in = (
            c.to(x_t.dtype).view(-1, 1, 1, 1)
            for c in edm_scalings(self.process.sigma(t.to(torch.float64)), self.sigma_data)
        )
        out = self._network(c_in * x_t, c_noise, labels)
        _check_network_output(out, x_t)
        return c_skip * x_t + c_out * out.to(x_t.dtype)

    def _network(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """F_θ(x, c_noise[, labels]), its input in the network's own floating dtype (float64 sampling, or images in
        bfloat16, around a float32 network; the preconditioning stays in x's dtype)."""
        parameter = next(self.net.parameters(), None) if isinstance(self.net, torch.nn.Module) else None
        if parameter is not None and parameter.is_floating_point() and x.dtype != parameter.dtype:
            x = x.to(parameter.dtype)
        return self.net(x, c_noise) if labels is None else self.net(x, c_noise, labels)

    def _wiener(self, x_t: torch.Tensor, t: torch.Tensor, c_noise: torch.Tensor, labels) -> torch.Tensor:
        if self.second_moment.dim() == 3 and self.second_moment.shape[0] != x_t.shape[1]:
            raise ValueError(f"second_moment has {self.second_moment.shape[0]} channels but x_t has {x_t.shape[1]}")
        c_skip, c_out, c_in = self.wiener_scalings(t.to(torch.float64), x_t.shape[-2], x_t.shape[-1])
        out = self._network(c_in.to(x_t.dtype).view(-1, 1, 1, 1) * x_t, c_noise, labels)
        _check_network_output(out, x_t)
        operator = self.process.operator
        dtype = compute_dtype(x_t.dtype)
        z = c_skip.to(dtype) * operator.to_basis(x_t.to(dtype)) + c_out.to(dtype) * operator.to_basis(out.to(dtype))
        return operator.from_basis(z).to(x_t.dtype)


def data_second_moment(operator, images: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """s_f = E[z_f²] per channel and coefficient of ``images`` ``[N, C, H, W]`` (uint8 or float in [-1, 1]) in the
    operator's basis -> float64 ``[C, H, W]``, floored at 1e-6 · its mean so that every c_out,f stays > 0."""
    moment = basis_second_moment(operator, images, batch_size=batch_size)
    return moment.clamp_min(1e-6 * float(moment.mean()))


def _check_network_output(out: object, x_t: torch.Tensor) -> None:
    if not isinstance(out, torch.Tensor) or out.shape != x_t.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the network must return a tensor of the input's shape {tuple(x_t.shape)}; got {shape}")
