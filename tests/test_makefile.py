"""`make venv` installs with uv and falls back to pip: run against a fake interpreter.

The recipe runs for real (make, the shell), with VENV pointing at a temporary folder whose
`bin/python` and `bin/uv` only log their arguments and exit as told, so each path is seen
without a network or a 90-second install.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
case "$*" in *"{fail}"*) exit 1;; esac
exit 0
"""


def run_venv_recipe(tmp_path: Path, *, pip_fails: str = "never", uv_fails: str = "never"):
    """Runs `make venv` with a fake venv; returns the logged commands, one a line."""
    venv, log = tmp_path / "venv", tmp_path / "log"
    (venv / "bin").mkdir(parents=True)
    for name, fail in (("python", pip_fails), ("uv", uv_fails)):
        tool = venv / "bin" / name
        tool.write_text(FAKE.format(log=log, fail=fail))
        tool.chmod(0o755)
    done = subprocess.run(
        ["make", "-C", str(ROOT), f"VENV={venv}", "venv"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (venv / ".installed").is_file()
    return log.read_text().splitlines(), done.stderr


pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def test_uv_is_pinned_in_constraints():
    pins = re.findall(r"^uv==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert len(pins) == 1, pins


def test_uv_installs_the_project_when_it_can(tmp_path):
    lines, _ = run_venv_recipe(tmp_path)
    assert lines[0].startswith("python -m pip install --quiet -c constraints.txt uv")
    assert re.match(r"uv pip install .*-c constraints.txt -e \.\[train,dev\]$", lines[1]), lines
    assert len(lines) == 2, lines


@pytest.mark.parametrize("failing", ["pip", "uv"])
def test_pip_installs_the_project_when_uv_cannot(tmp_path, failing):
    if failing == "pip":  # uv itself cannot be installed (no index that has it)
        lines, stderr = run_venv_recipe(tmp_path, pip_fails="-c constraints.txt uv")
    else:  # uv is there but its install fails
        lines, stderr = run_venv_recipe(tmp_path, uv_fails="pip install")
    assert "installing with pip" in stderr
    assert lines[-1] == "python -m pip install --quiet -c constraints.txt -e .[train,dev]", lines
