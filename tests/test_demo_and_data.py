"""The built-in shapes data set and ``python -m softdiff.demo``."""

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

import softdiff_kernels as sk
from softdiff.data import make_shapes


def test_shapes_are_deterministic_prefix_stable_and_in_range():
    a = make_shapes(16, size=24, seed=3)
    assert a.shape == (16, 3, 24, 24) and a.dtype == torch.float32
    assert torch.equal(a, make_shapes(16, size=24, seed=3))
    assert torch.equal(a[:5], make_shapes(5, size=24, seed=3))
    assert torch.equal(a[5:9], make_shapes(4, size=24, seed=3, start=5))
    assert not torch.equal(a, make_shapes(16, size=24, seed=4))
    assert float(a.min()) >= -1 and float(a.max()) <= 1
    assert a.std(dim=0).mean() > 0.2  # the images differ from one another


def test_shapes_have_smooth_and_sharp_content():
    """Most energy at low frequencies (smooth backgrounds), yet a clear high-frequency tail (edges)."""
    x = make_shapes(64, size=32)
    power = sk.dct2(x.double() - x.double().mean(dim=0)).square().mean(dim=(0, 1))
    k = torch.arange(32)
    radius = (k[:, None] ** 2 + k[None, :] ** 2).sqrt()
    low, high = power[radius < 4].sum(), power[radius >= 16].sum()
    assert low > 0.5 * power.sum() and high > 1e-3 * power.sum()


def test_demo_writes_pictures_and_summary(tmp_path):
    out = tmp_path / "demo"
    options = "--references 32 --n 3 --steps 8 --size 16 --gaussian-n 64 --gaussian-nfe 4 16".split()
    command = [sys.executable, "-m", "softdiff.demo", "--out", str(out), *options]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "momentum" in result.stdout
    for name in ("forward.png", "samples.png"):
        with Image.open(out / name) as image:
            assert image.mode == "RGB" and image.width > 16 * 3
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"momentum", "naive", "momentum_ode"}
    for entry in summary.values():
        assert len(entry["shapes"]["rms_to_nearest"]) == 3
        assert set(entry["gaussian_w2_rel"]) == {"4", "16"}
    assert summary["momentum"]["gaussian_w2_rel"]["16"] < summary["naive"]["gaussian_w2_rel"]["16"]


def test_demo_names_bad_options(capsys):
    from softdiff.cli.demo import main

    for flags, message in ((["--references", "2"], "--references must be >= 3"), (["--n", "0"], "--n must be >= 1"),
                           (["--gaussian-nfe", "10", "0"], "--gaussian-nfe must be >= 1")):  # fmt: skip
        with pytest.raises(SystemExit):
            main(flags)
        assert message in capsys.readouterr().err
