"""The README's quickstart and the tutorials run exactly as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_readme_quickstart_runs():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert blocks, "README has no python block"
    exec(compile(blocks[0], "README.md", "exec"), {})


def test_readme_array_level_example_runs():
    text = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL) if "kd.function(" in b and "kd.shared(" in b]
    exec(compile(block, "README.md", "exec"), {})


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "tutorials").glob("*.py")))
def test_tutorial_runs(script, tmp_path):
    env = dict(os.environ, KERNELDSL_USE_RECORDS="1", KERNELDSL_TUNING_DB=str(tmp_path / "tuning.sqlite"))
    r = subprocess.run([sys.executable, str(ROOT / "tutorials" / script)], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
