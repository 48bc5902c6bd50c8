"""The device mesh and the one table that maps the model's logical axes to it.

Mesh axes, outermost first: ``data`` (pure data parallelism, e.g. across hosts or slices),
``fsdp`` (data parallelism that also shards parameters and optimizer state, ZeRO-3 style) and
``tensor`` (tensor parallelism over heads, MLP width and vocabulary). Batches are split over
``data x fsdp``.

We build meshes with **Auto** axis types: parameters and batches get explicit shardings and the
model adds ``with_logical_constraint`` hints; XLA's partitioner (Shardy) propagates the rest.
Explicit axis types (JAX's default for ``jax.make_mesh`` since 0.9) would require every
ambiguous contraction in the model to name its output sharding.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis -> mesh axis. A mesh axis is used once per array: for activations the batch
# takes ``fsdp``, so their ``embed`` falls through to the replicated rule.
LOGICAL_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("embed", None),
    ("slots", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("length", None),
    ("head_dim", None),
    ("layers", None),  # a scanned stack's blocks: each device holds its shard of every block
)


class MeshError(ValueError):
  """A mesh that does not fit the devices or the batch."""


def mesh_shape(config: Mapping[str, int], device_count: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) sizes from a config; one size may be -1 (fill with what is left)."""
  sizes = [int(config[name]) for name in MESH_AXES]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise MeshError(f"mesh {dict(zip(MESH_AXES, sizes))}: sizes must be positive, at most one -1.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if device_count % known:
      raise MeshError(f"mesh {dict(zip(MESH_AXES, sizes))} cannot fill {device_count} devices.")
    sizes[sizes.index(-1)] = device_count // known
  if math.prod(sizes) != device_count:
    raise MeshError(f"mesh {dict(zip(MESH_AXES, sizes))} has {math.prod(sizes)} devices, but "
                    f"{device_count} are available: make the product match (or use -1).")
  return tuple(sizes)


def make_mesh(config: Mapping[str, int], devices=None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                       devices=devices)


def _mesh_axes(logical: PartitionSpec) -> PartitionSpec:
  """Logical names -> mesh axes, each mesh axis used at most once (first rule wins)."""
  used: set[str] = set()
  out = []
  for name in logical:
    chosen = None
    for rule_name, axes in LOGICAL_RULES:
      if rule_name != name:
        continue
      axes_tuple = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
      if not used.intersection(axes_tuple):
        chosen = axes
        used.update(axes_tuple)
        break
    out.append(chosen)
  return PartitionSpec(*out)


def _fit(spec: PartitionSpec, shape, mesh: jax.sharding.Mesh) -> PartitionSpec:
  """Drop mesh axes that do not divide a dimension (e.g. 12 heads over tensor=8)."""
  fitted = []
  for axes, size in zip(tuple(spec) + (None,) * (len(shape) - len(spec)), shape):
    names = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    names = tuple(n for n in names if mesh.shape[n] > 1)
    devices = math.prod(mesh.shape[n] for n in names)
    fitted.append(None if not names or size % devices else (names[0] if len(names) == 1 else names))
  return PartitionSpec(*fitted)


def logical_to_shardings(logical_specs, abstract_tree, mesh: jax.sharding.Mesh):
  """NamedShardings for a tree of arrays from its tree of logical PartitionSpecs."""
  return jax.tree_util.tree_map(
      lambda spec, leaf: NamedSharding(mesh, _fit(_mesh_axes(spec), leaf.shape, mesh)),
      logical_specs, abstract_tree, is_leaf=lambda x: isinstance(x, PartitionSpec))


def placed(abstract_tree, shardings):
  """``abstract_tree``'s shapes and dtypes, each with its sharding: a restore target, or the
  arguments of an ahead-of-time compile."""
  return jax.tree_util.tree_map(
      lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), abstract_tree,
      shardings)


def _dict_path(path) -> tuple[str, ...]:
  return tuple(entry.key for entry in path if isinstance(entry, jax.tree_util.DictKey))


def state_shardings(abstract_state, param_shardings, mesh: jax.sharding.Mesh):
  """Shardings for any tree whose leaves under parameter-shaped subtrees (optimizer moments)
  follow the parameter at the same dict path; everything else (counters) is replicated."""
  by_path = {_dict_path(path): sharding for path, sharding in
             jax.tree_util.tree_leaves_with_path(param_shardings)}
  replicated = NamedSharding(mesh, PartitionSpec())

  def pick(path, leaf):
    sharding = by_path.get(_dict_path(path))
    return sharding if sharding is not None and len(sharding.spec) <= len(leaf.shape) else replicated

  return jax.tree_util.tree_map_with_path(pick, abstract_state)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def rows_sharding(mesh: jax.sharding.Mesh, rows: int) -> NamedSharding:
  """Rows split like a batch where the mesh's batch axes divide them, else replicated (a
  few prompts, an evaluation's last short batch)."""
  if rows % (mesh.shape["data"] * mesh.shape["fsdp"]) == 0:
    return batch_sharding(mesh)
  return NamedSharding(mesh, PartitionSpec())


def rows_on(mesh, *arrays):
  """Host arrays of rows (same leading size) placed on ``mesh`` by ``rows_sharding``;
  unchanged without a mesh."""
  if mesh is None:
    return arrays
  placement = rows_sharding(mesh, arrays[0].shape[0])
  return tuple(jax.device_put(array, placement) for array in arrays)


def check_batch(global_batch: int, mesh: jax.sharding.Mesh, accumulation: int = 1) -> None:
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if global_batch % (shards * accumulation):
    raise MeshError(f"batch_size={global_batch} must be a multiple of data x fsdp = {shards} "
                    f"times accumulation_steps = {accumulation}.")


def global_batch(local: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """This process's slice of a batch -> global arrays sharded over data x fsdp."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def spec_table(shardings) -> dict[str, str]:
  """'block_0/context/out/kernel' -> 'P(...)': the golden file of parameter shardings."""
  return {"/".join(_dict_path(path)): re.sub(r"\s+", "", str(sharding.spec))
          for path, sharding in jax.tree_util.tree_leaves_with_path(
              shardings, is_leaf=lambda x: isinstance(x, NamedSharding))}
