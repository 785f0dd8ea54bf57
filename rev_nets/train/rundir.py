"""The run directory: ``config.json``, ``metrics.jsonl``, orbax checkpoints, TensorBoard events, and reading a run back.

A restarted run checks its config against the saved one, resumes from the
latest intact checkpoint and drops metric lines (and TensorBoard events)
written after it. ``checkpoints.json`` holds each checkpoint's checksum and
the run's early level (``guard``), outside the checkpoints' folder; a run
that blew up is marked by a ``DIVERGED`` file (its step, epoch and cause)
and resumes only with other ``RESTART_SETTINGS``, each restart recorded in
config.json. Every JSON file is strict: a non-finite number is ``null``.
``load_run`` is the one way to open a run read-only: its config, its model
(rebuilt from its record), its metrics and its params at any saved step; it
refuses a diverged run unless asked. Runs saved before models were recorded
by factory hold their net's ``repr`` (``{"net": "Net(...)"}``);
``net_from_repr`` reads those, and they still resume.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import json
import math
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
from rev_nets.train import guard
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
RESUMES = "resumes"  # The code record's list of resumes: the step each resumed from, its code and UTC time.
DATA = "data"  # config.json's fingerprint of the splits (``data.fingerprint``); a resume on other data is refused.
SHOWN_CHANGES = 3  # Differing settings a refusal names; it counts the rest.


RESTARTS = "restarts"  # config.json's list of resumes of a diverged run: the step, the changed settings, the mark.
RESTART_SETTINGS = ("grad_clip", "learning_rate")  # train settings a diverged run may resume with, changed


def check_config(workdir: str, config_json: dict[str, Any], diverged: dict[str, Any] | None = None) -> dict[str, list]:
    """Writes ``config.json``, or stops if an existing one differs from ``config_json``.

    A setting added after a run was saved takes its default value there, so
    older runs still resume. The code record (``PROVENANCE``) is not compared:
    a resume by other code appends that code to its ``resumed_by`` list. The
    data fingerprint (``DATA``) is compared when both records hold one; a run
    saved without one resumes with a note. A run marked diverged
    (``diverged``: its mark) resumes only with other ``RESTART_SETTINGS``;
    those are returned as ``{name: [saved, new]}`` (``record_restart`` writes
    them once the run has resumed), else ``{}``.
    """
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        changed = _restart_changes(saved, config_json) if diverged is not None else {}
        _check_same_settings(workdir, path, _with_train_values(saved, changed), config_json)
        _check_same_data(workdir, saved.get(DATA), config_json.get(DATA))
        if diverged is not None and not changed:
            raise TrainingError(
                f"{workdir} holds a run that {describe_divergence(diverged)}, and the same settings would diverge "
                "again; set grad_clip or a lower learning_rate to resume it from its last sane checkpoint, or give a "
                "new run directory for any other change."
            )
        return changed
    os.makedirs(workdir, exist_ok=True)
    write_record(path, config_json)
    return {}


def record_restart(workdir: str, step: int, changed: dict[str, list], diverged: dict[str, Any]) -> None:
    """Writes the new values of the ``changed`` restart settings into ``config.json`` with a ``restarts`` entry
    (the step resumed from, the changes, the mark), then removes the run's ``DIVERGED`` mark."""
    path = os.path.join(workdir, "config.json")
    with open(path) as f:
        saved = _with_train_values(json.load(f), changed)
    restart = {"step": step, "changed": changed, "diverged": diverged}
    write_record(path, saved | {RESTARTS: [*saved.get(RESTARTS, []), restart]})
    os.remove(os.path.join(workdir, DIVERGED))


def _restart_changes(saved: dict[str, Any], config_json: dict[str, Any]) -> dict[str, list]:
    """The ``RESTART_SETTINGS`` whose value in ``config_json`` differs from the saved one: name -> [saved, new]."""
    if "train" not in saved or "train" not in config_json:
        return {}
    try:
        old = TrainConfig.from_json(saved["train"]).to_json()
    except (TypeError, KeyError):
        return {}  # _check_same_settings says that the record is unreadable.
    new = config_json["train"]
    return {name: [old[name], new[name]] for name in RESTART_SETTINGS if old[name] != new[name]}


def _with_train_values(record: dict[str, Any], changed: dict[str, list]) -> dict[str, Any]:
    """``record`` with each ``changed`` train setting at its new value."""
    if not changed:
        return record
    return record | {"train": record["train"] | {name: new for name, (_, new) in changed.items()}}


DIVERGED = "DIVERGED"  # A diverged run's mark: JSON (step, epoch, cause, last sane step); an empty one from a grid.


def mark_diverged(workdir: str, record: dict[str, Any]) -> None:
    """Marks ``workdir`` as diverged: ``record`` (step, epoch, cause, last sane step) as the ``DIVERGED`` file."""
    _write_atomically(os.path.join(workdir, DIVERGED), json_text(record, indent=1, sort_keys=True) + "\n")


def diverged(workdir: str) -> dict[str, Any] | None:
    """``workdir``'s ``DIVERGED`` mark: the run's record, ``{}`` for an empty (or unreadable) mark such as a grid
    writes, None when unmarked or when ``config.json`` records a restart after it."""
    path = os.path.join(workdir, DIVERGED)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read()
    try:
        mark = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        mark = {}
    mark = mark if isinstance(mark, dict) else {}
    return None if mark and mark in [r.get("diverged") for r in _restarts(workdir)] else mark


def describe_divergence(mark: dict[str, Any]) -> str:
    """A ``DIVERGED`` mark as words: "diverged at step 8 (epoch 2): <cause>", or "diverged" for an empty mark."""
    if "step" not in mark:
        return "diverged"
    return f"diverged at step {mark['step']} (epoch {mark['epoch']}): {mark['cause']}"


def _restarts(workdir: str) -> list[dict[str, Any]]:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f).get(RESTARTS, [])


def write_record(path: str, record: dict[str, Any]) -> None:
    """Writes ``record`` to ``path`` atomically as indented JSON with each list of plain values on one line, so
    that a saved label subset reads as one line, not one line per index."""
    _write_atomically(path, _indented_json(record) + "\n")


def _write_atomically(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file, so that a kill leaves the old file or the new one."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def json_text(value: Any, **options) -> str:
    """``json.dumps(value, **options)`` as strict JSON: a non-finite float (a diverged run's NaN loss, a report's
    missing number) is written as ``null``, which ``read_metrics`` reads back as NaN."""
    return json.dumps(_null_for_non_finite(value), allow_nan=False, **options)


def _null_for_non_finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _null_for_non_finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_null_for_non_finite(item) for item in value]
    return value


def _indented_json(value: Any, level: int = 0) -> str:
    """``json.dumps(value, indent=2, sort_keys=True)`` at nesting ``level``, except that a list holding no list or
    object stays on one line."""
    pad, end = " " * (2 * level + 2), "\n" + " " * (2 * level)
    if isinstance(value, dict) and value:
        items = [f"{pad}{_json_key(key)}: {_indented_json(item, level + 1)}" for key, item in sorted(value.items())]
        return "{\n" + ",\n".join(items) + end + "}"
    if isinstance(value, (list, tuple)) and any(isinstance(item, (dict, list, tuple)) for item in value):
        return "[\n" + ",\n".join(pad + _indented_json(item, level + 1) for item in value) + end + "]"
    return json_text(value)


def _json_key(key: Any) -> str:
    """An object key as ``json.dumps`` writes it: a string, quoted; a number, bool or None as its JSON text, quoted."""
    return json.dumps(key if isinstance(key, str) else json.dumps(key))


def _check_same_settings(workdir: str, path: str, saved: dict[str, Any], config_json: dict[str, Any]) -> None:
    """Stops unless the saved record equals ``config_json`` once defaults are filled in (the train settings', and
    the model factory's arguments') and the code record and the data fingerprint are set aside (tuples compared as
    lists); the refusal names the first differing fields."""
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
        record.pop(RESTARTS, None)
    saved = _with_model_record(saved, wanted.get("model"))
    for record in (saved, wanted):  # An argument the factory took later reads as its default.
        if "model" in record:
            record["model"] = models.with_default_arguments(models.ModelConfig.from_json(record["model"])).to_json()
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


def record_resume(workdir: str, step: int, code: dict[str, Any]) -> None:
    """Appends a resume (the step it resumed from, the ``code`` resuming it, the UTC time) to ``config.json``'s
    code record, so that a run's record says where it was interrupted and what code finished it."""
    path = os.path.join(workdir, "config.json")
    with open(path) as f:
        saved = json.load(f)
    record = saved.setdefault(PROVENANCE, {})
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    record[RESUMES] = [*record.get(RESUMES, []), {"step": step, **code, "time": when}]
    write_record(path, saved)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The metric lines of ``workdir`` (a ``null``, written for a non-finite value, read as NaN), skipping a last
    line cut short by a kill."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    complete = []
    for i, line in enumerate(lines):
        try:
            complete.append({name: math.nan if value is None else value for name, value in json.loads(line).items()})
        except json.JSONDecodeError:
            if i != len(lines) - 1:  # Only a run killed mid-write leaves a broken (last) line.
                raise
    return complete


def truncate_metrics(workdir: str, last_step: int) -> list[dict[str, Any]]:
    """Drops metric lines written after the checkpoint at ``last_step``; returns the rest."""
    kept = [m for m in read_metrics(workdir) if m["step"] <= last_step]
    _write_atomically(os.path.join(workdir, "metrics.jsonl"), "".join(json_text(m) + "\n" for m in kept))
    return kept


def append_metrics(workdir: str, line: dict[str, Any]) -> None:
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json_text(line) + "\n")
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


def checkpoint_manager(workdir: str, steps_per_epoch: int | None = None) -> ocp.CheckpointManager:
    """Keeps the two latest checkpoints, always the one of step 0 (initial weights) and, given
    ``steps_per_epoch``, the latest at an epoch's end (where a diverged run restarts, saves within the epoch
    that blew up being suspect)."""
    policies = [ocp.checkpoint_managers.LatestN(2), ocp.checkpoint_managers.CustomSteps([0])]
    if steps_per_epoch:
        policies.append(ocp.checkpoint_managers.EveryNSteps(steps_per_epoch, max_to_keep=1))
    policy = ocp.checkpoint_managers.AnyPreservationPolicy(policies)
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options)


CHECKS = "checkpoints.json"  # each checkpoint's checksum and the run's early level, outside the checkpoints' folder


def read_checks(workdir: str) -> tuple[guard.Level | None, dict[int, dict[str, str]]]:
    """The run's early level and each checkpoint's checksum (``guard.digest``) by step, as ``checkpoints.json``
    holds them (none for a run saved before checksums were recorded)."""
    path = os.path.join(workdir, CHECKS)
    if not os.path.exists(path):
        return None, {}
    with open(path) as f:
        record = json.load(f)
    level = guard.Level(**record["level"]) if record["level"] else None
    return level, {int(step): digest for step, digest in record["steps"].items()}


def record_checkpoint(
    workdir: str, step: int, digest: dict[str, str], level: guard.Level | None, kept: list[int]
) -> None:
    """Adds the checksum of the checkpoint about to be saved at ``step`` to ``checkpoints.json`` (with ``level``,
    once known), dropping those of checkpoints no longer ``kept``. Written before the save, so every checkpoint
    on disk has its checksum."""
    old_level, digests = read_checks(workdir)
    digests = {saved: value for saved, value in digests.items() if saved in kept} | {step: digest}
    level = level or old_level
    record = {"level": level and dataclasses.asdict(level), "steps": {str(k): v for k, v in sorted(digests.items())}}
    _write_atomically(os.path.join(workdir, CHECKS), json_text(record, indent=1) + "\n")


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
        """The params saved at ``step`` (None: the latest intact checkpoint), as ``checkpoint`` reads them."""
        return self.checkpoint(step)[1]

    def checkpoint(self, step: int | None = None) -> tuple[int, Any]:
        """The step and params of the checkpoint of ``step`` (None: the latest intact one), shaped like
        ``model.init``'s, on this host's first device: a run saved over 8 CPU devices (or a GPU) opens on one.

        A checkpoint that does not restore, holds a non-finite value or
        differs from its checksum at save time is skipped for an older one
        (said in one line); an explicit ``step`` must be intact.
        """
        if not self.steps:
            raise InputError(f"{self.workdir} holds no checkpoints; train it first, or wait for its first save.")
        if step is not None and step not in self.steps:
            raise InputError(
                f"{self.workdir} has no checkpoint of step {step}; its saved steps are {list(self.steps)}."
            )
        _, digests = read_checks(self.workdir)
        found, saved, skipped = guard.newest_intact(
            self.steps if step is None else [step],
            lambda at: _restore(self.workdir, at),
            lambda at, state: guard.problem(state, digests.get(at)),
        )
        if found is None:
            fix = "train it again in a new run directory" if step is None else f"read another of {list(self.steps)}"
            raise InputError(
                f"{self.workdir} holds no intact checkpoint{'' if step is None else f' of step {step}'} "
                f"({'; '.join(skipped)}); {fix}."
            )
        if skipped:
            print(
                f"read {self.workdir} at step {found}, its newest intact checkpoint: {'; '.join(skipped)}", flush=True
            )
        try:
            return found, jax.tree_util.tree_map_with_path(
                lambda path, _: _pick(saved["params"], path), jax.eval_shape(self.model.init, jax.random.key(0))
            )
        except (KeyError, IndexError, TypeError) as error:
            raise InputError(
                f"{self.workdir}'s checkpoint of step {found} does not hold its model's params ({error}); "
                "the run was saved by other code."
            ) from None


def load_run(workdir: str, *, factory: str | None = None, diverged_ok: bool = False) -> Run:
    """The run in ``workdir``, read-only.

    Rebuilding a model imports its factory's module, which runs its code: a
    factory recorded in config.json is imported only when the caller names
    it (``factory``), except the built-in ones (``BUILT_IN_FACTORIES``). A
    run marked ``DIVERGED`` is refused unless ``diverged_ok``: its weights
    are those of its last sane checkpoint, not of a trained net.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise InputError(
            f"{workdir} is not a run directory (it has no config.json); give the work directory of a training run."
        )
    mark = diverged(workdir)
    if mark is not None and not diverged_ok:
        raise InputError(
            f"{workdir} holds a run that {describe_divergence(mark)}, not a trained net; train it on with grad_clip "
            "set or a lower learning_rate (in code, load_run(..., diverged_ok=True) reads its last sane checkpoint)."
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
