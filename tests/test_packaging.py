"""How softdiff installs: the wheel holds every module of the source tree (a regular ``pip install .``, what a GPU
machine runs, must not lose a subpackage), and a folder named ``softdiff`` in the working directory (the parent
folder of a clone) does not shadow the installed package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("softdiff", "softdiff_kernels")


def source_files() -> set[str]:
    """The files a wheel must hold, relative to python/: every module and the shipped schedules."""
    found = set()
    for package in PACKAGES:
        for path in (ROOT / "python" / package).rglob("*"):
            if path.suffix == ".py" or (path.suffix == ".json" and path.parent.name == "designed"):
                if "__pycache__" not in path.parts:
                    found.add(path.relative_to(ROOT / "python").as_posix())
    return found


def test_the_wheel_holds_every_module_of_the_source_tree(tmp_path):
    project = tmp_path / "project"  # a copy: building writes build/ and *.egg-info beside the sources
    project.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "python", project / "python", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(project),
         "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "SOFTDIFF_CUDA_BUILD": "0"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("softdiff-*.whl")
    held = {name for name in zipfile.ZipFile(wheel).namelist() if not name.startswith("softdiff-")}
    expected = source_files()
    assert {"softdiff/training/loop.py", "softdiff/cli/train.py", "softdiff_kernels/dispatch.py"} <= expected
    assert not expected - held, f"missing from the wheel: {sorted(expected - held)}"


def test_a_folder_named_softdiff_in_the_working_directory_does_not_shadow_the_package(tmp_path):
    clone = tmp_path / "softdiff"  # what the parent folder of a clone named softdiff holds
    (clone / "python").mkdir(parents=True)
    (clone / "README.md").write_text("a clone\n")
    probe = "import softdiff, softdiff.cli.sample; print(softdiff.__file__); assert callable(softdiff.sample)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env=dict(os.environ))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert Path(result.stdout.strip()).resolve() == (ROOT / "python" / "softdiff" / "__init__.py").resolve()
    names = subprocess.run([sys.executable, "-c", "from softdiff.schedule_design import shipped_schedules as s; "
                            "print(' '.join(s()))"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                           env=dict(os.environ))  # fmt: skip
    assert "shapes-16" in names.stdout.split(), names.stderr[-3000:]
