"""The README's example and commands stay true."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python example"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["samples"].shape == (8, 3, 32, 32)
    assert namespace["loss"].dim() == 0


def test_ci_runs_the_readme_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]"' in README.read_text() and "python -m pytest -q" in README.read_text()
    assert "python -m pytest -q" in ci and '-e ".[test]"' in ci
