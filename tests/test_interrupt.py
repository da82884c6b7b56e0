"""SIGINT and SIGTERM during python -m softdiff.train, sent for real: the run stops after the step in flight with a
checkpoint of it, says so in one line and exits 130 / 143; the same command resumes bit for bit; a second signal
exits at once; two DDP ranks agree on the step; the handlers live only as long as train()."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import softdiff.cli.train as train_command
import softdiff.training.loop as train_loop
from softdiff.checkpoints import checkpoint_path, list_checkpoints, load_latest, read_checkpoint
from softdiff.training.interrupt import Interrupted

PYTHON = str(Path(__file__).resolve().parents[1] / "python")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([PYTHON, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
# Enough steps that a signal sent a few steps in lands well before the end; a checkpoint every 10.
ARGS = ["--preset", "smoke", "--steps", "40", "--ckpt-every", "10", "--sample-every", "1000", "--device", "cpu"]
MESSAGE = re.compile(r"softdiff\.train: interrupted at step (\d+) \((SIGINT|SIGTERM)\); checkpoint written to (\S+); "
                     r"run the same command to resume")  # fmt: skip


def start(command: list[str], out: Path, **kwargs) -> subprocess.Popen:
    """``command`` in the background, its stdout and stderr going to files beside ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{out}.stdout", "w") as stdout, open(f"{out}.stderr", "w") as stderr:
        return subprocess.Popen(command, stdout=stdout, stderr=stderr, env=ENV, **kwargs)


def finish(process: subprocess.Popen, out: Path, timeout: float = 300) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a process started by :func:`start`."""
    code = process.wait(timeout=timeout)
    return code, Path(f"{out}.stdout").read_text(), Path(f"{out}.stderr").read_text()


def wait_for_steps(out: Path, steps: int, process: subprocess.Popen, timeout: float = 300) -> None:
    """Poll the run's log until it shows ``steps`` steps (the process still running)."""
    log, deadline = out / "log.jsonl", time.monotonic() + timeout
    while not (log.exists() and len(log.read_text().splitlines()) >= steps):
        assert process.poll() is None, f"exited early with {process.returncode}: {Path(f'{out}.stderr').read_text()}"
        assert time.monotonic() < deadline, f"no {steps} steps in {log} after {timeout} s"
        time.sleep(0.05)


def train_command_line(out: Path) -> list[str]:
    return [sys.executable, "-m", "softdiff.train", *ARGS, "--out", str(out)]


def interrupted_at(stdout: str) -> tuple[int, str, Path]:
    """(step, signal name, checkpoint) of the one interruption line in ``stdout``; fails unless there is one."""
    found = [match for line in stdout.splitlines() if (match := MESSAGE.search(line))]
    assert len(found) == 1, stdout[-3000:]
    return int(found[0][1]), found[0][2], Path(found[0][3])


def assert_same_weights(a: dict, b: dict) -> None:
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    assert a["step"] == b["step"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The final checkpoint of the run of ARGS, uninterrupted."""
    out = tmp_path_factory.mktemp("whole") / "run"
    code, _, stderr = finish(start(train_command_line(out), out), out)
    assert code == 0, stderr[-3000:]
    return load_latest(out / "checkpoints")[0]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_after_the_step_in_flight_and_the_same_command_resumes_bit_exact(tmp_path, whole, signum):
    out = tmp_path / "run"
    process = start(train_command_line(out), out)
    wait_for_steps(out, 3, process)
    process.send_signal(signum)
    code, stdout, stderr = finish(process, out)
    assert code == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    step, name, path = interrupted_at(stdout)
    assert name == signal.Signals(signum).name and 3 <= step < 40
    assert path == checkpoint_path(out / "checkpoints", step) and read_checkpoint(path)["step"] == step
    assert (out / "log.jsonl").read_text().splitlines()[-1].startswith(f'{{"step": {step},')  # flushed
    code, stdout, stderr = finish(start(train_command_line(out), out), out)
    assert code == 0, stderr[-3000:]
    assert f"resuming from {path} (step {step})" in stdout
    assert_same_weights(load_latest(out / "checkpoints")[0], whole)


# softdiff.train, whose checkpoint writes, once a stop was asked, leave half a temporary file (as a kill would),
# create the file SAVING and wait two minutes: the test's second signal arrives during that write.
SLOW_SAVE_LAUNCHER = """
import io, sys, time
from pathlib import Path
import torch
import softdiff.training.loop as loop
from softdiff import checkpoints
from softdiff.cli.train import main

stoppers, real_save = [], loop.save_checkpoint

class Recorded(loop.StopSignals):
    def install(self):
        stoppers.append(self)
        super().install()

def save(state, folder, step, *, keep):
    if stoppers[-1].signum is None:
        return real_save(state, folder, step, keep=keep)
    blob = io.BytesIO()
    torch.save(state, blob)
    partial = checkpoints.checkpoint_path(folder, step).with_name(f".ckpt-{step:08d}.pt.tmp-1")
    partial.write_bytes(blob.getvalue()[: len(blob.getvalue()) // 2])
    (Path(folder).parent / "SAVING").touch()
    time.sleep(120)

loop.StopSignals, loop.save_checkpoint = Recorded, save
sys.exit(main(sys.argv[1:]))
"""


def test_a_second_signal_exits_at_once_and_the_next_start_cleans_up(tmp_path, whole):
    """Stopped after step 11 or so by SIGINT, a second SIGINT during the checkpoint's write exits at once (not after
    the two minutes the write takes) with 130; ckpt-10 is intact; the same command clears the torn file, resumes
    from ckpt-10 and ends where an uninterrupted run does."""
    out = tmp_path / "run"
    launcher = tmp_path / "slow_save_launcher.py"
    launcher.write_text(SLOW_SAVE_LAUNCHER)
    process = start([sys.executable, str(launcher), *ARGS, "--out", str(out)], out)
    wait_for_steps(out, 11, process)
    process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 120
    while not (out / "SAVING").exists():
        assert process.poll() is None and time.monotonic() < deadline, Path(f"{out}.stderr").read_text()[-3000:]
        time.sleep(0.05)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    code, stdout, stderr = finish(process, out, timeout=60)
    assert time.monotonic() - sent < 60 and code == 130, stderr[-3000:]
    assert "softdiff.train: second SIGINT; exiting at once" in stderr and "Traceback" not in stderr
    assert "interrupted at step" not in stdout  # it never claims a checkpoint it did not finish
    torn = list((out / "checkpoints").glob(".ckpt-*.pt.tmp-*"))
    assert len(torn) == 1
    assert [step for step, _ in list_checkpoints(out / "checkpoints")] == [10]
    assert read_checkpoint(checkpoint_path(out / "checkpoints", 10))["step"] == 10
    code, stdout, stderr = finish(start(train_command_line(out), out), out)
    assert code == 0, stderr[-3000:]
    assert f"resuming from {checkpoint_path(out / 'checkpoints', 10)} (step 10)" in stdout
    assert not torn[0].exists()
    assert_same_weights(load_latest(out / "checkpoints")[0], whole)


def signal_during_call(monkeypatch, call: int, signum: int) -> list[int]:
    """Send ``signum`` to this process during the ``call``-th loss (1-based: that step's forward pass); returns the
    list the steps of the checkpoints written go to."""
    calls, saved = [], []
    real_loss, real_save = train_loop.soft_score_matching_loss, train_loop.save_checkpoint

    def loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return real_loss(*args, **kwargs)

    def save(state, folder, step, *, keep):
        saved.append(step)
        return real_save(state, folder, step, keep=keep)

    monkeypatch.setattr(train_loop, "soft_score_matching_loss", loss)
    monkeypatch.setattr(train_loop, "save_checkpoint", save)
    return saved


@pytest.mark.parametrize(("call", "saved_steps"), [(2, [2]), (3, [3])])
def test_the_step_in_flight_is_checkpointed_once(tmp_path, monkeypatch, capsys, call, saved_steps):
    """Signalled in step 2, it writes ckpt-2; in step 3, where the smoke preset checkpoints anyway, only that one."""
    saved = signal_during_call(monkeypatch, call, signal.SIGTERM)
    config, preset, _ = train_command.parse_args(["--preset", "smoke", "--steps", "6"])
    with pytest.raises(Interrupted) as stopped:
        train_loop.train(config, tmp_path / "run", preset=preset)
    assert (stopped.value.step, stopped.value.exit_code) == (call, 143)
    assert saved == saved_steps
    assert [step for step, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == saved_steps
    assert capsys.readouterr().out.count(f"softdiff.train: {stopped.value}\n") == 1


def test_handlers_are_ours_during_train_and_restored_after_it_returns_or_raises(tmp_path, monkeypatch):
    """In the main thread: train() installs its handlers for the steps and puts the previous ones back whether it
    returns, stops on a signal or fails. In another thread, it installs none (Python allows none) and runs."""

    def previous(signum, frame):
        raise AssertionError("the previous handler ran")

    before = {signum: signal.signal(signum, previous) for signum in (signal.SIGINT, signal.SIGTERM)}
    during, real_loss = [], train_loop.soft_score_matching_loss

    def loss(*args, **kwargs):
        during.append(
            signal.getsignal(signal.SIGINT) is not previous and signal.getsignal(signal.SIGTERM) is not previous
        )
        return real_loss(*args, **kwargs)

    try:
        monkeypatch.setattr(train_loop, "soft_score_matching_loss", loss)
        config, preset, _ = train_command.parse_args(["--preset", "smoke", "--steps", "2"])
        train_loop.train(config, tmp_path / "returns", preset=preset)
        assert during == [True, True]
        assert signal.getsignal(signal.SIGINT) is previous and signal.getsignal(signal.SIGTERM) is previous

        monkeypatch.setattr(train_loop, "soft_score_matching_loss", lambda *a, **k: loss(*a, **k) * float("nan"))
        with pytest.raises(train_loop.NonFiniteLoss):
            train_loop.train(config, tmp_path / "raises", preset=preset)
        assert signal.getsignal(signal.SIGINT) is previous and signal.getsignal(signal.SIGTERM) is previous

        monkeypatch.setattr(train_loop, "soft_score_matching_loss", loss)
        during.clear()
        results = []
        thread = threading.Thread(target=lambda: results.append(train_loop.train(config, tmp_path / "thread",
                                                                                  preset=preset)))  # fmt: skip
        thread.start()
        thread.join(timeout=300)
        assert results and results[0]["step"] == 2, "train() failed outside the main thread"
        assert during == [False, False]  # the previous handlers stayed in place
        assert signal.getsignal(signal.SIGINT) is previous and signal.getsignal(signal.SIGTERM) is previous

        monkeypatch.undo()
        signal_during_call(monkeypatch, 1, signal.SIGINT)
        with pytest.raises(Interrupted):
            train_loop.train(config, tmp_path / "stopped", preset=preset)
        assert signal.getsignal(signal.SIGINT) is previous and signal.getsignal(signal.SIGTERM) is previous
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def children(pid: int) -> list[int]:
    """The process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def torchrun(out: Path) -> list[str]:
    """softdiff.train on ARGS as two gloo ranks on this machine, on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(port), "-m", "softdiff.train", *ARGS, "--out", str(out)]  # fmt: skip


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the ranks' processes in /proc")
@pytest.mark.parametrize(("target", "signum"), [("launcher", signal.SIGTERM), ("rank 1 alone", signal.SIGINT)])
def test_two_ddp_ranks_stop_at_one_step_with_one_checkpoint(tmp_path, target, signum):
    """SIGTERM to torchrun (which forwards it to both ranks), or SIGINT to rank 1 alone (rank 0, which writes, never
    sees one): both ranks stop after the same step (a disagreement would hang or break a collective), rank 0 writes
    its checkpoint, the message comes once; torchrun exits non-zero. The same command resumes from it."""
    out = tmp_path / "ddp"
    process = start(torchrun(out), out)
    wait_for_steps(out, 3, process)
    if target == "launcher":
        process.send_signal(signum)
    else:
        ranks = children(process.pid)
        assert len(ranks) == 2, ranks
        rank_1 = next(pid for pid in ranks if "RANK=1" in Path(f"/proc/{pid}/environ").read_text().split("\0"))
        os.kill(rank_1, signum)
    code, stdout, stderr = finish(process, out)
    assert code != 0
    step, name, path = interrupted_at(stdout)
    assert name == signal.Signals(signum).name and 3 <= step < 40
    assert "loop.py" not in stderr, stderr[-4000:]  # no rank failed inside the loop (a collective out of step)
    if target == "rank 1 alone":  # torchrun reports the ranks' exit codes
        assert f"exitcode  : {128 + signum}" in stderr, stderr[-4000:]
    expected = sorted({*range(10, step + 1, 10), step})
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == expected
    assert path == checkpoint_path(out / "checkpoints", step) and read_checkpoint(path)["step"] == step
    if target == "launcher":
        code, stdout, stderr = finish(start(torchrun(out), out), out)
        assert code == 0, stderr[-4000:]
        assert f"resuming from {path} (step {step})" in stdout and "2 ranks hold identical weights" in stdout


def test_ctrl_c_outside_the_steps_exits_130_without_a_traceback(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the data loads or a run resumes (no step to save; the handlers are not yet installed): the
    command says what is on disk and exits 130 instead of printing a KeyboardInterrupt traceback."""

    def interrupted_while_loading(config, out, *, preset):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "train", interrupted_while_loading)
    assert train_command.main(["--preset", "smoke", "--out", str(tmp_path / "run")]) == 130
    assert "softdiff.train: interrupted (SIGINT) before or after the training steps" in capsys.readouterr().err
