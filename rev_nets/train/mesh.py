"""The mesh: one ``data`` axis over every device; batches split along it, everything else replicated."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rev_nets.errors import SettingError


def use_cpu_devices(count: int) -> None:
    """Splits a CPU host into ``count`` JAX devices (ignored on GPU/TPU); call it before any JAX computation.

    XLA runs each CPU device's work on its own thread, so this is how a
    sharded batch (a CNN above all) uses every core.
    """
    if count < 1:
        raise SettingError("cpu_devices", f"must be >= 1, got {count}.")
    jax.config.update("jax_num_cpu_devices", count)


def data_mesh() -> Mesh:
    """One ``data`` axis over every device of every process (1 CPU, 8 host devices, a GPU, a TPU slice)."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def replicate(tree, mesh: Mesh):
    """Every leaf as a global array replicated on all devices of ``mesh`` (works across processes)."""
    sharding = NamedSharding(mesh, P())

    def put(x):
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def shard_batch(batch, sharding: NamedSharding | None):
    """Constrains a batch's leading axis to ``sharding`` (no-op without one)."""
    if sharding is None:
        return batch
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), batch)
