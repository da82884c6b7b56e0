"""benchmarks/gpu_check.sh: its plumbing, run on the CPU (GPU_CHECK_ALLOW_CPU=1), since it runs for real only in
short, scarce GPU leases where a broken script would waste them: the time budget skips what does not fit, the
report is always written, and OUTDIR holds only the few files such a lease hands back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch

from softdiff_kernels.dispatch import cuda_extension_status

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
OUT_FILES = {"report.md", "results.tar.gz", "small-samples.png", "restore-depth.png"}


def gpu_check(out: Path, *stages: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": os.environ.get("PYTHON", "python"), **env}
    return subprocess.run(["bash", str(SCRIPT), str(out), *stages], env=full_env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_refuses_unknown_stages_and_a_missing_gpu(tmp_path):
    result = gpu_check(tmp_path / "out", "nonsense")
    assert result.returncode == 2 and "unknown stage 'nonsense'" in result.stderr
    if not torch.cuda.is_available():
        result = gpu_check(tmp_path / "out", "train")
        assert result.returncode == 2 and "no CUDA GPU" in result.stderr
        assert not (tmp_path / "out").exists()


def test_train_stage_within_a_budget_writes_few_files(tmp_path):
    """A budget of 40 s and a training run that no machine finishes in it (100 000 steps): the run is stopped at its
    cap (what is left of the budget less 5 s), the steps after it are skipped for want of 30 s, and each says so;
    exit 1. The outcome does not depend on the machine's speed."""
    out, run_dir = tmp_path / "out", tmp_path / "run"
    train_args = "--net tiny --resolution 16 --batch 4 --steps 100000 --ckpt-every 2 --sample-every 2 --nfe 2"
    train_args += " --sample-count 4 --log-every 1"
    result = gpu_check(out, "train", GPU_CHECK_ALLOW_CPU="1", GPU_CHECK_BUDGET_S="40", GPU_CHECK_RUN_DIR=str(run_dir),
                       GPU_CHECK_TRAIN_ARGS=train_args)  # fmt: skip
    report = (out / "report.md").read_text()
    assert "## stage train" in report and re.search(r"^- train-small: stopped at its \d+ s cap", report, re.M), report
    later = [line for line in report.splitlines() if line.startswith(("- restore-depth:", "- nfe-speed:"))]
    assert len(later) == 2 and all(re.fullmatch(r"- [a-z-]+: skipped, \d s of the budget left", line) for line in later)
    assert result.returncode == 1
    assert {path.name for path in out.iterdir()} <= OUT_FILES and (out / "small-samples.png").is_file()
    with tarfile.open(out / "results.tar.gz") as archive:
        names = {Path(name).as_posix().removeprefix("./") for name in archive.getnames()}
    assert {"train-small.log", "train-small/log.jsonl"} <= names
    assert (run_dir / "checkpoints").is_dir()  # checkpoints stay out of OUTDIR


def test_a_call_stopped_from_outside_still_writes_its_report(tmp_path):
    """A lease's time limit stops the script with SIGTERM: the report and the archive of what ran must survive."""
    out, run_dir = tmp_path / "out", tmp_path / "run"
    train_args = "--net tiny --resolution 16 --batch 4 --steps 100000"
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", "python"), "GPU_CHECK_ALLOW_CPU": "1",
           "GPU_CHECK_RUN_DIR": str(run_dir), "GPU_CHECK_TRAIN_ARGS": train_args}  # fmt: skip
    process = subprocess.Popen(["bash", str(SCRIPT), str(out), "train"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "log.jsonl").exists():
        time.sleep(0.2)
    process.terminate()
    assert process.wait(timeout=60) == 143
    report = (out / "report.md").read_text()
    assert "## stage train" in report and "stopped from outside" in report
    assert (out / "results.tar.gz").is_file() and {path.name for path in out.iterdir()} <= OUT_FILES


def test_script_parses_smoke():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


STAND_IN_PYTHON = """#!/usr/bin/env bash
# Python for gpu_check.sh, minus the slow and machine-changing calls: pip, pytest and the kernel benchmark only
# write what they were called with (and the environment that matters) to CALLS.
case "$1 ${2:-}" in
  "-m pip") echo "pip SOFTDIFF_CUDA_BUILD=${SOFTDIFF_CUDA_BUILD:-unset}" >>CALLS && exit 0 ;;
  "-m pytest") echo "pytest EXPECT=${SOFTDIFF_EXPECT_CUDA_EXTENSION:-unset}" >>CALLS && exit 0 ;;
  "benchmarks/kernels.py "*) echo "kernels" >>CALLS && exit 0 ;;
esac
exec REAL "$@"
"""


def stand_in_python(folder: Path) -> tuple[Path, Path]:
    calls = folder / "calls.txt"
    script = folder / "python"
    script.write_text(STAND_IN_PYTHON.replace("CALLS", str(calls)).replace("REAL", sys.executable))
    script.chmod(0o755)
    return script, calls


def test_tests_expect_the_cuda_extension_after_an_install_that_built_it(tmp_path):
    """The core stage installs with SOFTDIFF_CUDA_BUILD=1, says in the report whether softdiff_kernels._C loaded,
    and runs the tests with SOFTDIFF_EXPECT_CUDA_EXTENSION=1 (a missing extension then fails them); the tests stage
    of a call that did not install (softdiff already importable) leaves it unset. pip and pytest are stand-ins."""
    python, calls = stand_in_python(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "SOFTDIFF_EXPECT_CUDA_EXTENSION"}
    env |= {"PYTHON": str(python), "GPU_CHECK_ALLOW_CPU": "1"}
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "core"], env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    report = (tmp_path / "out" / "report.md").read_text()
    assert result.returncode == 0, report + result.stderr[-2000:]
    assert calls.read_text().splitlines() == ["pip SOFTDIFF_CUDA_BUILD=1", "pytest EXPECT=1",
                                              "kernels", "kernels"]  # fmt: skip
    loaded, why = cuda_extension_status()
    line = re.search(r"^- cuda-extension: (.*)$", report, re.M)
    assert line, report
    assert line.group(1) == f"{'loaded' if loaded else 'NOT loaded'} ({why}); its build was requested: " + (
        "SOFTDIFF_EXPECT_CUDA_EXTENSION=1 for the tests"
    )
    assert report.index("- install: exit 0") < line.start() < report.index("- gpu-tests: exit 0")
    calls.unlink()
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "again"), "tests"], env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    report = (tmp_path / "again" / "report.md").read_text()
    assert result.returncode == 0, report + result.stderr[-2000:]
    assert calls.read_text().splitlines() == ["pytest EXPECT=unset"]
    assert re.search(r"^- cuda-extension: (NOT )?loaded \(.*\)$", report, re.M), report
