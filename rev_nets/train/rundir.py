"""The run directory: ``config.json``, ``metrics.jsonl``, orbax checkpoints, TensorBoard events, and reading a run back.

A restarted run checks its config against the saved one, resumes from the
latest checkpoint and drops metric lines (and TensorBoard events) written
after it. ``load_run`` is the one way to open a run read-only: its config,
its model (rebuilt from its record), its metrics and its params at any saved
step. Runs saved before models were recorded by factory hold their net's
``repr`` (``{"net": "Net(...)"}``); ``net_from_repr`` reads those, and they
still resume.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import types
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from rev_nets import data, layers, models, nets
from rev_nets.errors import InputError
from rev_nets.train.config import TrainConfig, TrainingError

BUILT_IN_FACTORIES = ("rev_nets.nets", "rev_nets.nnx_zoo")  # modules whose factories a reader may always import


def code_version() -> dict[str, Any]:
    """The code a run comes from: the git commit of this checkout and whether it had uncommitted changes
    (both None outside a git checkout, e.g. an installed wheel)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    git = lambda *args: subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, check=False)
    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except OSError:  # No git on this machine.
        return {"commit": None, "dirty": None}
    if commit.returncode:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


PROVENANCE = "code"  # config.json's record of the code; a resume from other code is noted there, not refused.
DATA = "data"  # config.json's fingerprint of the splits (``data.fingerprint``); a resume on other data is refused.
SHOWN_CHANGES = 3  # Differing settings a refusal names; it counts the rest.


def check_config(workdir: str, config_json: dict[str, Any]) -> None:
    """Writes ``config.json``, or stops if an existing one differs from ``config_json``.

    A setting added after a run was saved takes its default value there, so
    older runs still resume. The code record (``PROVENANCE``) is not compared:
    a resume by other code appends that code to its ``resumed_by`` list. The
    data fingerprint (``DATA``) is compared when both records hold one; a run
    saved without one resumes with a note.
    """
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        _check_same_settings(workdir, path, saved, config_json)
        _check_same_data(workdir, saved.get(DATA), config_json.get(DATA))
        _note_resuming_code(path, saved, config_json.get(PROVENANCE))
        return
    os.makedirs(workdir, exist_ok=True)
    write_record(path, config_json)


def write_record(path: str, record: dict[str, Any]) -> None:
    """Writes ``record`` to ``path`` atomically as indented JSON with each list of plain values on one line, so
    that a saved label subset reads as one line, not one line per index."""
    _write_atomically(path, _indented_json(record) + "\n")


def _write_atomically(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file, so that a kill leaves the old file or the new one."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _indented_json(value: Any, level: int = 0) -> str:
    """``json.dumps(value, indent=2, sort_keys=True)`` at nesting ``level``, except that a list holding no list or
    object stays on one line."""
    pad, end = " " * (2 * level + 2), "\n" + " " * (2 * level)
    if isinstance(value, dict) and value:
        items = [f"{pad}{_json_key(key)}: {_indented_json(item, level + 1)}" for key, item in sorted(value.items())]
        return "{\n" + ",\n".join(items) + end + "}"
    if isinstance(value, (list, tuple)) and any(isinstance(item, (dict, list, tuple)) for item in value):
        return "[\n" + ",\n".join(pad + _indented_json(item, level + 1) for item in value) + end + "]"
    return json.dumps(value)


def _json_key(key: Any) -> str:
    """An object key as ``json.dumps`` writes it: a string, quoted; a number, bool or None as its JSON text, quoted."""
    return json.dumps(key if isinstance(key, str) else json.dumps(key))


def _check_same_settings(workdir: str, path: str, saved: dict[str, Any], config_json: dict[str, Any]) -> None:
    """Stops unless the saved record equals ``config_json`` once defaults are filled in and the code record and
    the data fingerprint are set aside (tuples compared as lists); the refusal names the first differing fields."""
    saved, wanted = json.loads(json.dumps(saved)), json.loads(json.dumps(config_json))
    if "train" in saved:
        try:
            saved["train"] = TrainConfig.from_json(saved["train"]).to_json()
        except (TypeError, KeyError) as error:
            raise TrainingError(
                f"{path} holds settings this version cannot read ({error}); start a new run directory."
            ) from None
        saved = json.loads(json.dumps(saved))
    for record in (saved, wanted):
        record.pop(PROVENANCE, None)
        record.pop(DATA, None)
    saved = _with_model_record(saved, wanted.get("model"))
    if saved != wanted:
        changes = [f"{field}: {_shown(old)} -> {_shown(new)}" for field, old, new in _changed_fields(saved, wanted)]
        more = len(changes) - SHOWN_CHANGES
        raise TrainingError(
            f"{workdir} holds a run with different settings ({'; '.join(changes[:SHOWN_CHANGES])}"
            f"{f'; and {more} more' if more > 0 else ''}); "
            "pass the same settings to resume it, or a new run directory to start another run."
        )


_UNSET = object()  # A field one record holds and the other does not.


def _changed_fields(saved: Mapping, wanted: Mapping, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(config path, saved value, wanted value)`` of every field that differs, nested records compared field by
    field (``train.learning_rate``), a field only one side holds as ``_UNSET`` on the other."""
    changes = []
    for key in sorted(set(saved) | set(wanted)):
        old, new = saved.get(key, _UNSET), wanted.get(key, _UNSET)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            changes += _changed_fields(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append((f"{prefix}{key}", old, new))
    return changes


def _shown(value: Any, limit: int = 40) -> str:
    """A setting's value as JSON text, cut to ``limit`` characters (a list of labelled indices is long)."""
    text = "unset" if value is _UNSET else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_same_data(workdir: str, saved: dict[str, Any] | None, wanted: dict[str, Any] | None) -> None:
    """Stops if the saved data fingerprint differs from ``wanted``; notes a run saved without one."""
    if wanted is None:
        return
    if saved is None:
        print(f"note: {workdir} was saved without a data fingerprint; this resume cannot check its data.", flush=True)
        return
    found = data.fingerprint_differences(saved, wanted)
    if found:
        raise TrainingError(
            f"{workdir} was trained on other data: {', '.join(found)}; resume it on the data it was trained on "
            "(the same files, from any folder), or give a new run directory."
        )


def _with_model_record(saved: dict[str, Any], wanted: dict[str, Any] | None) -> dict[str, Any]:
    """``saved`` with an old run's ``{"net": repr}`` replaced by the model record ``wanted`` when that record builds
    the same net, so that runs saved before nets were recorded by factory resume."""
    if "net" not in saved or wanted is None:
        return saved
    if net_from_repr(saved["net"]) != models.build_model(models.ModelConfig.from_json(wanted)):
        return saved
    return {name: value for name, value in saved.items() if name != "net"} | {"model": wanted}


def _note_resuming_code(path: str, saved: dict[str, Any], code: dict[str, Any] | None) -> None:
    """Appends ``code`` to the saved record's ``resumed_by`` when it differs from the code that started the run."""
    record = saved.get(PROVENANCE)
    if code is None or record is None or code == {k: record.get(k) for k in code}:
        return
    if code in record.get("resumed_by", []):
        return
    record["resumed_by"] = [*record.get("resumed_by", []), code]
    write_record(path, saved)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The metric lines of ``workdir``, skipping a last line cut short by a kill."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    complete = []
    for i, line in enumerate(lines):
        try:
            complete.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:  # Only a run killed mid-write leaves a broken (last) line.
                raise
    return complete


def truncate_metrics(workdir: str, last_step: int) -> list[dict[str, Any]]:
    """Drops metric lines written after the checkpoint at ``last_step``; returns the rest."""
    kept = [m for m in read_metrics(workdir) if m["step"] <= last_step]
    _write_atomically(os.path.join(workdir, "metrics.jsonl"), "".join(json.dumps(m) + "\n" for m in kept))
    return kept


def append_metrics(workdir: str, line: dict[str, Any]) -> None:
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())


def tensorboard_writer(workdir: str, purge_step: int):
    """A TensorBoard writer for ``<workdir>/tensorboard`` when tensorboardX is installed, else None.

    ``purge_step`` drops events a killed run wrote after its last checkpoint,
    as ``truncate_metrics`` does for ``metrics.jsonl``.
    """
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge_step)


def write_scalars(writer, line: dict[str, Any]) -> None:
    """One epoch's numeric metrics as TensorBoard scalars at its step."""
    for name, value in line.items():
        if name not in ("epoch", "step", "devices") and isinstance(value, (int, float)):
            writer.add_scalar(name, value, line["step"])
    writer.flush()


def checkpoint_manager(workdir: str) -> ocp.CheckpointManager:
    """Keeps the two latest checkpoints and always the one of step 0 (initial weights)."""
    policy = ocp.checkpoint_managers.AnyPreservationPolicy(
        [ocp.checkpoint_managers.LatestN(2), ocp.checkpoint_managers.CustomSteps([0])]
    )
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options)


_NET_TYPES = {"Net": nets.Net, "Dense": layers.Dense, "Conv": layers.Conv}


def _literal(node: ast.AST):
    """Builds the value of a parsed repr: calls of the net and layer classes, tuples and literals only."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _NET_TYPES:
        args = [_literal(a) for a in node.args]
        return _NET_TYPES[node.func.id](*args, **{kw.arg: _literal(kw.value) for kw in node.keywords})
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e) for e in node.elts)
    return ast.literal_eval(node)


def net_from_repr(text: str) -> nets.Net:
    """The ``Net`` whose ``repr`` is ``text`` (as saved in a run's config.json), parsed without ``eval``."""
    try:
        net = _literal(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, TypeError) as error:
        raise TrainingError(f"config.json's net {text!r} is not a net description this code can rebuild ({error}).")
    if not isinstance(net, nets.Net):
        raise TrainingError(f"config.json's net {text!r} is not a Net.")
    return net


def model_record(model: models.Model) -> dict[str, Any]:
    """How config.json names the model: ``{"model": {"factory": ..., "arguments": ...}}``, from its record."""
    record = getattr(model, "record", None)
    if record is None:
        raise TrainingError(
            f"this {type(model).__name__} has no record (factory and arguments) for config.json; make it with a "
            "factory, models.build_model('package.module:factory', **arguments), e.g. rev_nets.nets:cifar_cnn."
        )
    return {"model": record.to_json()}


@dataclasses.dataclass(frozen=True)
class Run:
    """A run directory opened read-only.

    ``config`` is its config.json with ``"train"`` read as a ``TrainConfig``
    and ``"model"`` as a ``models.ModelConfig`` (a run saved before models
    were recorded by factory keeps its ``"net"`` repr), beside ``dataset``,
    ``num_validation``, ``labelled_indices``, the data fingerprint and the
    code record as saved; ``model`` is rebuilt from it; ``metrics`` are the
    lines of metrics.jsonl; ``steps`` the steps of its checkpoints, oldest
    first.
    """

    workdir: str
    config: Mapping[str, Any]
    model: models.Model
    metrics: list[dict[str, Any]]
    steps: tuple[int, ...]

    def params(self, step: int | None = None) -> Any:
        """The params saved at ``step`` (None: the latest), shaped like ``model.init``'s, on this host's first
        device: a run saved over 8 CPU devices (or a GPU) opens on one."""
        if not self.steps:
            raise InputError(f"{self.workdir} holds no checkpoints; train it first, or wait for its first save.")
        step = self.steps[-1] if step is None else step
        if step not in self.steps:
            raise InputError(
                f"{self.workdir} has no checkpoint of step {step}; its saved steps are {list(self.steps)}."
            )
        saved = _restore(self.workdir, step)["params"]
        try:
            return jax.tree_util.tree_map_with_path(
                lambda path, _: _pick(saved, path), jax.eval_shape(self.model.init, jax.random.key(0))
            )
        except (KeyError, IndexError, TypeError) as error:
            raise InputError(
                f"{self.workdir}'s checkpoint of step {step} does not hold its model's params ({error}); "
                "the run was saved by other code."
            ) from None


def load_run(workdir: str, *, factory: str | None = None) -> Run:
    """The run in ``workdir``, read-only.

    Rebuilding a model imports its factory's module, which runs its code: a
    factory recorded in config.json is imported only when the caller names
    it (``factory``), except the built-in ones (``BUILT_IN_FACTORIES``).
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise InputError(
            f"{workdir} is not a run directory (it has no config.json); give the work directory of a training run."
        )
    with open(path) as f:
        config = json.load(f)
    try:
        config["train"] = TrainConfig.from_json(config["train"])
        if "model" in config:
            config["model"] = models.ModelConfig.from_json(config["model"])
    except (TypeError, KeyError) as error:
        raise InputError(
            f"{path} holds settings this version cannot read ({error}); read it with the code that wrote it."
        ) from None
    model = _run_model(workdir, config, factory)
    return Run(workdir, types.MappingProxyType(config), model, read_metrics(workdir), _saved_steps(workdir))


def _run_model(workdir: str, config: dict[str, Any], factory: str | None) -> models.Model:
    """The model a parsed config.json records, imported only if its factory is built in or named by the reader."""
    if "net" in config:
        return net_from_repr(config["net"])
    record = config["model"]
    if record.factory.partition(":")[0] not in BUILT_IN_FACTORIES and factory != record.factory:
        raise InputError(
            f"{workdir} trained the model {record.factory}, whose code is imported only when the reader names it; "
            f"pass factory={record.factory!r} to read the run."
        )
    return models.build_model(record)


def _read_only_manager(workdir: str) -> ocp.CheckpointManager:
    """A manager of ``workdir``'s checkpoints that reads them without a target and never writes."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # Orbax warns that a read-only manager will not save.
    try:
        return ocp.CheckpointManager(
            os.path.abspath(os.path.join(workdir, "checkpoints")),
            options=ocp.CheckpointManagerOptions(read_only=True),
            item_handlers=ocp.StandardCheckpointHandler(),
        )
    finally:
        logging.set_verbosity(verbosity)


def _saved_steps(workdir: str) -> tuple[int, ...]:
    """The steps of ``workdir``'s checkpoints, oldest first (none before the first save)."""
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return ()
    with _read_only_manager(workdir) as manager:
        return tuple(sorted(manager.all_steps()))


def _restore(workdir: str, step: int) -> dict[str, Any]:
    """The TrainState saved at ``step`` as nested dicts and lists on this host's first device: the target is built
    from the checkpoint's own metadata, whatever devices saved it."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    on_device = lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device)
    with _read_only_manager(workdir) as manager:
        target = jax.tree.map(on_device, manager.item_metadata(step))
        return manager.restore(step, args=ocp.args.StandardRestore(target))


def _pick(saved: Any, path: tuple) -> Any:
    """The leaf at a params path (dict keys, sequence indices, attribute names) in a checkpoint read without a
    target, whose dict keys are strings (an ``nnx.State``'s integer keys too)."""
    node = saved
    for entry in path:
        key = getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry)))
        node = node[key] if isinstance(node, (list, tuple)) else node[str(key)]
    return node
