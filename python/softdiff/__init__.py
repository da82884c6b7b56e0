"""softdiff: Soft Diffusion (Daras et al., "Soft Diffusion: Score Matching for General Corruptions", 2022).

Diffusion whose forward process is a linear degradation plus Gaussian noise, x_t = C_t x_0 + σ_t η,
trained with Soft Score Matching and sampled with the Momentum Sampler. See DESIGN §2.2 for the API:

    import softdiff as sd
    proc = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 100.0),
                                   levels=sd.LevelSchedule.sin2(11.5))
    x_t = proc.corrupt(x0, t)
    loss = sd.soft_score_matching_loss(denoiser, x0, proc)
    x = sd.sample(denoiser, proc, (16, 3, 32, 32), steps=100, sampler="momentum", seeds=range(16))
"""

from . import closed_form, oracle, samplers, time_grids
from ._version import __version__ as __version__
from .denoiser import Denoiser, edm_scalings
from .losses import loss_weight, soft_score_matching_loss, stratified_times
from .operators import (
    BasisOperator,
    Composite,
    DCTBlur,
    Desaturate,
    Identity,
    Masking,
    Operator,
    Pixelate,
    operator_from_dict,
    operator_from_name,
    register_operator,
)
from .prior import DCTGaussianPrior, GaussianPrior
from .process import SoftDiffusionProcess
from .samplers import momentum_ode_step, momentum_step, naive_step, sample, time_grid
from .schedule_design import design_schedule
from .schedules import GeometricNoise, LevelSchedule

__all__ = [
    "BasisOperator",
    "Composite",
    "DCTBlur",
    "DCTGaussianPrior",
    "Denoiser",
    "Desaturate",
    "GaussianPrior",
    "GeometricNoise",
    "Identity",
    "LevelSchedule",
    "Masking",
    "Operator",
    "Pixelate",
    "SoftDiffusionProcess",
    "closed_form",
    "design_schedule",
    "edm_scalings",
    "loss_weight",
    "momentum_ode_step",
    "momentum_step",
    "naive_step",
    "operator_from_dict",
    "operator_from_name",
    "oracle",
    "register_operator",
    "sample",
    "samplers",
    "soft_score_matching_loss",
    "stratified_times",
    "time_grid",
    "time_grids",
]
