"""benchmarks/paper_claims.py, schedule_compare.py, demo_mnist.py, demo_recipe.py, restore_depth.py and
train_speed.py: their verdict logic, and each end to end on a tiny budget (the numbers of such runs mean nothing;
that they run, write their files and report every cell does)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import softdiff as sd
from softdiff.data import make_shapes
from softdiff.denoiser import data_second_moment
from softdiff.oracle import GaussianDenoiser

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def load(name):
    sys.path.insert(0, str(ROOT / "benchmarks"))  # paper_claims imports nfe_speed from its own folder
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def quick_classifier(monkeypatch):
    """The digit metric with the classifier of tests/test_digit_metric.py (3 epochs; cached once per test run)."""
    from softdiff.metrics import digits

    monkeypatch.setitem(digits.digit_reference.__kwdefaults__, "recipe", {**digits.RECIPE, "epochs": 3,
                                                                          "lr_drop_epoch": 2})  # fmt: skip


def claims_results(table: dict) -> dict:
    """A results dict of paper_claims from {(model, sampler, nfe): [feature FD per seed]}."""
    return {f"{m}|{s}|{n}|{seed}": {"model": m, "sampler": s, "nfe": n, "seed": seed, "feature_fd": fd}
            for (m, s, n), fds in table.items() for seed, fd in enumerate(fds)}  # fmt: skip


def test_claim_verdicts_need_the_seeds_to_separate():
    claims = load("paper_claims")
    assert claims.compare([8.0, 9.0], [10.0, 11.0], "a", "b").startswith("a better: a 8.5 (8–9) vs b 10.5 (10–11)")
    assert claims.compare([12.0, 13.0], [10.0, 11.0], "a", "b").startswith("a worse")
    assert claims.compare([9.0, 10.5], [10.0, 11.0], "a", "b").startswith("no clear difference")
    assert claims.compare([8.0], [10.0, 11.0], "a", "b").startswith("one training seed, no verdict (a lower)")
    plan = {"soft": ("momentum", "naive"), "cold": ("momentum",), "gaussian": ("momentum", "heun")}
    results = claims_results({
        ("soft", "momentum", 10): [30, 32], ("soft", "naive", 10): [60, 70], ("cold", "momentum", 10): [31, 40],
        ("gaussian", "momentum", 10): [90, 95], ("gaussian", "heun", 10): [50, 52],
        ("soft", "momentum", 50): [20, 21], ("soft", "naive", 50): [20.5, 20.6], ("cold", "momentum", 50): [25, 26],
        ("gaussian", "momentum", 50): [40, 41], ("gaussian", "heun", 50): [31, 33],
    })  # fmt: skip
    lines = claims.verdicts(results, plan, [10, 50])
    assert lines[0].startswith("- Claim 1 (momentum vs naive sampler, soft model), NFE 10: momentum better")
    assert "NFE 50: no clear difference" in lines[1]
    assert "NFE 10: no clear difference" in lines[2] and "NFE 50: soft better" in lines[3]
    assert "Gaussian's best at NFE 50 (heun) has feature FD 32 (31–33); blur + noise reaches that mean at NFE 10" \
        in lines[4]  # fmt: skip
    assert "NFE 10: blur + noise (momentum) better" in lines[5] and "vs Gaussian (heun) 51 (50–52)" in lines[5]
    assert claims.best_sampler(results, "gaussian", plan["gaussian"], 10)[0] == "heun"


def test_the_claims_plan_names_every_model():
    claims = load("paper_claims")
    assert claims.parse_plan("soft=momentum+heun,cold=naive,gaussian=heun") == {
        "soft": ("momentum", "heun"), "cold": ("naive",), "gaussian": ("heun",)}  # fmt: skip
    for bad in ("soft=momentum,cold=naive", "soft=euler,cold=naive,gaussian=heun", "soft=,cold=a,gaussian=heun"):
        with pytest.raises(claims.argparse.ArgumentTypeError):
            claims.parse_plan(bad)


def test_paper_claims_end_to_end(tmp_path, monkeypatch):
    """--quick: every (model, seed, sampler, NFE) cell of the plan scored, the tables, verdicts and plot written,
    and a rerun that trains and scores nothing again."""
    quick_classifier(monkeypatch)
    claims = load("paper_claims")
    out, runs = tmp_path / "results", tmp_path / "runs"
    argv = ["--quick", "--plan", "soft=momentum+naive,cold=momentum,gaussian=heun", "--runs", str(runs), "--out",
            str(out)]  # fmt: skip
    claims.main(argv)
    results = json.loads((out / "paper_claims.json").read_text())["results"]
    plan = {"soft": ("momentum", "naive"), "cold": ("momentum",), "gaussian": ("heun",)}
    assert {(r["model"], r["seed"], r["sampler"], r["nfe"]) for r in results.values()} == {
        (m, seed, s, n) for m, samplers in plan.items() for seed in (0, 1) for s in samplers for n in (2, 3)
    }
    assert all(r["samples"] == 32 and r["count"] == 32 and r["feature_fd"] > 0 for r in results.values())
    text = (out / "paper_claims.md").read_text()
    assert all(f"Claim {k}" in text for k in (1, 2, 3)) and "Not FID" in text and "| gaussian | heun |" in text
    assert (out / "fd_vs_nfe.png").stat().st_size > 0
    state = torch.load(runs / "gaussian-seed1" / "checkpoints" / "ckpt-00000004.pt", weights_only=True)
    assert state["config"]["operator"] == "identity" and state["config"]["seed"] == 1
    assert state["config"]["data"] == "mnist" and state["config"]["resolution"] == 16
    monkeypatch.setattr(claims.digit_cells, "score_cell", lambda *a, **k: pytest.fail("scored a cell again"))
    monkeypatch.setattr(claims.digit_cells.subprocess, "run", lambda *a, **k: pytest.fail("trained again"))
    claims.main(argv)


def test_demo_recipe_end_to_end(tmp_path):
    recipe = load("demo_recipe")
    recipe.main(["--steps", "2", "--size", "8", "--out", str(tmp_path)])
    (result,) = tmp_path.glob("demo_recipe-*.json")
    records = json.loads(result.read_text())["records"]
    assert [r["recipe"] for r in records] == [name for name, *_ in recipe.RECIPES]
    assert all(set(r["ratios"]) == {str(t) for t in recipe.EVAL_TIMES} for r in records)
    assert all(r["ratios"][str(t)] > 0 for r in records for t in recipe.EVAL_TIMES)


def test_schedule_verdict_needs_the_seeds_to_separate():
    compare = load("schedule_compare")
    assert compare.verdict([8.0, 9.0], [10.0, 11.0]) == "designed better; designed's mean 19.0% lower than sin²'s"
    assert compare.verdict([12.0, 13.0], [10.0, 11.0]) == "designed worse; designed's mean 19.0% higher than sin²'s"
    assert compare.verdict([9.0, 10.5], [10.0, 11.0]).startswith("no clear difference")


def test_schedule_compare_end_to_end(tmp_path, monkeypatch):
    quick_classifier(monkeypatch)
    compare = load("schedule_compare")
    out = tmp_path / "results"
    compare.main(["--quick", "--seeds", "1", "--runs", str(tmp_path / "runs"), "--out", str(out)])
    results = json.loads((out / "schedule_compare.json").read_text())["results"]
    assert {(r["schedule"], r["seed"], r["nfe"]) for r in results.values()} == {(s, 1, 3) for s in compare.SCHEDULES}
    state = torch.load(tmp_path / "runs" / "designed-seed1" / "checkpoints" / "ckpt-00000004.pt", weights_only=True)
    assert state["config"]["schedule_file"] == "mnist-16" and state["config"]["seed"] == 1
    assert "Verdicts" in (out / "schedule_compare.md").read_text()


def test_restore_depth_ratios_are_one_for_the_linear_denoiser_itself():
    depth = load("restore_depth")
    process = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.02, 5.0), levels=sd.LevelSchedule.sin2(3))
    clean = make_shapes(6, size=8, start=500)
    moment = data_second_moment(process.operator, make_shapes(64, size=8))
    linear = GaussianDenoiser(moment, process)
    shrunk = GaussianDenoiser(moment * 0.2, process)
    same, _ = depth.measure(linear, linear, process, clean, 0.4, nfe=10, sampler="momentum")
    worse, restored = depth.measure(shrunk, linear, process, clean, 0.4, nfe=10, sampler="momentum")
    assert same["steps"] == 4 and same["denoiser_ratio"] == pytest.approx(1) and same["restore_ratio"] == 1
    assert worse["denoiser_ratio"] > 1.05  # a mis-tuned linear filter is measurably worse than the Wiener filter
    assert restored.shape == clean.shape


def test_restore_depth_full_linear_filter_is_the_least_squares_linear_map(generator):
    """The full-covariance reference against a pixel-space construction that shares nothing with it: the blur as
    a matrix (process.apply on the identity basis), K = M Cᵀ (C M Cᵀ + σ² I)⁻¹ with M = E[x_0 x_0ᵀ] in pixels."""
    depth = load("restore_depth")
    process = sd.SoftDiffusionProcess(sd.DCTBlur(), noise=sd.GeometricNoise(0.05, 2.0), levels=sd.LevelSchedule.sin2(2))
    data = make_shapes(200, size=4).double()
    full = depth.FullLinearDenoiser(data, process, batch_size=64)  # several batches: the sum is checked too
    x_t = torch.randn(5, 3, 4, 4, generator=generator, dtype=torch.float64)
    t = torch.full((5,), 0.45, dtype=torch.float64)
    dimension = 3 * 4 * 4
    blur = process.apply(torch.eye(dimension, dtype=torch.float64).view(dimension, 3, 4, 4), 0.45).flatten(1).T
    flat = data.flatten(1)
    moment = flat.T @ flat / flat.shape[0]
    sigma2 = float(process.sigma(t[:1])) ** 2
    gain = (
        moment @ blur.T @ torch.linalg.inv(blur @ moment @ blur.T + sigma2 * torch.eye(dimension, dtype=torch.float64))
    )
    expected = (x_t.flatten(1) @ gain.T).view(5, 3, 4, 4)
    torch.testing.assert_close(full(x_t, t), expected, rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="one t per call"):
        full(x_t, torch.linspace(0.1, 0.5, 5, dtype=torch.float64))


def test_restore_depth_end_to_end(tmp_path):
    from softdiff.cli.train import main as train

    train(["--preset", "smoke", "--out", str(tmp_path / "run")])
    depth = load("restore_depth")
    depth.main(["--ckpt", str(tmp_path / "run"), "--n", "6", "--show", "3", "--times", "0.2,0.7", "--nfe", "4",
                "--out", str(tmp_path / "out")])  # fmt: skip
    records = json.loads((tmp_path / "out" / "restore_depth.json").read_text())["records"]
    assert [r["t"] for r in records] == [0.2, 0.7] and [r["steps"] for r in records] == [1, 3]
    assert all(0 < r["full_linear_ratio"] < 1.5 for r in records)  # 16x16x3 = 768 <= 4096: the column is filled
    assert all(r["denoiser_ratio"] > 0 and r["restore_ratio"] > 0 for r in records)
    assert (tmp_path / "out" / "restore_depth.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="show"):
        depth.main(["--ckpt", str(tmp_path / "run"), "--n", "2", "--show", "3"])


def test_train_speed_variants_and_end_to_end(tmp_path):
    speed = load("train_speed")
    parse = speed.argparse.Namespace
    plain = parse(amp=False, channels_last=False, compile=False, combined=False)
    assert speed.variants(plain, ["triton", "torch"]) == [
        ("triton", "off", False, False),
        ("torch", "off", False, False),
    ]
    every = parse(amp=True, channels_last=True, compile=True, combined=True)
    assert speed.variants(every, ["cuda", "torch"])[2:] == [
        ("cuda", "bf16", False, False),
        ("cuda", "off", True, False),
        ("cuda", "off", False, True),
        ("cuda", "bf16", True, True),
    ]
    every.sizes = ["paper", "tiny"]
    planned = speed.planned_rows(every, ["cuda", "torch"])
    assert [(row[0], row[4]) for row in planned] == [("paper", False)] * 4 + [("tiny", False)] * 4 + [
        ("paper", True), ("paper", True), ("tiny", True), ("tiny", True)]  # fmt: skip
    args = ["--sizes", "tiny", "--batch", "2", "--resolution", "8", "--repeats", "1", "--amp", "--out", str(tmp_path)]
    speed.main(args)
    (result,) = tmp_path.glob("train-speed-*.json")
    records = json.loads(result.read_text())["records"]
    assert [r["amp"] for r in records][-1] == "bf16" and all(r["img_per_s"] > 0 for r in records)
    assert all(0 < r["outside_share"] < 1 for r in records)
    assert (tmp_path / result.name.replace(".json", ".md")).read_text().count("| tiny |") == len(records)


def test_demo_mnist_end_to_end(tmp_path, monkeypatch):
    """Two short runs (one conditional) scored at two marks with two samplers: every cell of the record, the grids of
    the last mark, and a rerun that trains and scores nothing again."""
    quick_classifier(monkeypatch)
    demo = load("demo_mnist")
    out, work = tmp_path / "record", tmp_path / "runs"
    argv = ["--runs", "demo-class,paper-none", "--minutes", "0.03,0.08", "--paper-minutes", "0.08", "--n", "10",
            "--nfe", "2", "--samplers", "momentum,heun", "--ckpt-every", "2", "--out", str(out), "--work",
            str(work)]  # fmt: skip
    demo.main(argv)
    results = json.loads((out / "results.json").read_text())["results"]
    cells = {(r["run"], r["minutes"], r["sampler"], r["guidance"]) for r in results.values()}
    assert {("demo-class", m, s, g) for m in (0.03, 0.08) for s in ("momentum", "heun") for g in (1.0, 2.0)} <= cells
    assert {("paper-none", 0.08, s, 1.0) for s in ("momentum", "heun")} <= cells and len(cells) == 10
    for r in results.values():
        assert r["training_seconds"] <= r["minutes"] * 60 * 1.01 and r["count"] == 10 and 0 <= r["confident"] <= 1
        assert (r["label_match"] is None) == (r["run"] == "paper-none")
    assert all(r["flags"] == ["--precond", "edm", "--weighting", "edm", "--t-power", "1", "--loss", "soft", "--cond",
            "none"] for r in results.values() if r["run"] == "paper-none")  # fmt: skip
    assert (out / "demo-class-heun-g2-grid.png").exists() and (out / "paper-none-momentum-g1-grid.png").exists()
    assert "| demo-class | heun | 2 |" in (out / "results.md").read_text()
    monkeypatch.setattr(demo.digit_cells, "score_cell", lambda *a, **k: pytest.fail("scored a cell again"))
    monkeypatch.setattr(demo.subprocess, "Popen", lambda *a, **k: pytest.fail("trained a finished run again"))
    demo.main(argv)
    assert json.loads((out / "results.json").read_text())["results"] == results


def test_grids_trained_end_to_end(tmp_path, monkeypatch):
    """A 2-step conditional MNIST run, two grids at one NFE: every cell scored, the optimised grid's closed-form W2 on
    the checkpoint's data spectrum no worse than the uniform one's, and a rerun that scores nothing again."""
    from softdiff.cli.train import main as train

    quick_classifier(monkeypatch)
    run = tmp_path / "run"
    assert train(["--preset", "smoke", "--data", "mnist", "--resolution", "16", "--cond", "class", "--steps", "2",
                  "--out", str(run), "--threads", "1"]) == 0  # fmt: skip
    grids = load("grids_trained")
    out = tmp_path / "record"
    argv = ["--ckpt", str(run), "--nfe", "3", "--samplers", "heun", "--grids", "uniform,optimized", "--samples", "10",
            "--out", str(out)]  # fmt: skip
    results = grids.main(argv)
    assert set(results) == {"heun/uniform/3", "heun/optimized/3"}
    assert all(r["count"] == 10 and r["time_grid"] in ("uniform", "optimized") for r in results.values())
    assert results["heun/optimized/3"]["predicted_w2"] <= results["heun/uniform/3"]["predicted_w2"]
    assert "| heun | optimized |" in (out / "grids_trained.md").read_text()
    monkeypatch.setattr(grids.digit_cells, "score_cell", lambda *a, **k: pytest.fail("scored a cell again"))
    assert grids.main(argv) == results


def test_restore_operators_end_to_end(tmp_path, monkeypatch):
    """Two 2-step runs (masking on MNIST, desaturation on the RGB shapes): every (run, t) record with the RMS of the
    blind restoration and of the Wiener filter, the label metric for the digits only, and one figure row per run."""
    from PIL import Image

    from softdiff.cli.train import main as train

    quick_classifier(monkeypatch)
    runs = {"masking": ("mnist", "masking"), "desaturate": ("shapes:64", "desaturate")}
    for name, (data, operator) in runs.items():
        assert train(["--preset", "smoke", "--data", data, "--operator", operator, "--steps", "2", "--out",
                      str(tmp_path / name), "--threads", "1"]) == 0  # fmt: skip
    restore = load("restore_operators")
    out, figure = tmp_path / "record", tmp_path / "figure.png"
    restore.main(["--runs", ",".join(f"{n}={tmp_path / n}" for n in runs), "--times", "0.3,0.6", "--n", "4",
                  "--nfe", "3", "--out", str(out), "--figure", str(figure), "--figure-t", "0.6"])  # fmt: skip
    records = json.loads((out / "restore_operators.json").read_text())["records"]
    assert [(r["run"], r["t"]) for r in records] == [(n, t) for n in runs for t in (0.3, 0.6)]
    for r in records:
        assert r["rms_restored"] > 0 and r["rms_wiener"] > 0 and r["n"] == 4
        assert ("label_kept_restored" in r) == (r["run"] == "masking")
    width, height = Image.open(figure).size
    assert Image.open(figure).mode == "RGB" and width > 2 * height  # 2 rows of 18 images
    assert (out / "restore_operators.md").read_text().count("| desaturate |") == 2
