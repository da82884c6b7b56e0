"""Host synchronisations on the hot paths, counted exactly on the CPU.

Every ``.item()``, ``bool(tensor)``, ``float(tensor)`` and ``int(tensor)`` dispatches ``aten._local_scalar_dense``:
on a GPU each is a device-to-host copy that stalls the launch queue. A dispatch mode counts them. Targets: a
sampler step makes none (``sample()`` makes a constant number, whatever ``steps``), a loss call at most one, a
training step at most one (its NaN guard), with the value checks on (the default)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import softdiff as sd
from softdiff.cli.train import main as train
from softdiff.denoiser import Denoiser
from softdiff.networks import build_unet
from softdiff.spectra import DataSpectrum

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 1, 8, 8)


class SyncCounter(TorchDispatchMode):
    """Counts the calls of ``aten._local_scalar_dense`` (a device-to-host read of one value) while active."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def syncs(call) -> int:
    with SyncCounter() as counter:
        call()
    return counter.count


def zeros(x_t, t, labels=None):
    return torch.zeros_like(x_t)


def process():
    return sd.SoftDiffusionProcess(
        sd.DCTBlur(),
        noise=sd.GeometricNoise(0.02, 5.0),
        levels=sd.LevelSchedule.sin2(3),
        data_spectrum=DataSpectrum(torch.zeros(SHAPE[1:]), torch.ones(SHAPE[1:]), count=1),
    )


@pytest.mark.parametrize("sampler", sd.samplers.SAMPLERS)
def test_sample_syncs_a_constant_number_of_times_whatever_the_steps(sampler):
    proc = process()
    counts = [syncs(lambda n=n: sd.sample(zeros, proc, SHAPE, steps=n, sampler=sampler, seeds=[0, 1, 2]))
              for n in (10, 20)]  # fmt: skip
    assert counts[0] == counts[1] <= 4, counts  # no sync per step


def test_sample_with_labels_guidance_and_x_start_stays_constant():
    proc = process()
    x_start = torch.randn(SHAPE)

    def call(steps):
        return sd.sample(zeros, proc, SHAPE, steps=steps, x_start=x_start, t_start=0.5, seeds=torch.arange(3),
                         labels=[0, 1, -1], guidance=2.0)  # fmt: skip

    counts = [syncs(lambda n=n: call(n)) for n in (5, 15)]
    assert counts[0] == counts[1] <= 4, counts


def test_a_nan_from_the_denoiser_is_still_named_with_its_step():
    """The per-step output check moved to the device: the error names the first bad step all the same."""
    proc = process()

    def late_nan(x_t, t):
        return torch.full_like(x_t, float("nan")) if float(t[0]) < 0.55 else torch.zeros_like(x_t)

    with pytest.raises(ValueError, match=r"denoiser output at step 5 \(t=0\.5\) contains NaN or Inf"):
        sd.sample(late_nan, proc, SHAPE, steps=10, seeds=[0, 1, 2])


@pytest.mark.parametrize("loss", ["soft", "cold"])
def test_a_loss_call_syncs_at_most_once(loss):
    proc = process()
    net = build_unet("tiny", resolution=8, image_channels=1).eval()
    denoiser = Denoiser(net, proc, precond="edm")
    x0 = torch.rand(SHAPE) * 2 - 1
    assert syncs(lambda: sd.soft_score_matching_loss(denoiser, x0, proc, loss=loss)) <= 1
    t, noise = torch.rand(3), torch.randn(SHAPE)
    assert syncs(lambda: sd.soft_score_matching_loss(denoiser, x0, proc, t=t, noise=noise)) <= 1
    assert syncs(lambda: proc.corrupt(x0, t, seed=7)) <= 1


def test_a_training_step_syncs_at_most_once(tmp_path):
    """The difference between runs of 4 and 8 steps (the same start-up, final log, checkpoint and grid) is the
    syncs of 4 steps."""
    quiet = ["--log-every", "1000", "--ckpt-every", "1000", "--sample-every", "1000", "--sample-count", "2"]

    def run(steps):
        return train(["--preset", "smoke", "--out", str(tmp_path / f"run{steps}"), "--steps", str(steps), *quiet])

    counts = [syncs(lambda n=n: run(n)) for n in (4, 8)]
    assert counts[1] - counts[0] <= 4, counts
