"""The device and thread choices every command shares (softdiff.compute): a device that is not there names the
devices that are; --threads sets torch's CPU threads and the training start line states them."""

import re

import pytest
import torch

from softdiff.cli import train as train_command
from softdiff.compute import available_devices, resolve_device, use_threads
from softdiff.training import loop as train_loop


def test_devices_that_are_not_there_name_the_ones_that_are():
    assert available_devices()[0] == "cpu"
    assert resolve_device("cpu", "softdiff.x") == torch.device("cpu")
    assert resolve_device(None, "softdiff.x").type == ("cuda" if torch.cuda.is_available() else "cpu")
    there = re.escape("devices here: " + ", ".join(available_devices()))
    with pytest.raises(SystemExit, match=r"softdiff\.x: --device 'tpu' is not a device torch knows; " + there):
        resolve_device("tpu", "softdiff.x")
    with pytest.raises(SystemExit, match="is not a device torch knows"):
        resolve_device("gpu0", "softdiff.x")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(SystemExit, match=rf"--device cuda:{count + 1}, but PyTorch sees .*; " + there):
        resolve_device(f"cuda:{count + 1}", "softdiff.x")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="--device cuda, but PyTorch sees no CUDA GPU here; " + there):
            resolve_device("cuda", "softdiff.x")


def test_threads_are_set_and_checked():
    before = torch.get_num_threads()
    try:
        assert use_threads(None, "softdiff.x") == before
        assert use_threads(1, "softdiff.x") == 1 == torch.get_num_threads()
        with pytest.raises(SystemExit, match=r"softdiff\.x: --threads must be >= 1; got 0"):
            use_threads(0, "softdiff.x")
    finally:
        torch.set_num_threads(before)


def test_training_states_its_threads_and_refuses_unknown_devices(tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        config, preset, _ = train_command.parse_args(["--preset", "smoke", "--steps", "1", "--threads", "1"])
        train_loop.train(config, tmp_path / "run", preset=preset)
        assert "device cpu (1 CPU thread), 1 rank(s)" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)
    config, preset, _ = train_command.parse_args(["--preset", "smoke", "--device", "tpu"])
    with pytest.raises(SystemExit, match=r"softdiff.train: --device 'tpu' is not a device torch knows; devices here"):
        train_loop.train(config, tmp_path / "tpu", preset=preset)
    assert not (tmp_path / "tpu").exists()
    with pytest.raises(SystemExit, match="--threads must be >= 1; got 0"):
        train_command.parse_args(["--preset", "smoke", "--threads", "0"])
