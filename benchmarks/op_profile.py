"""Where a train step's time goes, op by op: XLA's CPU thunks, timed by ``jax.profiler``, summed by name.

    python -m benchmarks.op_profile                                # airbench, backprop, batch 512, 1 device
    python -m benchmarks.op_profile --cpu_split=8 --arm=shadow --source_layer=3   # SHADOW on the 8-device split
    python -m benchmarks.op_profile --net=cnn --batch=128 --top_instructions=10

Runs ``--profiled_steps`` of the real jitted train step (``benchmarks.
throughput``'s, on made data, on the CPU, after one warm-up step) inside
``jax.profiler.trace``. XLA's CPU runtime records each thunk it runs (a
fusion, a convolution, a dot, a copy: the compiled step's instructions that
do work) with that instruction's name, so summing the trace's durations by
name says which instructions take the time. Control flow (``while``,
``conditional``, ``call``) is left out: its thunks contain their bodies'. Each is printed with its
result shape, its ``op_name`` from the compiled HLO (the JAX primitive, and
whether it is in the forward, ``jvp``, or in a transposed pass,
``transpose(jvp)``: the backward pass and the generator) and the source
line that made it (the module text's stack frames). XLA's own rewrites
(on the CPU split, the weight-gradient convolutions) carry no op_name;
their opcode (a fusion's root) and shape still say what they are.
The split's devices run their thunks on threads of their own at once (more
threads than cores on a small CPU), so the summed time can exceed the wall
time several times over: compare shares, not sums, across device counts.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import re
import tempfile
import time

import jax
from absl import app, flags

from benchmarks import throughput

_NET = flags.DEFINE_string("net", "airbench", "A net of benchmarks.throughput.benchmark_models().")
_BATCH = flags.DEFINE_integer("batch", 512, "Global batch size.")
_CPU_SPLIT = flags.DEFINE_integer("cpu_split", 1, "CPU devices the batch is split over.")
_PROFILED_STEPS = flags.DEFINE_integer("profiled_steps", 3, "Train steps inside the trace.")
_ARM = flags.DEFINE_enum("arm", "backprop", ["backprop", "shadow"], "Which step: SHADOW's from --source_layer.")
_TOP = flags.DEFINE_integer("top_instructions", 20, "Instructions (and kinds) listed, the slowest first.")

_INSTRUCTION = re.compile(r"^\s*(ROOT )?%?([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)$", re.MULTILINE)
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{$", re.MULTILINE)
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_STACK_FRAME = re.compile(r"stack_frame_id=(\d+)")
_FIELDS = re.compile(r"(\w+)=(\d+)")
_MODULE = re.compile(r"^HloModule ([\w.\-]+)")
_CONTROL_FLOW = ("while", "conditional", "call")  # Their thunks' time includes their bodies' thunks.


@dataclasses.dataclass(frozen=True)
class Instruction:
    """An HLO instruction of the compiled step: its result shape, its opcode (``fusion: <its root's opcode>``
    for a fusion), and the JAX op and source line it came from (a fusion without its own: its body's first
    labelled instruction's; empty where XLA rewrote it without them)."""

    shape: str
    opcode: str
    op_name: str
    source: str


def _numbered_rows(hlo_text: str, title: str) -> dict[str, str]:
    """The ``<id> <value>`` rows of one of the module text's tables (``FileNames``, ``StackFrames``...)."""
    rows = hlo_text.partition(f"\n{title}\n")[2].partition("\n\n")[0]
    return dict(row.split(" ", 1) for row in rows.splitlines())


def _sources(hlo_text: str) -> dict[str, str]:
    """``file:line (function)`` of each stack frame id: the innermost frame JAX kept (user code, not JAX's), the
    file as its package path (an installed one's) or its last two parts."""
    files, functions = _numbered_rows(hlo_text, "FileNames"), _numbered_rows(hlo_text, "FunctionNames")
    locations = {k: dict(_FIELDS.findall(v)) for k, v in _numbered_rows(hlo_text, "FileLocations").items()}
    sources = {}
    for frame, row in _numbered_rows(hlo_text, "StackFrames").items():
        at = locations[dict(_FIELDS.findall(row))["file_location_id"]]
        path = files[at["file_name_id"]].strip('"')
        short = path.split("site-packages/")[1] if "site-packages/" in path else "/".join(path.split("/")[-2:])
        function = functions[at["function_name_id"]].strip('"')
        sources[frame] = f"{short}:{at['line']} ({function})"
    return sources


def instructions(hlo_text: str) -> dict[str, Instruction]:
    """Every instruction of a compiled module's text by name (fused computations' bodies included)."""
    sources, roots, labelled, table, called = _sources(hlo_text), {}, {}, {}, {}
    computations = [(m.start(), m[1]) for m in _COMPUTATION.finditer(hlo_text)]
    for m in _INSTRUCTION.finditer(hlo_text):
        name, shape, opcode, rest = m[2], re.sub(r"\{[^}]*\}|/\*index=\d+\*/", "", m[3]), m[4], m[5]
        computation = max((c for c in computations if c[0] < m.start()), default=(0, ""))[1]
        op_name, frame, calls = _OP_NAME.search(rest), _STACK_FRAME.search(rest), _CALLS.search(rest)
        source = sources.get(frame[1], "") if frame else ""
        table[name] = Instruction(shape, opcode, op_name[1] if op_name else "", source)
        if m[1]:
            roots[computation] = opcode
        if op_name:
            labelled.setdefault(computation, table[name])
        if opcode == "fusion" and calls:
            called[name] = calls[1]
    for name, body in called.items():
        i = table[name]
        label = i if i.op_name else labelled.get(body, i)
        table[name] = Instruction(i.shape, f"fusion: {roots.get(body, '?')}", label.op_name, label.source)
    return table


def thunk_seconds(trace_dir: str, module: str, table: dict[str, Instruction]) -> collections.Counter:
    """Seconds spent in each instruction of ``table`` (compiled module ``module``), summed over the perfetto
    trace written under ``trace_dir``; control flow left out (its time is its body's)."""
    (path,) = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    seconds = collections.Counter()
    for event in events:
        args = event.get("args", {})
        op = args.get("hlo_op")
        ours = event.get("ph") == "X" and args.get("hlo_module") == module and op in table
        if ours and table[op].opcode not in _CONTROL_FLOW:
            seconds[op] += event["dur"] / 1e6
    if not seconds:
        raise RuntimeError(f"the trace under {trace_dir} has no thunk of module {module}: not run on XLA's CPU?")
    return seconds


def phase(op_name: str) -> str:
    """Which pass an op belongs to, read from its ``op_name``."""
    if not op_name:
        return "unlabelled (rewritten by XLA)"
    if "transpose(" in op_name:
        return "transposed (backward, generator)"
    return "forward" if "jvp(" in op_name else "rest (optimizer, metrics)"


def kind(name: str) -> str:
    """An instruction's kind: its name without XLA's numeric suffix (``convolution.12`` -> ``convolution``)."""
    return re.sub(r"(\.\d+)+$", "", name)


def profile(step, arguments: tuple, steps: int) -> tuple[collections.Counter, dict[str, Instruction], float]:
    """Seconds per instruction over ``steps`` traced train steps, the compiled step's instructions, and the
    traced steps' wall time."""
    text = step.lower(*arguments).compile().as_text()
    table, module = instructions(text), _MODULE.match(text)[1]
    run = throughput.step_runner(step, arguments)
    run(1)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            start = time.perf_counter()
            run(steps)
            wall = time.perf_counter() - start
        return thunk_seconds(trace_dir, module, table), table, wall


def report(seconds: collections.Counter, table: dict[str, Instruction], wall: float, steps: int, top: int) -> str:
    """Totals by phase and by kind, then the ``top`` slowest instructions, each in ms per step and share."""
    total = sum(seconds.values())
    line = lambda label, s: f"| {label} | {1e3 * s / steps:.1f} | {100 * s / total:.1f}% |"
    by_phase, by_kind = collections.Counter(), collections.Counter()
    for name, s in seconds.items():
        by_phase[phase(table[name].op_name)] += s
        by_kind[kind(name)] += s
    out = [
        f"wall {1e3 * wall / steps:.0f} ms, summed thunk time {1e3 * total / steps:.0f} ms per step\n",
        "| phase | ms/step | share |",
        "|---|---|---|",
    ]
    out += [line(label, s) for label, s in by_phase.most_common()]
    out += ["", "| kind | ms/step | share |", "|---|---|---|"]
    out += [line(label, s) for label, s in by_kind.most_common(top)]
    out += ["", "| instruction | ms/step | share | shape | opcode | op_name | source |", "|---" * 7 + "|"]
    for name, s in seconds.most_common(top):
        i = table[name]
        op_name = i.op_name if len(i.op_name) <= 80 else "..." + i.op_name[-80:].partition("/")[2]
        out.append(f"{line(name, s)} {i.shape[:48]} | {i.opcode} | {op_name} | {i.source} |")
    return "\n".join(out)


def main(argv) -> None:
    del argv
    layer = throughput._SOURCE_LAYER.value if _ARM.value == "shadow" else 0
    if _ARM.value == "shadow" and layer < 1:
        raise app.UsageError(f"--arm=shadow needs --source_layer of 1 or more (got {layer}); 0 is backprop.")
    jax.config.update("jax_platforms", "cpu")  # XLA's CPU thunks are what the trace is read for.
    jax.config.update("jax_num_cpu_devices", _CPU_SPLIT.value)
    config = throughput.train_config(_NET.value, _BATCH.value, layer)
    model = throughput.benchmark_models()[_NET.value]
    seconds, table, wall = profile(*throughput.made_step(model, config, _BATCH.value), _PROFILED_STEPS.value)
    arm = f"SHADOW h{layer}" if layer else "backprop"
    print(f"{_NET.value}, {arm}, batch {_BATCH.value}, {jax.device_count()} device(s), {_PROFILED_STEPS.value} steps")
    print(report(seconds, table, wall, _PROFILED_STEPS.value, _TOP.value))


if __name__ == "__main__":
    app.run(main)
