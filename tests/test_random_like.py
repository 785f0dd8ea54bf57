"""The random-like weights entry point: weight files in both layouts, run directories, the command end to end."""

import json
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from entry_points import run_entry_point

from rev_nets import models, nets, spectra, train
from rev_nets.analysis import random_like
from rev_nets.errors import InputError
from rev_nets.train import internals
from rev_nets.weights import read_weights

ROOT = Path(__file__).resolve().parents[1]
ZOO = "rev_nets.nnx_zoo:residual_cnn"

# torchvision's AlexNet state dict: (out, in, kh, kw) convs, (out, in) dense layers.
ALEXNET = {
    "features.0.weight": (64, 3, 11, 11),
    "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5),
    "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3),
    "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3),
    "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3),
    "features.10.bias": (256,),
    "classifier.1.weight": (4096, 9216),
    "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096),
    "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096),
    "classifier.6.bias": (1000,),
}


def _run(*flags, timeout=300):
    return run_entry_point("random_like", *flags, timeout=timeout)


def _tiny_run(workdir: Path) -> nets.Net:
    """A run directory as training leaves it: config.json, step-0 checkpoint and a later one with moved weights."""
    net = nets.mnist_mlp(width=16)
    workdir.mkdir(parents=True)
    config = train.TrainConfig()
    (workdir / "config.json").write_text(json.dumps({"model": net.record.to_json(), "train": config.to_json()}))
    state = internals.create_state(net, config, steps_per_epoch=10)
    manager = internals.checkpoint_manager(str(workdir))
    manager.save(0, args=ocp.args.StandardSave(state))
    moved = state.replace(step=7, params=jax.tree.map(lambda p: p + 1.0, state.params))
    manager.save(7, args=ocp.args.StandardSave(moved))
    manager.wait_until_finished()
    return net


def test_alexnet_state_dict_is_read_in_this_projects_layout(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    state = {name: torch.randn(shape) for name, shape in ALEXNET.items()}
    path = tmp_path / "alexnet.pth"
    torch.save(state, path)
    weights = read_weights(str(path))
    assert sorted(weights) == sorted(k for k, s in ALEXNET.items() if len(s) > 1)  # biases left out
    conv1 = weights["features.0.weight"]
    assert conv1.shape == (11, 11, 3, 64)
    t = state["features.0.weight"].numpy()
    for o, c, i, j in [(0, 0, 0, 0), (63, 2, 10, 10), (5, 1, 3, 7)]:
        assert conv1[i, j, c, o] == t[o, c, i, j]
    assert spectra.as_matrix(conv1).shape == (11 * 11 * 3, 64)
    np.testing.assert_array_equal(weights["classifier.1.weight"], state["classifier.1.weight"].numpy().T)
    assert weights["classifier.6.weight"].shape == (4096, 1000)


def test_nested_torch_checkpoint_and_layout_override(tmp_path):
    torch = pytest.importorskip("torch")
    dense = torch.randn(5, 7)
    torch.save({"model_state": {"fc.weight": dense}, "step": 3}, tmp_path / "ckpt.pt")
    assert read_weights(str(tmp_path / "ckpt.pt"))["model_state.fc.weight"].shape == (7, 5)
    kept = read_weights(str(tmp_path / "ckpt.pt"), layout="jax")["model_state.fc.weight"]
    np.testing.assert_array_equal(kept, dense.numpy())


def test_npz_keeps_this_projects_layout_and_drops_vectors(tmp_path):
    w = np.random.default_rng(0).standard_normal((3, 3, 4, 8)).astype(np.float32)
    np.savez(tmp_path / "w.npz", conv=w, bias=np.zeros(8))
    weights = read_weights(str(tmp_path / "w.npz"))
    assert list(weights) == ["conv"]
    np.testing.assert_array_equal(weights["conv"], w)


def test_safetensors_file_is_read_in_torch_layout(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    dense = np.random.default_rng(0).standard_normal((6, 9)).astype(np.float32)
    safetensors_numpy.save_file(
        {"fc.weight": dense, "fc.bias": np.zeros(6, np.float32)}, str(tmp_path / "w.safetensors")
    )
    weights = read_weights(str(tmp_path / "w.safetensors"))
    np.testing.assert_array_equal(weights["fc.weight"], dense.T)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("missing.npz", None, "does not exist"),
        ("weights.h5", b"x", "not a supported weight file"),
        ("broken.npz", b"not a zip", "could not read"),
    ],
)
def test_unreadable_files_stop_with_one_sentence(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_weights(str(path))


def test_run_directory_gives_initial_and_last_weights(tmp_path):
    net = _tiny_run(tmp_path / "run")
    first, last = random_like.run_snapshots(str(tmp_path / "run"))
    assert (first.label, last.label) == ("step 0", "step 7")
    assert list(first.weights) == ["h1", "h2", "h3", "head"]
    assert first.weights["h1"].shape == (784, 16) and first.weights["head"].shape == (16, net.num_classes)
    np.testing.assert_allclose(last.weights["h2"], first.weights["h2"] + 1.0, rtol=1e-6)


def test_an_nnx_models_weights_are_named_by_their_paths():
    params = models.nnx_model(ZOO, channels=[4, 4, 4]).init(jax.random.key(0))
    weights = random_like.run_weights(params)
    assert "stems/0/kernel" in weights and "head/kernel" in weights and weights["head/kernel"].shape == (64, 10)
    assert all(w.ndim >= 2 for w in weights.values())


def test_command_end_to_end(tmp_path):
    _tiny_run(tmp_path / "run")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ext.npz", dense=rng.standard_t(3, (40, 30)).astype(np.float32), small=np.ones((5, 2)))
    out = tmp_path / "out"
    result = _run(f"--run={tmp_path / 'run'}", f"--weights={tmp_path / 'ext.npz'}", f"--workdir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = (out / "random_like.md").read_text()
    assert report in result.stdout  # the entry point prints the table it writes
    numbers = json.loads((out / "random_like.json").read_text())
    dense = next(r for r in numbers["rows"] if (r["net"], r["layer"]) == ("ext", "dense"))
    assert dense["matrix"] == [40, 30] and not dense["random_like"] and dense["failed"]
    row = next(line for line in report.splitlines() if line.startswith("| ext | dense |"))
    assert f"| {dense['stats']['mean']:.2g} | {dense['stats']['std']:.3g} |" in row  # the JSON's numbers, shown
    assert f"| {dense['outliers']} | no |" in row
    assert numbers["skipped"] == ["ext/small (5, 2)"]
    for layer in (
        "| run | h1 | step 0 | 784x16 |",
        "| run | head | step 7 | 16x10 |",
        "| ext | dense | ext.npz | 40x30 |",
    ):
        assert layer in report, report
    assert "ext/dense ext.npz (40x30): NOT random-like" in report
    assert "Skipped (a side below 3): ext/small (5, 2)" in report
    for name in ("run.png", "ext.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    assert len(list((out / "calibration").glob("*.npz"))) == 4  # 784x16, 16x16, 16x10, 40x30


def test_the_report_is_named_random_like_and_its_numbers_hold_each_layers_verdict(tmp_path):
    np.savez(tmp_path / "w.npz", a=np.random.default_rng(1).standard_normal((20, 10)).astype(np.float32))
    report = random_like.report([], [str(tmp_path / "w.npz")], str(tmp_path / "out"))
    assert report.name == "random_like"
    [row] = report.numbers["rows"]
    assert (row["net"], row["layer"], row["snapshot"], row["matrix"]) == ("w", "a", "w.npz", [20, 10])
    assert row["random_like"] == (not row["failed"]) and row["calibration_count"] == 50
    assert set(row["stats"]) == set(row["limits"]) == set(spectra.Stats._fields)
    verdict = "random-like" if row["random_like"] else "NOT random-like"
    assert f"w/a w.npz (20x10): {verdict}:" in report.markdown
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["calibration", "figures"]  # tables: the writer's


@pytest.mark.parametrize(
    "flags,message",
    [
        ([], "nothing to analyse"),
        (["--weights=/nonexistent/w.pth"], "does not exist"),
        (["--run=/nonexistent/run"], "--run /nonexistent/run does not exist or is not a folder"),
    ],
)
def test_bad_input_stops_with_one_sentence(flags, message, tmp_path):
    result = _run(*flags, f"--workdir={tmp_path}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
