"""The public names and signatures of DESIGN §2.2, which users and later work rely on."""

import inspect
import math
import subprocess
import sys

import torch

import softdiff as sd


def parameters(function):
    return list(inspect.signature(function).parameters)


def test_design_api_names_and_signatures():
    assert parameters(sd.SoftDiffusionProcess)[:3] == ["operator", "noise", "levels"]
    assert parameters(sd.SoftDiffusionProcess.corrupt)[:5] == ["self", "x0", "t", "noise", "seed"]
    assert parameters(sd.SoftDiffusionProcess.apply) == ["self", "x", "t"]
    for name in ("sigma", "level"):
        assert parameters(getattr(sd.SoftDiffusionProcess, name)) == ["self", "t"]
    assert parameters(sd.soft_score_matching_loss)[:5] == ["denoiser", "x0", "process", "weighting", "loss"]
    sample = inspect.signature(sd.sample).parameters
    assert list(sample)[:8] == ["denoiser", "process", "shape", "steps", "sampler", "seeds", "x_start", "t_start"]
    assert (sample["steps"].default, sample["sampler"].default, sample["t_start"].default) == (100, "momentum", 1.0)
    for step in (sd.samplers.momentum_step, sd.samplers.naive_step, sd.samplers.momentum_ode_step):
        assert parameters(step)[:6] == ["process", "x_t", "x0_hat", "t", "t_next", "noise"]
    assert parameters(sd.Masking) == ["seed"] and inspect.signature(sd.Masking).parameters["seed"].default == 0
    assert parameters(sd.GeometricNoise) == ["sigma_min", "sigma_max"]
    # The schedule constructors build the schedules they name: level(0.5) of each.
    half = torch.tensor([0.5], dtype=torch.float64)
    for constructor, args, level in (
        ("sin2", (2.0,), 2.0 * math.sin(math.pi / 4) ** 2),
        ("from_levels", ([0.0, 3.0],), 1.5),
        ("constant", (0.7,), 0.7),
        ("zero", (), 0.0),
    ):
        schedule = getattr(sd.LevelSchedule, constructor)(*args)
        assert isinstance(schedule, sd.LevelSchedule)
        assert math.isclose(float(schedule(half)), level, rel_tol=1e-12, abs_tol=1e-15), constructor
    assert parameters(sd.oracle.EmpiricalDenoiser)[:2] == ["data", "process"]
    assert parameters(sd.oracle.GaussianDenoiser)[:2] == ["variance", "process"]
    assert parameters(sd.Denoiser)[:3] == ["net", "process", "precond"]


def test_sd_sample_is_the_function_and_importing_the_command_entry_fails_clearly():
    # softdiff/sample.py only runs ``python -m softdiff.sample``: importing it would rebind the package attribute
    # from the function to a module, so it refuses, and sd.sample keeps sampling. In a fresh interpreter, so the
    # rest of the suite sees an untouched package.
    code = (
        "import torch, softdiff as sd\n"
        "try:\n"
        "    import softdiff.sample\n"
        "except ImportError as error:\n"
        "    assert 'softdiff.cli.sample' in str(error), error\n"
        "else:\n"
        "    raise SystemExit('import softdiff.sample did not fail')\n"
        "assert sd.sample is sd.samplers.sample\n"
        "noise, levels = sd.GeometricNoise(0.02, 5.0), sd.LevelSchedule.sin2(3.0)\n"
        "proc = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=noise, levels=levels)\n"
        "a = sd.sample(lambda x, t: 0.5 * x, proc, (2, 3, 8, 8), steps=3, seeds=[4, 5])\n"
        "assert a.shape == (2, 3, 8, 8)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
