"""Round trips through the generator: checkpoint loading, metrics, the Gaussian control, the entry point."""

import json
from pathlib import Path

import chex
import conftest_data
import jax
import jax.numpy as jnp
import numpy as np
import onnx_graphs
import pytest
from entry_points import run_entry_point
from flax import nnx

from rev_nets import data, models, nets, train
from rev_nets import layers as L
from rev_nets.analysis import reversibility as R
from rev_nets.errors import InputError
from rev_nets.train import rundir

ROOT = Path(__file__).resolve().parents[1]
CS = jnp.asarray(R.PREDICTION_CS, jnp.float32)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 784-16x3-10 MLP trained 2 epochs on made MNIST-format data, as experiments.mnist writes it."""
    root = tmp_path_factory.mktemp("reversibility")
    data_dir = root / "data"
    conftest_data.write_idx_dataset(data_dir / "mnist", n_train=120, n_test=30, seed=0)
    full_train, test = data.load("mnist", "train", str(data_dir)), data.load("mnist", "test", str(data_dir))
    train_part, _ = data.split_validation(full_train, 20, seed=0)
    mean, std = data.channel_stats(train_part.images)
    net = nets.mnist_mlp(width=16)
    config = train.TrainConfig(epochs=2, batch_size=20, eval_batch_size=30)
    workdir = root / "run"
    train.fit(
        net,
        config,
        data.to_device(train_part, mean, std),
        {"test": data.to_device(test, mean, std)},
        str(workdir),
        extra_config={"dataset": "mnist", "num_validation": 20},
        figures=False,
    )
    return data_dir, workdir, net, config


@pytest.mark.parametrize(
    "net",
    [
        nets.mnist_mlp(width=16),
        nets.cifar_cnn((4, 8, 8)),
        nets.cifar_cnn((4, 8), pool="avg", input_shape=(16, 16, 3)),
        nets.Net((L.Conv(4, strides=(2, 2), padding=((1, 1), (0, 0))), L.Dense(8)), 10, (8, 8, 1)),
    ],
    ids=["mlp", "cnn_max", "cnn_avg", "conv_stride_padding"],
)
def test_net_from_repr_rebuilds_the_net(net):
    assert rundir.net_from_repr(repr(net)) == net


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('true')", "Net(layers=(Dense(features=len('x')),), num_classes=2, input_shape=(3,))"],
)
def test_net_from_repr_refuses_anything_but_net_descriptions(text):
    with pytest.raises(train.TrainingError, match="not a net description"):
        rundir.net_from_repr(text)


def test_load_run_gives_the_net_and_its_initial_and_trained_params(tiny_run):
    _, workdir, net, config = tiny_run
    run = train.load_run(str(workdir))
    assert run.steps == (0, 5, 10) and run.model == net and run.config["train"] == config  # 2 epochs of 5 steps
    jax.tree.map(np.testing.assert_array_equal, run.params(0), nets.init(jax.random.key(config.seed), net))
    assert not np.allclose(run.params(10)["hidden"][0]["w"], run.params(0)["hidden"][0]["w"])


def test_layer_metrics_of_exact_and_scaled_round_trips():
    h = jnp.abs(jax.random.normal(jax.random.key(0), (5, 40)))
    exact = R.layer_metrics(h, h, h, 100, True, CS)
    np.testing.assert_allclose(exact["rel_error"], 0.0, atol=1e-6)
    np.testing.assert_allclose(exact["cosine"], 1.0, rtol=1e-5)
    doubled = R.layer_metrics(h, 2 * h, h, 100, True, CS)
    np.testing.assert_allclose(doubled["rel_error"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(doubled["norm_ratio"], 2.0, rtol=1e-5)
    np.testing.assert_allclose(doubled["density"], 1.0)


def test_round_trips_of_a_conv_layer_with_max_pooling():
    """Conv + max pooling (the switches path): finite statistics; with one layer the round trip is the one step."""
    net = nets.Net((L.Conv(4, pool="max"),), 10, (8, 8, 3))
    params = nets.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (3, *net.input_shape))
    (metrics,) = jax.jit(R.net_round_trips, static_argnums=0)(net, params, x, CS)
    chex.assert_tree_all_finite(metrics)
    chex.assert_shape(metrics["predicted"], (3, len(R.PREDICTION_CS)))
    np.testing.assert_allclose(metrics["rel_error"], metrics["one_step_error"], rtol=1e-5)


def test_a_module_has_no_one_step_or_theory_and_says_nan_rather_than_a_number():
    """The theory needs a ``Net``'s layer fan-in: a module's rows are NaN there, not a prediction for fan-in 1."""
    model = models.build_model("rev_nets.nnx_zoo:airbench_relu", widths=[4, 8, 8])
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    params = model.prepare(model.init(jax.random.key(0)), x)
    per_layer = R.net_round_trips(model, params, x, CS)
    for metrics in per_layer:
        assert np.isnan(metrics["predicted"]).all() and np.isnan(metrics["one_step_error"]).all()
        assert np.isfinite(metrics["rel_error"]).all()
    for row in R.summarize("module", per_layer, np.asarray(CS)):
        assert all(np.isnan(row[key]) for key in ("predicted_no_bias", "predicted_best", "predicted_best_c"))


def _numpy_spectra(x):
    """Loop oracle: per image, mean |FFT|^2 per ring and total per band, each frequency placed by its own radius."""
    height, width = x.shape[1:3]
    power = (np.abs(np.fft.fft2(x.astype(np.float64), axes=(1, 2))) ** 2).mean(-1)
    rings = int(np.rint(np.hypot(0.5, 0.5) * max(height, width))) + 1
    ring_sum, ring_count = np.zeros((len(x), rings)), np.zeros(rings)
    bands = np.zeros((len(x), len(R.SPECTRUM_BANDS)))
    for u in range(height):
        for v in range(width):
            cycles = np.hypot(min(u, height - u) / height, min(v, width - v) / width)
            ring = int(np.rint(cycles * max(height, width)))
            ring_sum[:, ring] += power[:, u, v]
            ring_count[ring] += 1
            for b, (low, high) in enumerate(R.SPECTRUM_BANDS.values()):
                bands[:, b] += power[:, u, v] if low < cycles <= high else 0.0
    return ring_sum / ring_count, bands


def test_spectra_match_a_loop_oracle_on_non_square_images():
    x = np.random.default_rng(0).standard_normal((2, 6, 10, 3)).astype(np.float32)
    rings, bands = _numpy_spectra(x)
    np.testing.assert_allclose(R.radial_power(jnp.asarray(x)), rings, rtol=1e-4)
    np.testing.assert_allclose(R.band_power(jnp.asarray(x)), bands, rtol=1e-4)
    # The bands partition the frequencies: together they hold all the power (Parseval).
    np.testing.assert_allclose(bands.sum(1), 6 * 10 * (x.astype(np.float64) ** 2).sum((1, 2, 3)) / 3, rtol=1e-5)


def test_a_cosine_along_the_short_axis_lands_in_its_ring_and_band():
    height, width = 8, 16
    rows = np.arange(height)[:, None, None]
    cosine = np.broadcast_to(np.cos(2 * np.pi * 3 * rows / height), (1, height, width, 1)).astype(np.float32)
    spectrum = np.asarray(R.radial_power(jnp.asarray(cosine)))[0]
    total = (height * width) ** 2 / 2  # Two frequencies (+-3 cycles per image) with |FFT| = H W / 2 each.
    # 3 cycles over 8 pixels = 0.375 cycles per pixel: ring 6 on the 16-pixel scale, in the "high" band.
    ring_count = np.bincount(R.frequency_rings(height, width)[1])[6]
    assert np.flatnonzero(spectrum > 1e-3).tolist() == [6]
    np.testing.assert_allclose(spectrum[6] * ring_count, total, rtol=1e-5)
    bands = dict(zip(R.SPECTRUM_BANDS, np.asarray(R.band_power(jnp.asarray(cosine)))[0]))
    assert bands == pytest.approx({"mean colour": 0.0, "low": 0.0, "mid": 0.0, "high": total}, abs=1e-2)


def test_a_constant_image_is_all_mean_colour():
    bands = np.asarray(R.band_power(jnp.full((1, 8, 8, 3), 2.0)))[0]
    np.testing.assert_allclose(bands, [(64 * 2.0) ** 2, 0, 0, 0], atol=1e-3)


def test_shuffled_keeps_the_entries_and_loses_their_order():
    params = nets.init(jax.random.key(0), nets.mnist_mlp(width=16))
    mixed = R.shuffled(jax.random.key(1), params)
    chex.assert_trees_all_equal(R.shuffled(jax.random.key(1), params, "trained"), mixed)  # A Net's groups: all of it
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(mixed)):
        np.testing.assert_array_equal(np.sort(a, axis=None), np.sort(b, axis=None))
    assert not np.array_equal(params["hidden"][1]["w"], mixed["hidden"][1]["w"])


def test_a_batchnorm_nets_shuffle_moves_its_weights_and_keeps_its_data_fitted_state():
    """Statistics and the whitening filter are the data's: kept by the shuffle; the shuffled weights then get
    the statistics of the images they are measured on (a training forward's), not the trained ones'."""
    model = models.build_model("rev_nets.nnx_zoo:airbench_relu", widths=[4, 8, 8])
    x = jax.random.normal(jax.random.key(2), (6, *model.input_shape))
    params = model.prepare(model.init(jax.random.key(0)), x)
    groups = model.param_groups(params)
    assert set(jax.tree.leaves(groups)) == {"trained", "norm", "fixed"}
    mixed = R.shuffled(jax.random.key(1), params, groups)
    moved = []
    for label, a, b in zip(jax.tree.leaves(groups), jax.tree.leaves(params), jax.tree.leaves(mixed)):
        np.testing.assert_array_equal(np.sort(a, axis=None), np.sort(b, axis=None))
        if label == "fixed":
            np.testing.assert_array_equal(a, b)
        else:
            moved.append(not np.array_equal(a, b))
    assert sum(moved) >= 4, moved  # The convolutions' kernels and the head (BatchNorm shifts start at zero).
    own = R.with_batch_statistics(model, mixed, x)
    key = jax.random.key(5)
    chex.assert_trees_all_close(nnx.filter_state(own, nnx.BatchStat), model.forward(mixed, x, key=key).stats, rtol=1e-6)
    # Evaluation mode reads the statistics the params hold: now those of the batch a training forward uses.
    at_batch = model.module(mixed, key).features(x, 2)
    np.testing.assert_allclose(model.features(own, x, 2), at_batch, rtol=1e-4, atol=1e-5)
    assert not np.allclose(model.features(mixed, x, 2), at_batch, rtol=1e-2)
    net = nets.mnist_mlp(width=4)  # No BatchNorm: unchanged.
    plain = nets.init(jax.random.key(0), net)
    chex.assert_trees_all_equal(R.with_batch_statistics(net, plain, jnp.zeros((2, 28, 28, 1))), plain)


def test_gaussian_control_reproduces_paper_section_1():
    """n = 4000, m = 1000, k = 10, c = 2: the direct error is the paper's 0.029 within 15%, and round trips stay close.

    100 samples of one weight draw: the direct error's standard error is ~3%.
    """
    (layer,) = R.gaussian_round_trips(jax.random.key(0), (4000, 1000), 10, 2.0, 100, CS)
    assert float(layer["direct_error"].mean()) == pytest.approx(0.029, rel=0.15)
    assert float(layer["rel_error"].mean()) < 0.25
    assert float(layer["cosine"].mean()) > 0.95
    # The theory's prediction for the recovered h at the control's c is within 25% of the measured round trip.
    predicted = float(layer["predicted"][:, int(np.argmin(np.abs(np.asarray(CS) - 2.0)))].mean())
    assert predicted == pytest.approx(float(layer["rel_error"].mean()), rel=0.25)


def test_parse_control():
    assert R.parse_control("400,100:5:1.5") == ((400, 100), 5, 1.5)
    for bad in ("400,100:5", "400:5:2", "400,100:200:2", "a,b:1:2", "0,100:5:1", "400,100:5:nan"):
        with pytest.raises(InputError, match="^control net"):
            R.parse_control(bad)


def _run(*flags, timeout=240):
    return run_entry_point("reversibility", *flags, timeout=timeout)


def test_end_to_end_on_a_tiny_trained_run(tiny_run, tmp_path):
    data_dir, workdir, net, _ = tiny_run
    flags = ["--num_images=20", "--control=200,50:3:2", "--control_trials=8", f"--workdir={tmp_path}"]
    result = _run(f"--run={workdir}", f"--data_dir={data_dir}", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "reversibility.json").read_text())
    assert report["steps"]["init"] == 0 and report["steps"]["trained"] > 0
    rows = report["rows"]
    assert [r["net"].split(" (")[0] for r in rows] == ["init"] * 3 + ["trained"] * 3 + ["shuffled trained"] * 3 + [
        "gaussian 200-50 k=3 c=2"
    ]
    for row in rows:
        for key in ("rel_error", "cosine", "density", "predicted_no_bias", "predicted_best"):
            assert np.isfinite(row[key]), (key, row)
        assert 0.0 <= row["density"] <= 1.0
    for row in rows[: 3 * net.depth : net.depth]:  # Layer 1: the round trip is the one step.
        assert row["rel_error"] == pytest.approx(row["one_step_error"], rel=1e-5)
    markdown = (tmp_path / "reversibility.md").read_text()
    assert markdown in result.stdout  # the entry point prints the table it writes
    for row in (rows[0], rows[-1]):  # the JSON's numbers are the ones the table shows
        shown = f"| {row['net']} | {row['layer']} | {row['density']:.3f} | {row['nonzeros']:.0f} | "
        shown += f"{row['rel_error']:.3f} ± "
        assert shown in markdown, shown
    assert "| trained (step" in markdown
    for row in rows[: 3 * net.depth]:  # MNIST inputs are 28x28 images: each layer has its spectra.
        assert set(row["power_ratio"]) == set(R.SPECTRUM_BANDS) and len(row["spectrum_syn"]) == 21  # Rings 0..20.
        assert all(np.isfinite(v) and v > 0 for v in row["power_ratio"].values()), row["power_ratio"]
    assert "Power of `x_syn` over power of `x`" in (tmp_path / "reversibility.md").read_text()
    for figure in (
        "reversibility.png",
        "spectrum.png",
        "images_init.png",
        "images_trained.png",
        "images_shuffled_trained.png",
    ):
        assert (tmp_path / "figures" / figure).stat().st_size > 1000


def _onnx_mlp(params, path):
    """The run's MLP as an ONNX graph: Flatten of NCHW input, then MatMul + Add (+ Relu) per layer."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    nodes, arrays, h = [helper.make_node("Flatten", ["x"], ["h0"], axis=1)], {}, "h0"
    layers = [*params["hidden"], params["head"]]
    for i, layer in enumerate(layers):
        arrays |= {f"w{i}": np.asarray(layer["w"]), f"b{i}": np.asarray(layer["b"])}
        out = "y" if i == len(layers) - 1 else f"h{i + 1}"
        nodes += [helper.make_node("MatMul", [h, f"w{i}"], [f"m{i}"])]
        nodes += [helper.make_node("Add", [f"m{i}", f"b{i}"], [out if out == "y" else f"a{i}"])]
        if out != "y":
            nodes += [helper.make_node("Relu", [f"a{i}"], [out])]
        h = out
    onnx.save(onnx_graphs.model(nodes, arrays, [1, 1, 28, 28], [1, 10]), path)


def test_an_onnx_net_gives_the_numbers_of_the_same_net_in_memory(tiny_run, tmp_path):
    data_dir, workdir, net, _ = tiny_run
    params = train.load_run(str(workdir)).params()
    _onnx_mlp(params, tmp_path / "mlp.onnx")
    flags = ["--num_images=20", "--control=200,50:3:2", "--control_trials=8", f"--workdir={tmp_path / 'out'}"]
    result = _run(f"--weights={tmp_path / 'mlp.onnx'}", "--dataset=mnist", f"--data_dir={data_dir}", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "out" / "reversibility.json").read_text())["rows"]
    assert [r["net"] for r in rows[:: net.depth]][:2] == ["mlp", "shuffled mlp"]
    x, _ = R.load_test_images("mnist", 0, str(data_dir), 20)
    cs = jnp.asarray(R.PREDICTION_CS, jnp.float32)
    expected = R.summarize("mlp", R.net_round_trips(net, params, x, cs), np.asarray(cs))
    for got, want in zip(rows[: net.depth], expected):
        for key in ("rel_error", "cosine", "one_step_error", "density"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    refused = _run(f"--weights={tmp_path / 'mlp.onnx'}", f"--data_dir={data_dir}", *flags)
    assert refused.returncode == 2 and "needs the dataset whose test images it reads" in refused.stderr


def test_the_control_alone_is_the_report_reversibility_and_draws_its_figure(tmp_path):
    report = R.analyse(None, str(tmp_path), controls=["200,50:3:2"], control_trials=8)
    assert report.name == "reversibility" and report.markdown == R.markdown(report.numbers)
    assert report.numbers["run"] is None and report.numbers["num_images"] == 0
    assert [(r["net"], r["layer"]) for r in report.numbers["rows"]] == [("gaussian 200-50 k=3 c=2", 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]  # numbers and tables are the writer's
    assert (tmp_path / "figures" / "reversibility.png").stat().st_size > 1000


def test_a_directory_without_a_run_stops_with_one_sentence(tmp_path):
    result = _run(f"--run={tmp_path}", f"--workdir={tmp_path / 'out'}")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "has no config.json" in result.stderr, result.stderr
