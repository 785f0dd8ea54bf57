"""README.md tells the truth: its commands import and parse, and CI runs its test command."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PARSE = (
    "import importlib, sys; from absl import flags; importlib.import_module(sys.argv[1]); "
    "flags.FLAGS(['prog', *sys.argv[2:]]); print('parsed')"
)


def _commands() -> list[list[str]]:
    """Every ``python -m <module> ...`` invocation in README.md's code blocks."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part.split("#")[0])
                if words[:2] == ["python", "-m"] and words[2].split(".")[0] in ("experiments", "benchmarks"):
                    found.append(words[2:])
    return found


def test_readme_has_commands():
    modules = {c[0] for c in _commands()}
    assert {"experiments.mnist", "experiments.cifar10", "experiments.cifar100", "experiments.grid"} <= modules


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c)[:60])
def test_command_imports_and_its_flags_parse(command):
    result = subprocess.run(
        [sys.executable, "-c", PARSE, *command], cwd=ROOT, check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "parsed" in result.stdout, result.stderr[-2000:]


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)
    test_command = next(line for block in blocks for line in block.splitlines() if "pytest" in line)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command.strip() in ci.splitlines()
