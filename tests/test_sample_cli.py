"""python -m softdiff.sample in process, on a tiny untrained checkpoint: what each --out writes (a folder that holds
only the samples, .npy like .npz), inputs checked before anything is written, and the device line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import softdiff.cli.fid as fid
from softdiff.cli.sample import grid_path, main, parse_args
from softdiff.compute import available_devices
from softdiff.metrics.sources import open_images

pytestmark = pytest.mark.usefixtures("one_thread")  # --threads sets torch's threads; the fixture restores them

QUICK = ["--steps", "2", "--device", "cpu", "--no-progress"]


def test_a_sample_folder_holds_only_the_samples_and_fid_reads_it(tmp_path, capsys, tiny_checkpoint, monkeypatch):
    folder = tmp_path / "samples"
    assert main(["--ckpt", str(tiny_checkpoint), "--n", "3", "--threads", "1", "--out", f"{folder}/", *QUICK]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "softdiff.sample: device cpu, 1 CPU thread"
    assert f"wrote 3 images to {folder} and the grid to {tmp_path / 'samples-grid.png'}" in err
    assert sorted(path.name for path in folder.iterdir()) == [f"seed-{seed:06d}.png" for seed in range(3)]
    assert Image.open(tmp_path / "samples-grid.png").size[0] > 16
    assert open_images(str(folder), split=None, size=None, limit=None).count == 3
    assert fid.main([str(folder), "--ref", "shapes:40", "--metrics", "randfd", "--threads", "1", *QUICK[2:]]) == 0
    out, err = capsys.readouterr()
    assert "RandFD-proxy (not FID)" in out and "n=3 samples" in out
    assert err.splitlines()[0] == "softdiff.fid: device cpu, 1 CPU thread"
    monkeypatch.chdir(folder)  # --out . : the grid goes beside the folder it stands for, not into it
    assert grid_path(Path(".")) == tmp_path / "samples-grid.png"


def test_npy_holds_the_array_a_npz_holds_under_arr_0(tmp_path, capsys, tiny_checkpoint):
    for name in ("s.npy", "s.npz"):
        assert main(["--ckpt", str(tiny_checkpoint), "--seeds", "0-1", "--out", str(tmp_path / name), *QUICK]) == 0
        assert f"wrote 2 images to {tmp_path / name}" in capsys.readouterr().err
    array = np.load(tmp_path / "s.npy")
    assert array.dtype == np.uint8 and array.shape == (2, 16, 16, 3)
    with np.load(tmp_path / "s.npz") as saved:
        assert saved.files == ["arr_0"] and np.array_equal(saved["arr_0"], array)
    assert main(["--ckpt", str(tiny_checkpoint), "--n", "1", "--out", str(tmp_path / "one.npy"), *QUICK]) == 0
    assert "wrote 1 image to" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--out", "y.png"], "--out must be a folder, .npz or .npy; got y.png"),
        (["--out", "out/y.jpg"], "--out must be a folder, .npz or .npy; got out/y.jpg"),
        (["--restore", "x.png", "--t-start", "0.5", "--out", "r.npy"], "give --out a folder, not a .npy"),
        (["--labels", "0-9", "--out", "d.npy"], "use a .npz to keep each image's --labels with it"),
    ],
)
def test_out_names_that_cannot_hold_the_samples_are_refused(flags, message):
    with pytest.raises(SystemExit, match="^softdiff.sample: .*" + re.escape(message)):
        parse_args(["--ckpt", "run", *flags])


def test_a_folder_name_with_a_dot_is_a_folder_when_it_ends_in_a_slash():
    assert parse_args(["--ckpt", "run", "--out", "out/v1.2/"]).out == "out/v1.2/"


def bad_inputs(tmp_path: Path, checkpoint: Path) -> dict:
    """Command lines with one bad input each, and what the message says."""
    (tmp_path / "text.png").write_text("not a picture")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "cut.pt").write_bytes(checkpoint.read_bytes()[:300])
    restore = ["--ckpt", str(checkpoint), "--t-start", "0.5", "--restore"]
    return {
        "missing --restore image": ([*restore, str(tmp_path / "nowhere.png")], "nowhere.png: image not found"),
        "unreadable --restore image": ([*restore, str(tmp_path / "text.png")], "text.png"),
        "missing --ckpt": (["--ckpt", str(tmp_path / "nothing.pt")], "nothing.pt: checkpoint not found"),
        "another torch file as --ckpt": (
            ["--ckpt", str(tmp_path / "other.pt")],
            f"--ckpt {tmp_path / 'other.pt'} is not a softdiff checkpoint (it holds a dict of 1 key ('weight'),",
        ),
        "a text file as --ckpt": (
            ["--ckpt", str(tmp_path / "notes.txt")],
            f"--ckpt {tmp_path / 'notes.txt'} is not a softdiff checkpoint (not a torch file: it begins b'hello",
        ),
        "a cut checkpoint as --ckpt": (["--ckpt", str(tmp_path / "cut.pt")], "(a damaged torch file: its zip archive"),
        "--labels of an unconditional checkpoint": (["--ckpt", str(checkpoint), "--labels", "3"], "unconditional"),
        "--seeds that do not parse": (["--ckpt", str(checkpoint), "--seeds", "a-b"], "--seeds must look like"),
        "--device tpu": (["--ckpt", str(checkpoint), "--device", "tpu"], "--device 'tpu' is not a device torch knows"),
        "--threads 0": (["--ckpt", str(checkpoint), "--threads", "0"], "--threads must be >= 1; got 0"),
    }


CASES = ["missing --restore image", "unreadable --restore image", "missing --ckpt", "another torch file as --ckpt",
         "a text file as --ckpt", "a cut checkpoint as --ckpt", "--labels of an unconditional checkpoint",
         "--seeds that do not parse", "--device tpu", "--threads 0"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_a_bad_input_stops_the_command_before_anything_is_written(tmp_path, tiny_checkpoint, case):
    flags, message = bad_inputs(tmp_path, tiny_checkpoint)[case]
    with pytest.raises(SystemExit, match=re.escape(message)):
        main([*flags, "--out", str(tmp_path / "deep" / "out"), "--steps", "1", "--no-progress"])
    assert not (tmp_path / "deep").exists()


def test_the_device_error_names_the_devices_here(tmp_path, tiny_checkpoint):
    there = ", ".join(available_devices())
    with pytest.raises(SystemExit, match=re.escape(f"softdiff.sample: --device 'tpu' is not a device torch knows; "
                                                   f"devices here: {there}")):  # fmt: skip
        main(["--ckpt", str(tiny_checkpoint), "--device", "tpu", "--out", str(tmp_path / "x")])


def test_time_grid_optimized_samples_on_the_grid_fitted_to_the_sampler_and_fid_records_it(tmp_path, capsys,
                                                                                       tiny_checkpoint):  # fmt: skip
    """--time-grid optimized: the images are sd.sample's on optimized_grid(sampler, steps, the power law: this
    checkpoint has no data spectrum), not the uniform grid's; softdiff.fid --time-grid passes it on and records it."""
    import softdiff as sd
    from softdiff.images import to_uint8
    from softdiff.loading import load_model
    from softdiff.time_grids import optimized_grid, sampling_variance

    flags = ["--ckpt", str(tiny_checkpoint), "--seeds", "0-1", "--sampler", "heun", "--steps", "3", "--device", "cpu",
             "--no-progress"]  # fmt: skip
    assert main([*flags, "--time-grid", "optimized", "--out", str(tmp_path / "o.npy")]) == 0
    assert main([*flags, "--out", str(tmp_path / "u.npy")]) == 0
    denoiser, process, config = load_model(str(tiny_checkpoint), weights="ema", device=torch.device("cpu"))
    shape = (3, config.resolution, config.resolution)
    times = optimized_grid(process, sampling_variance(process, shape), 3, sampler="heun")
    expected = sd.sample(denoiser, process, (2, *shape), steps=3, sampler="heun", seeds=[0, 1], grid=times)
    optimized = np.load(tmp_path / "o.npy")
    assert np.array_equal(optimized, to_uint8(expected.clamp(-1, 1)).numpy())
    assert not np.array_equal(optimized, np.load(tmp_path / "u.npy"))
    capsys.readouterr()
    report = tmp_path / "fid.json"
    assert fid.main(["--ckpt", str(tiny_checkpoint), "--n", "4", "--ref", "shapes:40", "--metrics", "randfd",
                     "--time-grid", "optimized", "--json", str(report), *QUICK]) == 0  # fmt: skip
    assert '"time_grid": "optimized"' in report.read_text()
