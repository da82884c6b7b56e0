"""python -m softdiff.train and python -m softdiff.sample: end to end, resume, kill -9, corrupt checkpoints,
the NaN guard, 2-process DDP, per-seed sampling."""

import io
import itertools
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import softdiff as sd
import softdiff.cli.train as train_command
import softdiff.training.build as train_build
import softdiff.training.loop as train_loop
from softdiff.checkpoints import (
    CHECKPOINT_KEYS,
    UnsafeCheckpoint,
    checkpoint_path,
    list_checkpoints,
    load_latest,
    read_checkpoint,
    save_checkpoint,
)
from softdiff.loading import parse_seeds
from softdiff.operators import DCTBlur
from softdiff.training.config import PRESETS, TrainConfig, check_config
from softdiff.training.state import learning_rate

SMOKE = ["--preset", "smoke"]


def run(*args, check=True, timeout=600, **kwargs):
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def final_weights(out):
    state, _ = load_latest(out / "checkpoints")
    return state


def assert_same_state(a, b):
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    assert a["step"] == b["step"]


def test_smoke_training_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = run("softdiff.train", *SMOKE, "--out", str(out))
    assert "preset smoke" in result.stdout
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert all({"loss", "img_per_s", "lr"} <= set(r) and np.isfinite(r["loss"]) for r in log)
    assert (out / "samples" / "step-00000006.png").exists()
    assert [step for step, _ in list_checkpoints(out / "checkpoints")] == [3, 6]
    state = final_weights(out)
    assert {"model", "ema", "optimizer", "scaler", "step", "rng", "data_position", "config", "process"} <= set(state)
    assert state["data_position"] == 6 * 8 and state["config"]["net"] == "tiny"
    torch.load(out / "checkpoints" / "ckpt-00000006.pt", weights_only=True)  # tensors and plain values only
    # The closing lines say what was written and how to go on; a second run of a finished one says so.
    assert "steps 0 -> 6" in result.stdout and str(out / "samples" / "step-00000006.png") in result.stdout
    assert str(out / "checkpoints" / "ckpt-00000006.pt") in result.stdout
    assert f"python -m softdiff.sample --ckpt {out}" in result.stdout and "longer" not in result.stdout
    again = run("softdiff.train", *SMOKE, "--out", str(out))
    assert "already at step 6; raise --steps" in again.stdout


def write_cifar10_tar_gz(path, per_batch=4):
    """A cifar-10-python.tar.gz in the real layout (cifar-10-batches-py/data_batch_1..5, test_batch) of noise images."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as archive:
        for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
            data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            blob = pickle.dumps({b"data": data, b"labels": [0] * per_batch}, protocol=2)
            member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            member.size = len(blob)
            archive.addfile(member, io.BytesIO(blob))


def write_celeba_zip(path, count=4):
    """An img_align_celeba.zip of 178x218 JPEG noise images, named as the real ones."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(count):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(buffer, format="JPEG")
            archive.writestr(f"img_align_celeba/{i + 1:06d}.jpg", buffer.getvalue())


# preset: data spec (under the test's folder), resolution, σ_max, blur σ_B at t = 1 (DESIGN §1.1, §1.6)
PAPER_SETUPS = {
    "cifar10": ("cifar10:{}/cifar-10-python.tar.gz", 32, 100.0, 0.36 * 32),
    "celeba64": ("celeba:{}/img_align_celeba.zip", 64, 180.0, 23.0),
}


@pytest.mark.parametrize("preset", PAPER_SETUPS)
def test_paper_presets_train_and_sample_on_their_data_formats(tmp_path, preset):
    """The paper's setups run end to end on files in the real formats: the paper net, its optimiser and EMA, σ_max
    and blur, a sample grid and a checkpoint (one step of two images and one sample; the rest as the preset says)."""
    spec, resolution, sigma_max, blur_max = PAPER_SETUPS[preset]
    write_cifar10_tar_gz(tmp_path / "cifar-10-python.tar.gz")
    write_celeba_zip(tmp_path / "img_align_celeba.zip")
    out = tmp_path / "run"
    flags = ["--steps", "1", "--batch", "2", "--nfe", "1", "--sample-count", "1", "--sample-every", "1"]
    result = run("softdiff.train", "--preset", preset, "--data", spec.format(tmp_path), "--out", str(out), *flags)
    started = rf"preset {preset}, \d+ images \(3, {resolution}, {resolution}\), net paper \(6\d\.\d\dM parameters"
    assert re.search(started, result.stdout), result.stdout
    state = final_weights(out)
    paper = dict(net="paper", resolution=resolution, sigma_min=0.02, sigma_max=sigma_max, lr=2e-4, warmup=5000,
                 ema=0.999, grad_clip=1.0, flips=True, precond="edm", loss="soft", t_power=1.0)  # fmt: skip
    assert {key: state["config"][key] for key in paper} == paper
    assert state["process"]["levels"] == {"kind": "sin2", "levels": [pytest.approx(blur_max)]}
    assert (out / "samples" / "step-00000001.png").exists()


def test_resume_after_a_clean_stop_equals_one_run(tmp_path):
    run("softdiff.train", *SMOKE, "--out", str(tmp_path / "a"), "--steps", "3")
    resumed = run("softdiff.train", *SMOKE, "--out", str(tmp_path / "a"), "--steps", "6")
    assert "resuming from" in resumed.stdout
    run("softdiff.train", *SMOKE, "--out", str(tmp_path / "b"), "--steps", "6")
    assert_same_state(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))
    steps = [json.loads(line)["step"] for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


# Runs softdiff.train and kills itself with SIGKILL at a given point of its progress (not of the clock): inside the
# forward pass of a given step (KILL_IN_STEP, 1-based), or halfway through writing a given checkpoint (KILL_WRITING).
KILLING_LAUNCHER = """
import io, os, signal, sys
import torch
import softdiff.training.loop as loop
from softdiff import checkpoints
from softdiff.cli.train import main

kill_in_step = int(os.environ.get("KILL_IN_STEP", "0"))
kill_writing = int(os.environ.get("KILL_WRITING", "0"))
real_loss, real_save, calls = loop.soft_score_matching_loss, loop.save_checkpoint, []

def loss(*args, **kwargs):
    calls.append(1)
    if len(calls) == kill_in_step:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_loss(*args, **kwargs)

def save(state, folder, step, *, keep):
    if step == kill_writing:  # the temporary file save_checkpoint writes, torn halfway
        blob = io.BytesIO()
        torch.save(state, blob)
        partial = checkpoints.checkpoint_path(folder, step).with_name(f".ckpt-{step:08d}.pt.tmp-{os.getpid()}")
        partial.write_bytes(blob.getvalue()[: len(blob.getvalue()) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(state, folder, step, keep=keep)

loop.soft_score_matching_loss, loop.save_checkpoint = loss, save
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_and_resume_is_bit_exact(tmp_path):
    """Killed inside step 7 (after the checkpoint of step 6), resumed, killed again while writing the checkpoint of
    step 10, resumed to the end: the weights equal an uninterrupted run's bit for bit; the log has each step once."""
    args = [*SMOKE, "--steps", "12", "--ckpt-every", "2", "--keep", "2", "--sample-every", "1000"]
    killed = tmp_path / "killed"
    launcher = tmp_path / "killing_launcher.py"
    launcher.write_text(KILLING_LAUNCHER)
    for kill, resumes_from in (({"KILL_IN_STEP": "7"}, None), ({"KILL_WRITING": "10"}, 6)):
        result = subprocess.run([sys.executable, str(launcher), *args, "--out", str(killed)], capture_output=True,
                                text=True, timeout=600, env={**os.environ, **kill})  # fmt: skip
        assert result.returncode == -signal.SIGKILL, result.stdout[-2000:] + result.stderr[-2000:]
        if resumes_from is not None:
            assert f"resuming from {killed / 'checkpoints' / f'ckpt-{resumes_from:08d}.pt'}" in result.stdout
    assert [step for step, _ in list_checkpoints(killed / "checkpoints")] == [6, 8]
    assert list((killed / "checkpoints").glob(".ckpt-00000010.pt.tmp-*")), "the torn write should be there"
    resumed = run("softdiff.train", *args, "--out", str(killed))
    assert "resuming from" in resumed.stdout and "ckpt-00000008.pt" in resumed.stdout
    assert not list((killed / "checkpoints").glob(".ckpt-*.tmp-*")), "the torn write is cleared on resume"
    run("softdiff.train", *args, "--out", str(tmp_path / "whole"))
    assert_same_state(final_weights(killed), final_weights(tmp_path / "whole"))
    steps = [json.loads(line)["step"] for line in (killed / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    out = tmp_path / "run"
    run("softdiff.train", *SMOKE, "--out", str(out))
    newest = list_checkpoints(out / "checkpoints")[-1][1]
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    result = run("softdiff.train", *SMOKE, "--out", str(out), "--steps", "6")
    assert "ckpt-00000006.pt is unreadable" in result.stderr and "resuming from" in result.stdout
    assert "ckpt-00000003.pt" in result.stdout


def test_unreadable_checkpoints_are_never_deleted(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    for _, path in list_checkpoints(out / "checkpoints"):
        path.write_bytes(b"not a checkpoint")
    before = {path: path.read_bytes() for _, path in list_checkpoints(out / "checkpoints")}
    result = run("softdiff.train", *SMOKE, "--out", str(out), check=False)
    assert result.returncode != 0 and "no checkpoint in" in result.stderr and "nothing was deleted" in result.stderr
    assert {path: path.read_bytes() for _, path in list_checkpoints(out / "checkpoints")} == before
    # A run resumed below an unreadable newer checkpoint prunes only up to the one it writes, never that one.
    folder = tmp_path / "prune"
    save_checkpoint({"step": 2}, folder, 2, keep=1)
    checkpoint_path(folder, 6).write_bytes(b"unreadable")
    written = save_checkpoint({"step": 4}, folder, 4, keep=1)
    assert [step for step, _ in list_checkpoints(folder)] == [4, 6] and written.exists()


def test_checkpoints_that_need_more_than_a_weights_only_load_are_refused_unless_trusted(tmp_path, monkeypatch):
    path = tmp_path / "ckpt-00000001.pt"
    state = {key: {} for key in CHECKPOINT_KEYS} | {"step": 1, "rng": np.random.get_state()}  # noqa: NPY002
    torch.save(state, path)  # a numpy array: code runs to rebuild it
    with pytest.raises(UnsafeCheckpoint, match="SOFTDIFF_TRUST_CHECKPOINTS=1 loads it"):
        read_checkpoint(path)
    assert load_latest(tmp_path) is None
    monkeypatch.setenv("SOFTDIFF_TRUST_CHECKPOINTS", "1")
    assert read_checkpoint(path)["step"] == 1


@pytest.mark.parametrize(
    ("poison", "flags", "message"),
    [
        (lambda loss: loss * float("nan"), [], "the loss is nan at step 5"),
        # A finite loss whose gradient is not (sqrt at 0): clipping would turn it into NaN weights.
        (lambda loss: loss + (0 * loss).sqrt(), ["--grad-clip", "0"], "the gradient norm is nan at step 5"),
    ],
)
def test_non_finite_loss_or_gradient_stops_before_anything_is_saved(tmp_path, monkeypatch, poison, flags, message):
    """Poisoned in the 5th step (checkpoint every 3): the message names step 5 and the checkpoint of step 3."""
    poison_call(monkeypatch, 5, poison)
    config, preset, _ = train_command.parse_args([*SMOKE, *flags])
    last = re.escape(f"the last checkpoint is {checkpoint_path(tmp_path / 'run' / 'checkpoints', 3)} (step 3)")
    with pytest.raises(train_loop.NonFiniteLoss, match=f"{message}; nothing of step 5 was saved .*; {last}"):
        train_loop.train(config, tmp_path / "run", preset=preset)
    assert [step for step, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [3]
    assert all(torch.isfinite(v).all() for v in final_weights(tmp_path / "run")["model"].values())


def poison_call(monkeypatch, call, poison):
    """Make the ``call``-th loss of this process (1-based) ``poison(loss)``."""
    calls = []
    real_loss = train_loop.soft_score_matching_loss

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return poison(loss) if len(calls) == call else loss

    monkeypatch.setattr(train_loop, "soft_score_matching_loss", poisoned)


def test_the_non_finite_stop_says_what_is_on_disk(tmp_path, monkeypatch):
    """Before any checkpoint it says there is none (it used to call the last one intact); resumed from step 3 and
    poisoned at once, it names step 4 and the checkpoint it resumed from."""
    config, preset, _ = train_command.parse_args([*SMOKE, "--steps", "3"])
    poison_call(monkeypatch, 1, lambda loss: loss * float("nan"))
    with pytest.raises(train_loop.NonFiniteLoss, match=r"at step 1; nothing of step 1 .*; no checkpoint has been wri"):
        train_loop.train(config, tmp_path / "fresh", preset=preset)
    assert not list_checkpoints(tmp_path / "fresh" / "checkpoints")
    monkeypatch.undo()
    train_loop.train(config, tmp_path / "resumed", preset=preset)
    poison_call(monkeypatch, 1, lambda loss: loss * float("nan"))
    config, preset, _ = train_command.parse_args(SMOKE)
    last = re.escape(f"the last checkpoint is {checkpoint_path(tmp_path / 'resumed' / 'checkpoints', 3)} (step 3)")
    with pytest.raises(train_loop.NonFiniteLoss, match=f"at step 4; nothing of step 4 .*; {last}"):
        train_loop.train(config, tmp_path / "resumed", preset=preset)


def test_fewer_steps_than_done_says_only_that(trained):
    """--steps below the run's step: one line, that it is already there (no start line "steps 6->3" first)."""
    result = run("softdiff.train", *SMOKE, "--out", str(trained), "--steps", "3")
    assert result.stdout.splitlines() == [train_command.finished_message(trained, 6, 3, 0.0, None, None)]
    assert result.stderr == ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_equals_one_process(tmp_path):
    args = [*SMOKE, "--steps", "4", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ddp = run("torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
              str(free_port()), "-m", "softdiff.train", *args, "--out", str(tmp_path / "ddp"), env=env)  # fmt: skip
    assert "2 ranks hold identical weights" in ddp.stdout
    run("softdiff.train", *args, "--out", str(tmp_path / "single"), env=env)
    two, one = final_weights(tmp_path / "ddp"), final_weights(tmp_path / "single")
    for name in one["model"]:
        torch.testing.assert_close(two["model"][name], one["model"][name], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    run("softdiff.train", *SMOKE, "--out", str(out))
    return out


def test_sample_cli_per_seed_reproducible(trained, tmp_path):
    run("softdiff.sample", "--ckpt", str(trained), "--seeds", "0-3", "--steps", "4", "--batch", "4", "--out",
        str(tmp_path / "all.npz"), "--no-progress")  # fmt: skip
    run("softdiff.sample", "--ckpt", str(trained / "checkpoints" / "ckpt-00000006.pt"), "--seeds", "2,3", "--steps",
        "4", "--batch", "1", "--out", str(tmp_path / "some"), "--no-progress")  # fmt: skip
    images = np.load(tmp_path / "all.npz")["arr_0"]
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8
    from PIL import Image

    for seed in (2, 3):
        alone = np.asarray(Image.open(tmp_path / "some" / f"seed-{seed:06d}.png"))
        assert np.abs(alone.astype(int) - images[seed].astype(int)).max() <= 1
    assert (tmp_path / "some-grid.png").exists() and not (tmp_path / "some" / "grid.png").exists()


def test_sample_cli_under_torchrun_equals_one_process(trained, tmp_path):
    # Five seeds over two ranks (3 + 2): the gathered .npz must hold the single-process images in seed order.
    # Seeds listed out of order stay in the listed order; the grid of a folder output holds every rank's images.
    args = ["--ckpt", str(trained), "--seeds", "14,10-13", "--steps", "3", "--batch", "2", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    torchrun = ["torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port"]
    run(*torchrun, str(free_port()), "-m", "softdiff.sample", *args, "--out", str(tmp_path / "two.npz"), env=env)
    run("softdiff.sample", *args, "--out", str(tmp_path / "one.npz"), env=env)
    two, one = np.load(tmp_path / "two.npz")["arr_0"], np.load(tmp_path / "one.npz")["arr_0"]
    assert two.shape == one.shape == (5, 16, 16, 3)
    assert np.abs(two.astype(int) - one.astype(int)).max() <= 1
    run("softdiff.sample", *args[:2], "--seeds", "14", "--steps", "3", "--out", str(tmp_path / "alone.npz"), env=env)
    assert np.abs(np.load(tmp_path / "alone.npz")["arr_0"][0].astype(int) - one[0].astype(int)).max() <= 1
    folder_args = ["--ckpt", str(trained), "--num-samples", "3", "--steps", "2", "--no-progress", "--out"]
    run(*torchrun, str(free_port()), "-m", "softdiff.sample", *folder_args, str(tmp_path / "two"), env=env)
    run("softdiff.sample", *folder_args, str(tmp_path / "one"), env=env)
    from PIL import Image

    grids = [np.asarray(Image.open(tmp_path / f"{name}-grid.png")).astype(int) for name in ("two", "one")]
    assert grids[0].shape == grids[1].shape and np.abs(grids[0] - grids[1]).max() <= 1


def test_sample_cli_restore_and_errors(trained, tmp_path):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    restored = run("softdiff.sample", "--ckpt", str(trained), "--restore", str(tmp_path / "in.png"), "--t-start",
                   "0.3", "--steps", "3", "--out", str(tmp_path / "restored"), "--no-progress")  # fmt: skip
    written = sorted(path.name for path in (tmp_path / "restored").glob("restore-seed-*.png"))
    assert written == [f"restore-seed-{seed:06d}.png" for seed in range(8)]  # 8 draws by default, not 64
    assert "wrote 8 restorations" in restored.stderr and "not writable" not in restored.stderr
    missing = run("softdiff.sample", "--ckpt", str(tmp_path / "nothing.pt"), "--out", str(tmp_path / "x"),
                  check=False)  # fmt: skip
    assert missing.returncode != 0 and "checkpoint not found" in missing.stderr
    no_level = run("softdiff.sample", "--ckpt", str(trained), "--restore", str(tmp_path / "in.png"), "--out",
                   str(tmp_path / "x"), check=False)  # fmt: skip
    assert no_level.returncode != 0 and "--restore needs --t-start" in no_level.stderr
    # --add-noise draws each image's noise from its own seed: the same command twice gives the same pictures.
    noisy = ["--restore", str(tmp_path / "in.png"), "--t-start", "0.3", "--add-noise", "--seeds", "4", "--steps", "2"]
    for name in ("n1", "n2"):
        run("softdiff.sample", "--ckpt", str(trained), *noisy, "--out", str(tmp_path / name), "--no-progress")
    first, second = ((tmp_path / name / "restore-seed-000004.png").read_bytes() for name in ("n1", "n2"))
    assert first == second


@pytest.mark.parametrize("operator", ["pixelate", "desaturate", "masking", "dct_blur+desaturate"])
def test_every_operator_trains_samples_and_restores_with_an_estimated_level(operator, tmp_path, capsys):
    from softdiff.cli.sample import main as sample_main
    from softdiff.cli.train import main as train_main

    out = tmp_path / "run"
    train_main([*SMOKE, "--out", str(out), "--steps", "2", "--operator", operator])
    state = final_weights(out)
    assert sd.operator_from_dict(state["process"]["operator"]).label == operator
    assert state["process"]["data_spectrum"]["variance"].shape == (3, 16, 16)
    clean = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 3, 16, 16), dtype=np.uint8))
    process = sd.SoftDiffusionProcess.from_dict(state["process"])
    corrupted = process.apply(clean.double() / 127.5 - 1, 0.5).clamp(-1, 1)
    image = ((corrupted[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    capsys.readouterr()
    sample_main(["--ckpt", str(out), "--restore", str(tmp_path / "in.png"), "--t-start", "auto", "--n", "2",
                 "--steps", "2", "--out", str(tmp_path / "restored"), "--no-progress"])  # fmt: skip
    said = capsys.readouterr().err
    assert "--t-start auto: level" in said and "restoring from t = " in said and "wrote 2 restorations" in said
    sample_main(["--ckpt", str(out), "--n", "2", "--steps", "3", "--sampler", "heun", "--out", str(tmp_path / "s.npz"),
                 "--no-progress"])  # fmt: skip
    assert np.load(tmp_path / "s.npz")["arr_0"].shape == (2, 16, 16, 3)


def test_operators_that_cannot_take_the_data_are_refused_before_training(tmp_path):
    grey = run("softdiff.train", *SMOKE, "--data", "mnist", "--out", str(tmp_path / "g"), "--operator", "desaturate",
               check=False)  # fmt: skip
    assert grey.returncode != 0 and "--operator desaturate" in grey.stderr and "3 (RGB) channels" in grey.stderr
    with pytest.raises(SystemExit, match="--operator is not a usable corruption: these operators do not commute"):
        train_command.parse_args([*SMOKE, "--operator", "dct_blur+pixelate"])
    with pytest.raises(SystemExit, match="unknown operator 'blur'"):
        train_command.parse_args([*SMOKE, "--operator", "blur"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--t-start", "0.5"], "--t-start and --add-noise apply to --restore's image"),
        (["--restore", "x.png", "--t-start", "0.5", "--out", "r.npz"], "give --out a folder, not a .npz"),
        (["--n", "0"], "--n must be >= 1"),
        (["--batch", "0"], "--steps and --batch must be >= 1"),
    ],
)
def test_sample_cli_names_bad_options(flags, message):
    from softdiff.cli.sample import parse_args

    out = [] if "--out" in flags else ["--out", "samples"]
    with pytest.raises(SystemExit, match=re.escape(message)):
        parse_args(["--ckpt", "run", *out, *flags])
    with pytest.raises(SystemExit, match="the range 3-1 is empty"):
        parse_seeds("3-1")


def test_train_rejects_bad_options(tmp_path):
    result = run("softdiff.train", *SMOKE, "--net", "huge", "--out", str(tmp_path / "x"), check=False)
    assert result.returncode != 0 and "--net must be one of" in result.stderr
    other = tmp_path / "other"
    run("softdiff.train", *SMOKE, "--out", str(other))
    clash = run("softdiff.train", *SMOKE, "--out", str(other), "--resolution", "32", "--sigma-max", "7", check=False)
    assert clash.returncode != 0 and "use another --out" in clash.stderr
    assert "resolution=16, sigma_max=100.0; this command asks for resolution=32, sigma_max=7.0" in clash.stderr
    # What a resumed run may change: its length and what it writes.
    longer = run("softdiff.train", *SMOKE, "--out", str(other), "--steps", "8", "--log-every", "2", "--keep", "1")
    assert "resuming from" in longer.stdout and [s for s, _ in list_checkpoints(other / "checkpoints")] == [8]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--log-every", "0"], "--log-every must be >= 1; got 0"),
        (["--sample-every", "0"], "--sample-every must be >= 1"),
        (["--t-power", "nan"], "--t-power must be a finite number, got nan"),
        (["--resolution", "30"], "--resolution must be a multiple of 4 for the tiny net"),
        (["--dropout", "2"], "--dropout must lie in [0, 1)"),
        (["--nfe", "0"], "--nfe must be >= 1"),
        (["--sample-count", "0"], "--sample-count must be >= 1"),
        (["--sigma-min", "2", "--sigma-max", "1"], "--sigma-min must be <= --sigma-max (1.0); got 2.0"),
        (["--sigma-min", "0"], "--sigma-min must be > 0"),
        (["--grad-clip", "-1"], "--grad-clip must be >= 0"),
        (["--loss-ahead", "1.5"], "--loss-ahead must lie in [0, 1]"),
        (["--loss", "cold", "--loss-ahead", "0.02"], "--loss-ahead must be 0 with --loss cold"),
    ],
)
def test_bad_settings_are_named_before_anything_runs(flags, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        train_command.parse_args([*SMOKE, *flags])


def test_help_lists_defaults_and_presets(capsys):
    with pytest.raises(SystemExit):
        train_command.parse_args(["--help"])
    shown = capsys.readouterr().out
    assert (
        "defaults: data=shapes, resolution=32" in shown
        and "demo: data=mnist" in shown
        and "shapes: data=shapes:4096" in shown
    )
    assert "--sigma-max SIGMA_MAX" in shown and "data in [-1, 1] units" in shown


def test_bad_data_and_device_are_named(tmp_path):
    config, preset, _ = train_command.parse_args([*SMOKE, "--data", "shapes:x"])
    with pytest.raises(SystemExit, match=re.escape("--data shapes:x: data spec 'shapes:x': 'x' is not a whole number")):
        train_loop.train(config, tmp_path / "x", preset=preset)
    config, preset, _ = train_command.parse_args([*SMOKE, "--data", f"cifar10:{tmp_path / 'nowhere.tar.gz'}"])
    with pytest.raises(SystemExit, match="data not found"):
        train_loop.train(config, tmp_path / "x", preset=preset)
    if not torch.cuda.is_available():
        config, preset, _ = train_command.parse_args([*SMOKE, "--device", "cuda"])
        with pytest.raises(SystemExit, match="--device cuda, but PyTorch sees no CUDA GPU"):
            train_loop.train(config, tmp_path / "x", preset=preset)
    assert not (tmp_path / "x").exists()


def test_torchrun_ranks_get_their_device_from_the_shared_rule(monkeypatch):
    """Under torchrun a device without a torch.distributed backend (mps) is refused by name rather than silently
    replaced by the CPU; a CPU run gets the CPU (the gloo ranks themselves are tested end to end above)."""
    config = TrainConfig(**PRESETS["smoke"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(train_loop, "resolve_device", lambda name, command: torch.device("mps"))
    with pytest.raises(SystemExit, match=r"--device mps cannot run under torchrun .* --device cuda or --device cpu"):
        train_loop.setup_distributed(config)
    monkeypatch.setattr(train_loop.dist, "init_process_group", lambda backend, **k: calls.append(backend))
    monkeypatch.setattr(train_loop, "resolve_device", lambda name, command: torch.device("cpu"))
    calls = []
    ddp, device = train_loop.setup_distributed(config)
    assert (ddp.rank, ddp.world, device, calls) == (0, 2, torch.device("cpu"), ["gloo"])


def test_fresh_start_rewrites_a_log_and_clears_partial_checkpoints(tmp_path):
    """A run killed before its first checkpoint leaves log lines (one torn) and maybe a half-written checkpoint:
    the next run starts over and its log holds each step once."""
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "log.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    partial = out / "checkpoints" / ".ckpt-00000003.pt.tmp-12345"
    partial.write_bytes(b"half a checkpoint")
    run("softdiff.train", *SMOKE, "--out", str(out))
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    assert not partial.exists()


def test_bf16_autocast_and_channels_last_run_and_resume_exactly(tmp_path):
    out = tmp_path / "amp"
    options = ["--amp", "bf16", "--channels-last", "--device", "cpu"]
    result = run("softdiff.train", *SMOKE, "--out", str(out), "--steps", "3", *options)
    assert "bfloat16" in result.stdout
    state = final_weights(out)
    assert state["config"]["amp"] == "bf16" and state["config"]["channels_last"] is True
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    resumed = tmp_path / "resumed"  # under bf16 autocast too, a resumed run is the uninterrupted one
    run("softdiff.train", *SMOKE, "--out", str(resumed), "--steps", "2", "--ckpt-every", "1", *options)
    run("softdiff.train", *SMOKE, "--out", str(resumed), "--steps", "3", *options)
    assert_same_state(final_weights(resumed), state)
    # The precision may change on resume (the weights are float32 throughout): on to fp16 with a fresh gradient
    # scaler, and back to float32, which ignores the scaler's state.
    fp16 = run("softdiff.train", *SMOKE, "--out", str(out), "--steps", "4", "--amp", "fp16")
    assert "resuming from" in fp16.stdout and final_weights(out)["scaler"]
    run("softdiff.train", *SMOKE, "--out", str(out), "--steps", "5", "--amp", "off")
    state = final_weights(out)
    assert state["config"]["amp"] == "off" and state["step"] == 5 and not state["scaler"]
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_amp_auto_picks_bf16_only_where_it_is_native(monkeypatch):
    cpu = torch.device("cpu")
    assert PRESETS["demo"]["amp"] == "auto"  # the tiny net's demo trains in bf16 where it is native
    assert PRESETS["shapes"].get("amp", "off") == "off"  # opt-in elsewhere (it diverged for the small net)
    assert isinstance(train_build.native_bf16(cpu), bool) and not train_build.native_bf16(torch.device("meta"))
    assert train_build.autocast_dtype("off", cpu) is None
    assert train_build.autocast_dtype("bf16", cpu) == torch.bfloat16
    assert train_build.autocast_dtype("fp16", cpu) == torch.float16
    monkeypatch.setattr(train_build, "native_bf16", lambda device: True)
    assert train_build.autocast_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(train_build, "native_bf16", lambda device: False)
    assert train_build.autocast_dtype("auto", cpu) is None
    with pytest.raises(SystemExit, match="--amp must be one of off, bf16, fp16, auto"):
        check_config(TrainConfig(amp="fp32"))


def test_fitted_prior_and_identity_operator_runs(tmp_path):
    out = tmp_path / "fit"
    run("softdiff.train", *SMOKE, "--out", str(out), "--steps", "2", "--prior", "fit", "--sigma-max", "0.5")
    assert final_weights(out)["process"]["prior"]["kind"] == "dct_gaussian"
    run("softdiff.train", *SMOKE, "--out", str(tmp_path / "ve"), "--steps", "2", "--operator", "identity")
    assert final_weights(tmp_path / "ve")["process"]["operator"]["name"] == "identity"


def test_wiener_preconditioning_trains_resumes_and_samples(tmp_path):
    """--precond wiener stores the data's second moment in every checkpoint; a resumed run and the sampler CLI use
    the stored one (a run resumed from step 2 equals an uninterrupted one)."""
    wiener = ["--precond", "wiener", "--weighting", "sigma2"]
    run("softdiff.train", *SMOKE, *wiener, "--out", str(tmp_path / "a"), "--steps", "2")
    run("softdiff.train", *SMOKE, *wiener, "--out", str(tmp_path / "a"), "--steps", "4")
    run("softdiff.train", *SMOKE, *wiener, "--out", str(tmp_path / "b"), "--steps", "4")
    state = final_weights(tmp_path / "a")
    assert_same_state(state, final_weights(tmp_path / "b"))
    from softdiff.data import load_images, to_model_range
    from softdiff.denoiser import data_second_moment

    images = to_model_range(load_images(state["config"]["data"], size=state["config"]["resolution"]))
    torch.testing.assert_close(state["second_moment"], data_second_moment(DCTBlur(), images))
    out = tmp_path / "samples.npz"
    run("softdiff.sample", "--ckpt", str(tmp_path / "a"), "--n", "2", "--steps", "3", "--out", str(out))
    assert np.load(out)["arr_0"].shape == (2, 16, 16, 3)


def test_loss_weighting_follows_the_preconditioning_unless_given():
    """EDM's λ = 1/c_out² presumes EDM's output scale; with the residual form it weighs t = 1 10^4 times t = 0.3."""
    config = TrainConfig
    assert [config(precond=p).weighting for p in ("edm", "paper", "wiener")] == ["edm", "sigma2", "sigma2"]
    assert config(precond="paper", weighting="edm").weighting == "edm"
    assert train_command.parse_args(["--preset", "cifar10", "--precond", "paper"])[0].weighting == "sigma2"
    with pytest.raises(SystemExit, match="--precond must be one of edm, paper, wiener"):
        train_command.parse_args([*SMOKE, "--precond", "karras"])


def test_learning_rate_warmup_and_cosine_decay():
    constant = TrainConfig(lr=1e-3, warmup=10, steps=100)
    assert [learning_rate(constant, s) for s in (0, 4, 9, 50, 99)] == [1e-4, 5e-4, 1e-3, 1e-3, 1e-3]
    cosine = TrainConfig(lr=1e-3, warmup=10, steps=100, lr_decay="cosine")
    rates = [learning_rate(cosine, s) for s in range(100)]
    assert rates[0] == pytest.approx(1e-4 * 0.5 * (1 + np.cos(0)))
    assert rates[50] == pytest.approx(0.5e-3) and rates[99] == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi * 0.99)))
    assert all(b <= a for a, b in itertools.pairwise(rates[9:])) and 0 < rates[-1] < 1e-6
    with pytest.raises(SystemExit, match="--lr-decay must be one of"):
        check_config(TrainConfig(lr_decay="linear"))
