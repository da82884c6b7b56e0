"""Training goes the right way: a short run of the real training loop on a task whose answer is known (a finite data
set, whose exact posterior mean sd.oracle.EmpiricalDenoiser computes) must close most of the gap between where the
network starts and that answer; and the EMA is the stated recursion, step by step, across a resume.

The other training tests check files, finiteness and bit-equality between runs, which hold just as well for a run
that climbs its loss (gradient ascent), never moves (a zero learning rate) or trains nothing (a detached loss)."""

import json

import pytest
import torch

import softdiff as sd
from softdiff.checkpoints import list_checkpoints, read_checkpoint
from softdiff.cli.train import parse_args
from softdiff.data import to_model_range
from softdiff.data.cache import load_data_cached
from softdiff.training.build import build_network
from softdiff.training.loop import train
from softdiff.training.state import ema_decay, update_ema

pytestmark = pytest.mark.usefixtures("one_thread")

# Eight 8x8 shapes images: small enough that 100 steps of the tiny net on a CPU go a long way towards their exact
# posterior mean, large enough that the answer is not one image.
LEARNING_RUN = ["--preset", "smoke", "--data", "shapes:8", "--resolution", "8", "--steps", "100", "--batch", "16",
                "--lr", "5e-3", "--warmup", "10", "--sigma-max", "5", "--precond", "edm", "--log-every", "10",
                "--ckpt-every", "100", "--sample-every", "100", "--nfe", "2", "--sample-count", "2"]  # fmt: skip
# Times at which 100 steps resolve the posterior mean; below t = 0.3 (σ < 0.1) the tiny net needs far longer.
LEARNING_TIMES = (0.5, 0.7, 0.9)
DRAWS_PER_IMAGE = 32


def zero_network(x, c_noise):
    return torch.zeros_like(x)


def soft_errors(denoiser, process, images, times, seed):
    """E‖C_t (D(x_t, t) − x_0)‖² per pixel at each time in ``times``, over DRAWS_PER_IMAGE fresh noise draws of each
    image (the error the soft loss measures, DESIGN §1.2) -> list of floats."""
    x0 = images.repeat(DRAWS_PER_IMAGE, 1, 1, 1)
    errors = []
    with torch.no_grad():
        for t in times:
            t_batch = torch.full((len(x0),), t)
            x_t = process.corrupt(x0, t_batch, seed=seed)
            errors.append(process.apply(denoiser(x_t, t_batch) - x0, t_batch).square().mean().item())
    return errors


def test_a_short_run_closes_most_of_the_gap_to_the_exact_posterior_mean(tmp_path):
    """The network's output layer starts at zero, so the run starts from EDM's skip path D = c_skip x_t. After 100
    steps on eight images, at t = 0.5, 0.7, 0.9 and on noise the run never drew, the EMA network and the raw one must
    close at least half of the summed gap between that start and the exact posterior mean of the eight images in the
    soft loss's error (measured: 0.62-0.84 per time over training seeds 0-3), and at least 30% at each time. Gradient
    ascent, a zero learning rate and a detached loss close none of it (ascent makes it negative)."""
    out = tmp_path / "run"
    config, preset, _ = parse_args([*LEARNING_RUN, "--out", str(out)])
    train(config, out, preset=preset)

    (step, path), *_ = list_checkpoints(out / "checkpoints")[-1:]
    assert step == 100
    state = read_checkpoint(path)
    process = sd.SoftDiffusionProcess.from_dict(state["process"])
    images = to_model_range(load_data_cached(config.data, size=config.resolution).images)  # the training set itself
    assert images.shape == (8, 3, 8, 8)
    start = soft_errors(sd.Denoiser(zero_network, process), process, images, LEARNING_TIMES, seed=10**6)
    answer = soft_errors(sd.oracle.EmpiricalDenoiser(images, process), process, images, LEARNING_TIMES, seed=10**6)
    assert all(a < 0.6 * s for a, s in zip(answer, start, strict=True))  # a gap worth closing at every time
    for weights in ("ema", "model"):
        net = build_network(config, channels=3)
        net.load_state_dict(state[weights])
        trained = soft_errors(sd.Denoiser(net.eval(), process), process, images, LEARNING_TIMES, seed=10**6)
        closed = [(s - e) / (s - a) for s, e, a in zip(start, trained, answer, strict=True)]
        summed = (sum(start) - sum(trained)) / (sum(start) - sum(answer))
        report = f"{weights}: gap closed {summed:.2f} in all, {[round(c, 2) for c in closed]} at t = {LEARNING_TIMES}"
        assert summed >= 0.5 and min(closed) >= 0.3, report
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 10 and max(losses[-3:]) < 0.85 * losses[0], losses  # the logged training loss falls too


# --- the EMA -------------------------------------------------------------------------------------------------


def test_ema_decay_is_warmed_up_then_capped():
    """min(decay, (1 + s)/(10 + s)): 1/10 after the first step, 2/11 after the second, ..., the cap from the step
    where (1 + s)/(10 + s) reaches it (s = 8990 for 0.999, s = 80 for 0.9)."""
    assert ema_decay(0.999, 0) == pytest.approx(0.1, rel=1e-15)
    assert ema_decay(0.999, 1) == pytest.approx(2 / 11, rel=1e-15)
    assert ema_decay(0.999, 90) == pytest.approx(91 / 100, rel=1e-15)
    assert ema_decay(0.999, 8989) == pytest.approx(8990 / 8999, rel=1e-15) and ema_decay(0.999, 8989) < 0.999
    assert ema_decay(0.999, 8990) == pytest.approx(0.999, rel=1e-15) and ema_decay(0.999, 10**6) == 0.999
    assert ema_decay(0.9, 79) == pytest.approx(80 / 89, rel=1e-15) and ema_decay(0.9, 80) == 0.9
    assert ema_decay(0.0, 5) == 0.0  # --ema 0: the EMA is the network itself


def test_update_ema_follows_the_recursion_by_hand():
    """e ← d e + (1 − d) p for every parameter, on a network whose parameters take prescribed values, against the
    recursion written out in Python floats (float64) with the warmed-up decays of the first steps."""
    net = torch.nn.Linear(2, 1).double()
    ema = torch.nn.Linear(2, 1).double()
    values = [[0.5, -1.0, 2.0], [1.5, 0.0, -2.0], [-0.25, 4.0, 1.0], [3.0, 3.0, 3.0]]  # (w0, w1, b) per step
    with torch.no_grad():
        ema.weight.copy_(torch.tensor([[1.0, 1.0]])), ema.bias.fill_(-1.0)
    expected = [1.0, 1.0, -1.0]
    for step, (w0, w1, b) in enumerate(values):
        with torch.no_grad():
            net.weight.copy_(torch.tensor([[w0, w1]])), net.bias.fill_(b)
        decay = ema_decay(0.999, step)  # 0.1, 2/11, 3/12, 4/13
        update_ema(ema, net, decay)
        expected = [decay * e + (1 - decay) * p for e, p in zip(expected, (w0, w1, b), strict=True)]
        got = [*ema.weight.flatten().tolist(), ema.bias.item()]
        assert got == pytest.approx(expected, rel=1e-14, abs=1e-15), f"step {step}"


def test_the_training_loop_applies_the_ema_every_step_and_across_a_resume(tmp_path):
    """In every checkpoint of a run stopped after 3 steps and resumed to 6, ema_k = d(k−1) ema_(k−1) + (1 − d(k−1))
    model_k with d the warmed-up decay of step k − 1 (0-based), to float32 rounding: the update runs once per step,
    after the optimizer's, with the step's own decay, and the resumed run continues the saved EMA."""
    out = tmp_path / "run"
    flags = ["--preset", "smoke", "--ckpt-every", "1", "--keep", "10", "--sample-every", "100", "--out", str(out)]
    for steps in ("3", "6"):
        config, preset, _ = parse_args([*flags, "--steps", steps])
        train(config, out, preset=preset)
    states = {step: read_checkpoint(path) for step, path in list_checkpoints(out / "checkpoints")}
    assert sorted(states) == [1, 2, 3, 4, 5, 6]
    for step in range(2, 7):
        decay = ema_decay(config.ema, step - 1)
        previous, now = states[step - 1]["ema"], states[step]["ema"]
        moved = 0.0
        for name, value in now.items():
            expected = decay * previous[name].double() + (1 - decay) * states[step]["model"][name].double()
            scale = 1 + expected.abs().max().item()
            assert (value.double() - expected).abs().max().item() <= 1e-6 * scale, f"{name} at step {step}"
            moved = max(moved, (value - previous[name]).abs().max().item())
        assert moved > 1e-5, f"the EMA did not move at step {step}"
