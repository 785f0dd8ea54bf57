"""Test helper: 5 SHADOW train steps of a small CNN on made data, over every device of every process.

    python tests/parallel_worker.py OUT.npz [PROCESS_ID NUM_PROCESSES PORT]

Writes the per-step losses and the final params (from process 0) to OUT.npz,
so that runs on 1 device, on 8 forced host devices and on 2 processes can be
compared. Device count comes from XLA_FLAGS, set by the caller.
"""

import sys

import jax
import numpy as np


def main(out: str, process: tuple[int, int, int] | None) -> None:
    if process:
        process_id, num_processes, port = process
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)
    from rev_nets import data, nets, shadow, train

    net = nets.cifar_cnn((4, 8, 8), input_shape=(8, 8, 3))
    config = train.TrainConfig(batch_size=16, learning_rate=0.05, shadow=shadow.ShadowConfig(layer=3))
    rng = np.random.default_rng(0)
    split = data.DeviceSplit(
        rng.standard_normal((64, 8, 8, 3)).astype(np.float32), rng.integers(0, 10, 64).astype(np.int32)
    )
    mesh = train.data_mesh()
    split, state, acc = train.replicate((split, train.create_state(net, config, 4), train.zero_metrics(config)), mesh)
    step = train.make_train_step(net, config, mesh)
    order = np.random.default_rng(1).permutation(64).reshape(4, 16).astype(np.int32)
    key = np.asarray(jax.random.key_data(jax.random.key(2)))
    losses, total = [], 0.0
    for i in range(5):
        state, acc = step(state, acc, split, order[i % 4], jax.random.wrap_key_data(key + i))
        loss_sum = float(np.asarray(acc["loss"].addressable_data(0)))
        losses.append(loss_sum - total)
        total = loss_sum
    params = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state.params)
    if jax.process_index() == 0:
        leaves = {f"param_{i}": leaf for i, leaf in enumerate(jax.tree.leaves(params))}
        np.savez(out, losses=np.array(losses), devices=jax.device_count(), **leaves)


if __name__ == "__main__":
    main(sys.argv[1], tuple(int(a) for a in sys.argv[2:5]) or None)
