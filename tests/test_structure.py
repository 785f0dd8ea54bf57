"""The house keeps its shape: BUILD_NOTES' structure table holds for every file, entry points stay thin, and the
library defines no command-line flag."""

import ast
import importlib
import importlib.util
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE_ROW = re.compile(r"^\| `(rev_nets/[\w/]+\.py)` \| (.+?) \|\s*(.*?)\s*\|$", re.MULTILINE)


def allowed_imports() -> dict[str, set[str]]:
    """File -> the rev_nets modules it may import, from the table at the top of BUILD_NOTES.md."""
    rows = TABLE_ROW.findall((ROOT / "BUILD_NOTES.md").read_text())
    return {path: {m.strip() for m in allowed.split(",") if m.strip()} for path, _, allowed in rows}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """The modules ``path`` imports, with ``from package import submodule`` resolved to the submodule."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if _is_module(candidate) else node.module)
    return found


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # A name inside a module, not a module.
        return False


def _short(module: str) -> str:
    return module.removeprefix("rev_nets.") if module != "rev_nets" else module


def _permitted(module: str, allowed: set[str]) -> bool:
    return module in allowed or any(a.endswith(".*") and module.startswith(a[:-1]) for a in allowed)


LIBRARY = sorted(p for p in (ROOT / "rev_nets").rglob("*.py"))


def test_every_library_file_has_a_row():
    missing = [str(p.relative_to(ROOT)) for p in LIBRARY if str(p.relative_to(ROOT)) not in allowed_imports()]
    assert not missing, f"add a row for each to the structure table of BUILD_NOTES.md: {missing}"


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_library_file_imports_only_what_its_row_allows(path):
    allowed = allowed_imports()[str(path.relative_to(ROOT))]
    own = {_short(m) for m in imported(path) if m.startswith("rev_nets")} - {_short(module_name(path))}
    assert not [m for m in own if not _permitted(m, allowed)], f"{path.name} imports {sorted(own)}; allowed {allowed}"


def test_each_library_docstring_opens_with_its_concern():
    bare = [
        str(p.relative_to(ROOT)) for p in LIBRARY if not (ast.get_docstring(ast.parse(p.read_text())) or "").strip()
    ]
    assert not bare


def public_api() -> set[str]:
    """Importable names of the library's public API: its modules (not the data/train internals) and exports."""
    names = set()
    for info in pkgutil.walk_packages([str(ROOT / "rev_nets")], prefix="rev_nets."):
        internal = info.name.startswith(("rev_nets.data.", "rev_nets.train."))
        if not internal:
            names.add(info.name)
    for package in ("rev_nets.data", "rev_nets.train"):
        names |= {f"{package}.{name}" for name in importlib.import_module(package).__all__}
    names |= {f"rev_nets.{name}" for name in importlib.import_module("rev_nets").__all__}
    return names | {"rev_nets", "rev_nets.data", "rev_nets.train"}


@pytest.mark.parametrize(
    "path", sorted((ROOT / "experiments").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT / "experiments"))
)
def test_entry_points_import_only_the_public_api_absl_and_the_standard_library(path):
    api = public_api()
    wrong = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            targets = [f"{node.module}.{alias.name}" for alias in node.names]
            top = node.module.split(".")[0]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
            top = targets[0].split(".")[0]
        else:
            continue
        if top == "rev_nets":
            wrong += [t for t in targets if t not in api and t.rsplit(".", 1)[0] not in api]
        elif top not in ("experiments", "absl", "__future__") and top not in sys.stdlib_module_names:
            wrong += targets
    assert not wrong, f"{path.name} imports {wrong}: move that work into the library and call it from there"


def test_importing_the_library_defines_no_absl_flag():
    script = (
        "import importlib, pkgutil, rev_nets\n"
        "from absl import flags\n"
        "for info in pkgutil.walk_packages(rev_nets.__path__, prefix='rev_nets.'):\n"
        "    importlib.import_module(info.name)\n"
        "ours = [n for n in flags.FLAGS if (flags.FLAGS.find_module_defining_flag(n) or '').startswith('rev_nets')]\n"
        "print('defined:', ours)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "defined: []" in result.stdout, result.stdout + result.stderr[-2000:]


def test_the_checks_catch_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import jax\nfrom rev_nets.train.steps import train_step\nfrom rev_nets import data\n")
    modules = imported(bad)
    assert {"jax", "rev_nets.train.steps", "rev_nets.data"} <= modules
    assert not _permitted("train.steps", {"train.config"}) and _permitted("data.idx", {"data.*"})
    assert "rev_nets.train.steps.train_step" not in public_api() and "rev_nets.train.fit" in public_api()


def test_the_public_face_holds_what_a_notebook_needs():
    import rev_nets

    needed = {"reverse", "twins", "GeneratorConfig", "ShadowConfig", "TrainConfig", "RunConfig", "ModelConfig"}
    needed |= {"fit_in_memory", "fit", "train_and_evaluate", "load_run", "nnx_model", "data"}
    assert needed <= set(rev_nets.__all__) and all(hasattr(rev_nets, name) for name in rev_nets.__all__)
    assert not {"make_train_step", "zero_metrics", "shard_batch", "data_mesh"} & set(rev_nets.train.__all__)


def test_the_notebook_and_readme_use_only_the_public_face():
    import json

    import rev_nets

    cells = json.loads((ROOT / "notebooks" / "quickstart.ipynb").read_text())["cells"]
    code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    readme = (ROOT / "README.md").read_text()
    for text in (code, readme):
        imports = re.findall(
            r"^\s*(?:from (rev_nets[\w.]*) import ([\w, ]+)|import (rev_nets[\w.]*))", text, re.MULTILINE
        )
        for module, names, plain in imports:
            if plain:
                assert plain == "rev_nets", plain
            elif module == "rev_nets":
                assert {n.strip() for n in names.split(",")} <= set(rev_nets.__all__), names
            else:
                assert module == "rev_nets.nnx_zoo", module  # the example models a user copies from
