"""The entry points, run as a user runs them: subprocesses on small made data."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import conftest_data
import jax
import pytest
from entry_points import run_entry_point

from rev_nets import train
from rev_nets.errors import EXIT_STOPPED, SettingError

ROOT = Path(__file__).resolve().parents[1]
SMALL_NET = {"mnist": ["--width=16"], "cifar10": ["--channels=4,4,4"], "cifar100": ["--channels=4,4,4"]}
RECORD = {  # How config.json names each entry point's net with SMALL_NET: its factory and arguments.
    "mnist": {"factory": "rev_nets.nets:mnist_mlp", "arguments": {"depth": 3, "width": 16}},
    "cifar10": {"factory": "rev_nets.nets:cifar_cnn", "arguments": {"channels": [4, 4, 4], "num_classes": 10}},
    "cifar100": {"factory": "rev_nets.nets:cifar_cnn", "arguments": {"channels": [4, 4, 4], "num_classes": 100}},
}


_run = run_entry_point


def _learning_lines(workdir):
    lines = [json.loads(x) for x in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if not k.endswith("_s") and k != "images_per_s"} for m in lines]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    conftest_data.make_data_dir(root)
    return root


@pytest.mark.parametrize("module", ["mnist", "cifar10", "cifar100"])
def test_one_epoch_end_to_end(module, data_dir, tmp_path):
    flags = [f"--data_dir={data_dir}", f"--workdir={tmp_path}", "--epochs=1", "--batch_size=8", "--num_validation=10"]
    result = _run(module, *flags, *SMALL_NET[module])
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = _learning_lines(tmp_path)
    for key in ("validation_error", "validation_synthetic_error", "test_error", "test_synthetic_error", "train_loss"):
        assert 0.0 <= line[key] < 10.0, (key, line)
    assert line["devices"] == (1 if module == "mnist" else 8)  # CIFAR CNNs split the CPU into 8 devices
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["dataset"] == module and config["train"]["shadow"]["layer"] == 3
    assert config["model"] == RECORD[module] and "net" not in config
    for figure in ("learning_curves.png", "learning_curves_wall.png", "synthetic_images.png"):
        assert (tmp_path / "figures" / figure).stat().st_size > 1000
    run = train.load_run(str(tmp_path))
    assert jax.device_count() == 1  # The CIFAR runs saved over 8 devices: restored here on one.
    assert run.steps == (0, line["step"]) and run.metrics[-1]["step"] == line["step"]
    assert jax.tree.leaves(run.params(0))[0].sharding.device_set == {jax.devices()[0]}


def test_mnist_entry_point_trains_fashion_mnist(data_dir, tmp_path):
    flags = [f"--data_dir={data_dir}", f"--workdir={tmp_path}", "--epochs=1", "--batch_size=8", "--num_validation=10"]
    result = _run("mnist", "--dataset=fashion_mnist", *flags, *SMALL_NET["mnist"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("fashion_mnist: SHADOW h3")
    assert json.loads((tmp_path / "config.json").read_text())["dataset"] == "fashion_mnist"
    (line,) = _learning_lines(tmp_path)
    assert line["step"] == 20 // 8  # The made Fashion-MNIST's 30 training images, 10 held out.
    refused = _run("mnist", "--dataset=cifar10", *flags)
    assert refused.returncode == 2 and "--dataset must be one of mnist, fashion_mnist, got 'cifar10'." in refused.stderr


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--shadow_layer=4", r"shadow_layer must be 0 \(off\) or 1..3"),
        ("--sampling_rho=1.5", r"sampling_rho must be in \(0, 1\]"),
        ("--shadow_weight=-1", "shadow_weight must be >= 0"),
        ("--alpha_scale=0", "alpha_scale must be positive"),
        ("--sampling_rho=nan", r"^error: --sampling_rho must be in \(0, 1\] \(1 = no sampling\), got nan\.$"),
        ("--smooth_sigma=inf", r"^error: --smooth_sigma must be >= 0 and finite"),
        ("--learning_rate=nan", r"^error: --learning_rate must be positive and finite, got nan\.$"),
        ("--shadow_start_epoch=nan", r"^error: --shadow_start_epoch must be >= 0 and finite"),
        ("--cpu_devices=0", "cpu_devices must be >= 1"),
        ("--data_dir=/nonexistent/folder", "does not exist"),
    ],
)
def test_bad_flags_stop_with_one_sentence(flag, message, tmp_path):
    result = _run("mnist", flag, f"--workdir={tmp_path}", "--width=16")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert re.search(message, result.stderr.strip()), result.stderr
    assert "Traceback" not in result.stderr


def test_a_setting_error_names_the_flag_that_sets_it():
    from experiments import cli, settings
    from experiments.configs import mnist

    rows = (*settings.TRAINING, *mnist.ROWS)
    rho = SettingError("train.shadow.generator.rho", "must be in (0, 1] (1 = no sampling), got 2.")
    assert cli.message(rows, rho) == "--sampling_rho must be in (0, 1] (1 = no sampling), got 2."
    layer = SettingError("train.consistency.layer", "must be 1..3.")
    assert cli.message(rows, layer) == "--consistency_layer must be 1..3."
    assert cli.message(rows, SettingError("model.arguments.width", "is 0.")) == "--width is 0."
    assert cli.message(rows, SettingError("train.nosuch", "must be 1.")) == "train.nosuch must be 1."


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory):
    """A small made MNIST, the flags of a 4-epoch run on it (20 steps an epoch), and that run's work directory."""
    root = tmp_path_factory.mktemp("small_mnist")
    conftest_data.write_idx_dataset(root / "data" / "mnist", n_train=1200, n_test=200, seed=3)
    flags = [f"--data_dir={root / 'data'}", "--epochs=4", "--batch_size=50", "--num_validation=200", "--width=64"]
    flags.append("--log_every=5")
    reference = _run("mnist", *flags, f"--workdir={root / 'reference'}")
    assert reference.returncode == 0, reference.stderr[-3000:]
    return flags, root / "reference"


def test_sigkilled_run_resumes_to_the_same_numbers(small_mnist, tmp_path):
    flags, reference = small_mnist
    workdir = tmp_path / "killed"
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.mnist", *flags, f"--workdir={workdir}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    epoch_one = workdir / "checkpoints" / "20"  # 1000 training examples / 50 per batch
    deadline = time.monotonic() + 180
    while not epoch_one.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert epoch_one.exists(), "the run never committed its epoch-1 checkpoint"
    assert len(_learning_lines(workdir)) < 4, "the run finished before it could be killed"

    resumed = _run("mnist", *flags, f"--workdir={workdir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed" in resumed.stdout
    assert _learning_lines(workdir) == _learning_lines(reference)


def test_a_sigterm_saves_mid_epoch_stops_in_one_line_and_the_same_command_resumes_to_the_same_numbers(
    small_mnist, tmp_path
):
    """SIGINT takes the same path (``cli.stop_on_signals``); the grid's test sends both."""
    flags, reference = small_mnist
    workdir = tmp_path / "stopped"
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.mnist", *flags, f"--workdir={workdir}"],
        cwd=ROOT,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in process.stdout:  # Signalled once epoch 2 is under way: it stops a few steps later, mid-epoch.
        if line.startswith("epoch 2/4 step 5/20"):
            process.send_signal(signal.SIGTERM)
            break
    _, err = process.communicate(timeout=180)
    assert process.returncode == EXIT_STOPPED, err[-3000:]
    stopped = re.fullmatch(r"stopped by SIGTERM at step (\d+); saved; run the same command to resume\n", err)
    assert stopped, err[-3000:]
    assert int(stopped[1]) in train.load_run(str(workdir)).steps

    resumed = _run("mnist", *flags, f"--workdir={workdir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed {workdir} at step {stopped[1]}" in resumed.stdout
    assert _learning_lines(workdir) == _learning_lines(reference)
