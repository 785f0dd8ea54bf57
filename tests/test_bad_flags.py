"""Every flag of every entry point, given bad values: exit 2, one sentence naming the flag, no traceback, nothing
written, and no work started.

The cases come from the flags themselves (each entry point's flag table and its absl flags), so a new flag is
covered, or refused by ``test_every_flag_has_bad_values`` until its bad values are listed. They run in-process
through each entry point's ``cli.run`` (absl's parse, the config records, the checks), with the work it would
start replaced by a tripwire; a few run as subprocesses for the real exit status.
"""

import importlib
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from entry_points import run_entry_point

import experiments
from experiments import cli
from rev_nets import train
from rev_nets.analysis import (
    random_like,
    report_files,
    reversibility,
    sweep,
    theory_sweeps,
)

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = sorted(
    path.stem
    for path in (ROOT / "experiments").glob("*.py")
    if path.stem not in ("__init__", "cli", "runner", "settings")
)
TRAINING = ("mnist", "cifar10", "cifar100", "cifar10_airbench")
WORK = {  # What each entry point starts once its flags pass (and report_files.write): replaced by a tripwire.
    **{name: [(train, "train_and_evaluate")] for name in TRAINING},
    "theory": [(theory_sweeps, "sweep_report")],
    "random_like": [(random_like, "analyse")],  # After the weights are read and checked.
    "reversibility": [(reversibility, "load_test_images"), (reversibility, "run_controls")],  # After the run is read.
    "report": [(sweep, "read_tuning")],  # The first work of either summary, once the grid folder is checked.
    "grid": [(sweep, "run_sweep")],
}
BASE = {  # What an entry point needs to reach its work at all.
    "random_like": ["--weights={good_npz}"],
    "report": ["--grid={archive}"],  # The committed grid: a folder of finished runs.
}
BAD_TEXT = {  # Bad values of flags whose type says nothing about them ({name}: a made path, see `places`).
    "workdir": ["{file}", "{file}/sub", "/sys/rev_nets_workdir", ""],
    "data_dir": ["{missing}", "{file}"],
    "model": ["nosuch", "no_such_module:f", "rev_nets.nnx_zoo:missing"],
    "model_args": ["[1]", "{{bad", '{{"nosuch": 1}}'],
    "alpha": ["big", "nan", "inf", "-1"],
    "channels": ["8,x", "0", "8,-8", ""],
    "widths": ["8,x", "0", "8,-8", ""],
    "augment": ["blur", "flip,flip", "flip,blur"],
    "plain_vjp": ["erfc,", "tanh x"],
    "run": ["{missing}", "{file}", "{empty}"],
    "weights": ["{missing}", "{nan_npz}"],
    "control": ["1,2", "784,64:0:1", "784,64:10:nan"],
    "dataset": ["nosuch"],
    "grid": ["{missing}"],
    "archive": ["{missing}"],
}


class WorkStarted(Exception):
    """An entry point started its work although a flag was bad."""


def tripwire(*args, **kwargs):
    raise WorkStarted


def _module(name: str):
    """``experiments.<name>`` imported afresh, its shared flags defined as it defines them when run alone (the
    first module to define one sets its type and bounds; random_like and reversibility define --run and --weights
    differently). Its own flags go too: absl accepts a second definition only from a module object of another
    id, and the freed module's id can be reused, so a re-import would otherwise fail at random."""
    own = [flag.name for flag in flags.FLAGS.flags_by_module_dict().get(f"experiments.{name}", [])]
    for flag in {*cli.SHARED_FLAGS, "run", "weights", *own}:
        if flag in flags.FLAGS:
            delattr(flags.FLAGS, flag)
    for module in (name, "runner"):
        sys.modules.pop(f"experiments.{module}", None)
        vars(experiments).pop(module, None)
    return importlib.import_module(f"experiments.{name}")


def _flags(name: str) -> dict[str, tuple[tuple[str, ...], object]]:
    """The flags an entry point reads (its table's rows, or the flag holders it keeps), each with the choices its
    row lists (checked with the record, not by absl) and its absl parser, as the entry point defines them."""
    module = _module(name)
    if name in TRAINING:
        choices = {row.name: row.choices for row in module.ENTRY.rows} | {"workdir": (), "data_dir": ()}
    else:
        choices = {value.name: () for value in vars(module).values() if isinstance(value, flags.FlagHolder)}
    return {flag: (listed, flags.FLAGS[flag].parser) for flag, listed in choices.items()}


FLAGS_OF = {name: _flags(name) for name in ENTRY_POINTS}


def bad_values(name: str, flag: str) -> list[str]:
    """Bad values of ``flag`` on entry point ``name``: listed ones, else by what its absl parser reads."""
    if flag in BAD_TEXT:
        return BAD_TEXT[flag]
    choices, parser = FLAGS_OF[name][flag]
    if choices or isinstance(parser, flags.EnumParser):
        return ["nosuch"]
    if isinstance(parser, flags.BooleanParser):
        return ["maybe"]
    if isinstance(parser, flags.IntegerParser):
        return ["abc", "1.5", "-1"]
    if isinstance(parser, flags.FloatParser):
        return ["abc", "nan", "inf", "-1"]
    return []


CASES = [
    pytest.param(name, flag, value, id=f"{name}--{flag}={value}")
    for name in ENTRY_POINTS
    for flag in FLAGS_OF[name]
    for value in bad_values(name, flag)
]


def test_every_entry_point_has_its_work_named():
    assert sorted(WORK) == ENTRY_POINTS, "name the work a new entry point starts in WORK"


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_flag_has_bad_values(name):
    missing = [flag for flag in FLAGS_OF[name] if not bad_values(name, flag)]
    assert not missing, f"list bad values of {missing} in BAD_TEXT"


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """The made paths the bad values name."""
    root = tmp_path_factory.mktemp("places")
    (root / "file").write_text("not a folder")
    (root / "empty").mkdir()
    np.savez(root / "nan.npz", w=np.full((16, 16), np.nan, np.float32))
    np.savez(root / "good.npz", w=np.random.default_rng(0).normal(size=(16, 16)).astype(np.float32))
    names = {"file": "file", "empty": "empty", "missing": "missing", "nan_npz": "nan.npz", "good_npz": "good.npz"}
    return {key: str(root / value) for key, value in names.items()} | {"archive": str(ROOT / "results")}


@pytest.fixture
def entry(monkeypatch, capsys):
    """``run(name, argv) -> (exit status, stderr)``: the entry point in-process, its work replaced by a tripwire."""
    monkeypatch.setattr(train, "use_cpu_devices", lambda count: None)  # JAX's backend is up already.
    monkeypatch.setattr(report_files, "write", tripwire)

    def run(name: str, argv: list[str]) -> tuple[int, str]:
        for owner, attribute in WORK[name]:
            monkeypatch.setattr(owner, attribute, tripwire)
        monkeypatch.setattr(sys, "argv", [f"experiments/{name}.py", *argv])
        flags.FLAGS.unparse_flags()
        module = _module(name)
        with pytest.raises(SystemExit) as exit:
            module.runner.run(module.ENTRY) if name in TRAINING else cli.run(module.main)
        return exit.value.code, capsys.readouterr().err

    yield run
    flags.FLAGS.unparse_flags()


def _refused_in_one_sentence(status: int, err: str, flag: str, value: str) -> None:
    assert status == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), err
    message = err.strip()
    assert message.endswith(".") and not re.search(r"\.\s+[A-Z]", message), message  # One sentence.
    named = f"--{flag}" in message or ("/" in value and os.path.basename(value) in message)  # A file: its name.
    assert named, message


@pytest.mark.parametrize("name,flag,value", CASES)
def test_a_bad_value_stops_before_any_work(name, flag, value, entry, places, tmp_path):
    value = value.format(**places)
    out = tmp_path / "out"
    argv = [item.format(**places) for item in BASE.get(name, [])]
    argv += [] if flag == "workdir" else [f"--workdir={out}"]
    status, err = entry(name, [*argv, f"--{flag}={value}"])
    _refused_in_one_sentence(status, err, flag, value)
    assert not out.exists() and not os.path.exists("/sys/rev_nets_workdir")
    assert sorted(os.listdir(places["empty"])) == [] and not os.path.exists(os.path.join(places["file"], "sub"))


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_good_flags_reach_the_work(name, entry, places, tmp_path):
    """The tripwire fires for good flags: the cases above are refused for their value, not for the harness."""
    argv = [item.format(**places) for item in BASE.get(name, [])]
    with pytest.raises(WorkStarted):
        entry(name, [*argv, f"--workdir={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "module,flag,message",
    [
        ("mnist", "--learning_rate=abc", "--learning_rate must be a number, got 'abc'."),
        ("mnist", '--model_args={{"nosuch": 1}}', "--model_args do not fit rev_nets.nets:mnist_mlp"),
        ("theory", "--workdir={file}", "--workdir {file} is a file, not a folder; give a folder."),
        ("random_like", "--weights={nan_npz}", "holds 256 of 256 weights that are NaN or infinite"),
    ],
)
def test_the_command_exits_2_with_one_line(module, flag, message, places, tmp_path):
    extra = [] if "workdir" in flag else [f"--workdir={tmp_path / 'out'}"]
    result = run_entry_point(module, flag.format(**places), *extra, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message.format(**places) in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
