"""README.md and docs/ tell the truth: every command they show imports and parses, and CI runs the test command."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAGES = {
    path.relative_to(ROOT).as_posix(): path.read_text()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
}
# Imports the module, then parses its flags: concrete values are parsed; a placeholder value
# (``--learning_rate=<lr>``) only has its flag's name checked, and a bare placeholder is skipped.
PARSE = """
import importlib, sys
from absl import flags
importlib.import_module(sys.argv[1])
concrete = [a for a in sys.argv[2:] if "<" not in a and a not in ("--help", "--helpfull")]
named = [a[2:].split("=")[0] for a in sys.argv[2:] if "<" in a and a.startswith("--")]
flags.FLAGS(["prog", *concrete])
unknown = [name for name in named if name not in flags.FLAGS]
assert not unknown, f"unknown flags {unknown}"
print("parsed")
"""


def commands_in(text: str) -> list[list[str]]:
    """Every ``python -m experiments...`` or ``benchmarks...`` command in bash blocks and inline code of ``text``."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    lines += [" ".join(span.split()) for span in re.findall(r"`(python\s+-m\s+[^`]+)`", prose)]
    found = []
    for line in lines:
        for part in line.split("&&"):
            words = shlex.split(part.split("#")[0])
            if (
                words[:2] == ["python", "-m"]
                and len(words) > 2
                and words[2].split(".")[0] in ("experiments", "benchmarks")
            ):
                found.append(words[2:])
    return found


COMMANDS = [(page, command) for page, text in PAGES.items() for command in commands_in(text)]


def test_the_pages_show_every_entry_point():
    modules = {command[0] for _, command in COMMANDS}
    entry_points = {
        f"experiments.{p.stem}"
        for p in (ROOT / "experiments").glob("*.py")
        if p.stem not in ("__init__", "cli", "runner", "settings")
    }
    assert entry_points <= modules, entry_points - modules


def test_inline_commands_are_read_too():
    found = commands_in("Run `python -m experiments.mnist\n--epochs=2 --seed=<seed>` here.")
    assert found == [["experiments.mnist", "--epochs=2", "--seed=<seed>"]]


@pytest.mark.parametrize("page,command", COMMANDS, ids=lambda c: c if isinstance(c, str) else " ".join(c)[:60])
def test_command_imports_and_its_flags_parse(page, command):
    result = subprocess.run(
        [sys.executable, "-c", PARSE, *command], cwd=ROOT, check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "parsed" in result.stdout, f"{page}: {result.stderr[-2000:]}"


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)
    test_command = next(line for block in blocks for line in block.splitlines() if "pytest" in line)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command.strip() in ci.splitlines()
