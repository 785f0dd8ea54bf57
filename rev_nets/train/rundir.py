"""The run directory: ``config.json``, ``metrics.jsonl``, orbax checkpoints, TensorBoard events, and reading a run back.

A restarted run checks its config against the saved one, resumes from the
latest checkpoint and drops metric lines (and TensorBoard events) written
after it. Analyses open a finished run read-only: its config, its net and
its first and last weights.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from rev_nets import layers, models, nets
from rev_nets.train.config import TrainConfig, TrainingError


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


def check_config(workdir: str, config_json: dict[str, Any]) -> None:
    """Writes ``config.json``, or stops if an existing one differs from ``config_json``.

    A setting added after a run was saved takes its default value there, so
    older runs still resume. The code record (``PROVENANCE``) is not compared:
    a resume by other code appends that code to its ``resumed_by`` list.
    """
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        _check_same_settings(workdir, path, saved, config_json)
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
    """Stops unless the saved record equals ``config_json`` once defaults are filled in and the code record is
    set aside (tuples compared as lists)."""
    saved, wanted = json.loads(json.dumps(saved)), json.loads(json.dumps(config_json))
    if "train" in saved:
        try:
            saved["train"] = TrainConfig.from_json(saved["train"]).to_json()
        except (TypeError, KeyError) as error:
            raise TrainingError(
                f"{path} holds settings this version cannot read ({error}); start a new --workdir."
            ) from None
        saved = json.loads(json.dumps(saved))
    saved.pop(PROVENANCE, None)
    wanted.pop(PROVENANCE, None)
    if saved != wanted:
        diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        raise TrainingError(
            f"{workdir} holds a run with different settings ({', '.join(diff)}); "
            "pass the same flags to resume it, or a new --workdir to start another run."
        )


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


def saved_states(workdir: str) -> dict[int, dict[str, Any]]:
    """The first and last checkpoints of a run directory, read-only, as trees on this host's first device.

    The target is built from the checkpoint's own metadata, so a run saved
    over 8 CPU devices (or a GPU) opens on one device.
    """
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    none_yet = TrainingError(f"{workdir} holds no checkpoints yet; train it first, or wait for its first save.")
    if not os.path.isdir(directory):
        raise none_yet
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # Orbax warns that a read-only manager will not save.
    try:
        manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(read_only=True),
            item_handlers=ocp.StandardCheckpointHandler(),
        )
    finally:
        logging.set_verbosity(verbosity)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def restore(step):
        on_device = lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device)
        target = jax.tree.map(on_device, manager.item_metadata(step))
        return manager.restore(step, args=ocp.args.StandardRestore(target))

    with manager:
        steps = manager.all_steps()
        if not steps:
            raise none_yet
        return {step: restore(step) for step in sorted({min(steps), max(steps)})}


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
    """How config.json names the model: a ``Net`` by its repr, an ``NnxModel`` by its factory and arguments."""
    if isinstance(model, nets.Net):
        return {"net": repr(model)}
    if isinstance(model, models.NnxModel):
        return {"model": model.describe()}
    raise TrainingError(f"{type(model).__name__} cannot be recorded in config.json; train a Net or an NnxModel.")


def model_from_config(config: dict[str, Any], factory: str | None = None) -> models.Model:
    """The run's model. A factory is imported only when ``factory`` (the reader's own ``--model``) names it."""
    if "net" in config:
        return net_from_repr(config["net"])
    recorded = config["model"]["factory"]
    if factory != recorded:
        raise TrainingError(
            f"this run trained the model {recorded}; pass --model={recorded} to import it and read the run."
        )
    return models.nnx_model(factory, **config["model"]["arguments"])


def read_run_config(run: str) -> dict:
    """The run's ``config.json``, or a one-sentence error naming what is missing."""
    path = os.path.join(run, "config.json")
    if not os.path.exists(path):
        raise TrainingError(
            f"{run} has no config.json; pass --run=<a directory written by experiments.mnist or experiments.cifar10>."
        )
    with open(path) as f:
        return json.load(f)


def saved_params(workdir: str) -> dict[int, nets.Params]:
    """Params of the first (initial weights) and last (trained) checkpoints, opened read-only."""
    return {step: state["params"] for step, state in saved_states(workdir).items()}
