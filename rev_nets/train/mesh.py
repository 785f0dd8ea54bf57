"""The mesh: one ``data`` axis over every device; batches split along it, everything else replicated."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


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
