"""The devices a program is traced for: what picks its kernels and splits them over a mesh.

A training step is traced under ``jax.set_mesh(mesh)``, and the mesh's devices, not the host
running Python, decide which kernels it may use: an ahead-of-time compile for a TPU slice on
a CPU host (``mosaics_jax.compile``) takes the splash path a TPU run takes. Without a mesh, the
default backend decides.

XLA cannot partition a Pallas (Mosaic) kernel, so under a mesh a kernel runs on each device's
shard through ``jax.shard_map`` (``per_shard``). Which mesh axes split the batch and the heads
comes from the logical-axis rules in effect (``train/sharding.py``'s table, installed with
``flax.linen.logical_axis_rules``): the one table that shards the rest of the model.

``recording()`` notes the kernels chosen while a program is traced, and the FLOPs of its Mosaic
kernels, for the compile report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from typing import Callable, Sequence

import jax
from flax.linen import spmd
from jax.sharding import PartitionSpec


def mesh() -> jax.sharding.AbstractMesh | None:
  """The mesh of the program being traced (``jax.set_mesh``), or None."""
  current = jax.sharding.get_abstract_mesh()
  return None if current.empty else current


def platform() -> str:
  """'tpu', 'gpu' or 'cpu': the platform of the mesh's devices, else the default backend."""
  current = mesh()
  device = None if current is None else current.abstract_device
  if device is not None:
    return "gpu" if device.platform in ("cuda", "rocm") else device.platform
  return jax.default_backend()


def _fitted_spec(names: Sequence[str | None], shape, current) -> PartitionSpec:
  """The rules' mesh axes for an array with logical axes ``names``, each dimension keeping the
  leading mesh axes whose product divides it (the others replicate it)."""
  mapped = spmd.logical_to_mesh_axes(tuple(names)) or (None,) * len(names)
  fitted = []
  for axes, size in zip(mapped, shape):
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    kept = []
    for name in axes:
      if name in current.shape and size % (math.prod(current.shape[n] for n in kept) *
                                           current.shape[name]) == 0:
        kept.append(name)
    fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  return PartitionSpec(*fitted)


def per_shard(function: Callable, arrays: Sequence[jax.Array | None],
              logical_axes: Sequence[Sequence[str | None]]):
  """``function(*arrays)`` on each device's shard of ``arrays`` under the mesh being traced,
  each array split along its ``logical_axes`` (a mesh axis that does not divide a dimension
  is dropped: that dimension is replicated over it); without a mesh, a plain call. ``None``
  arrays pass through. The output has the first array's shape and is split like it."""
  current = mesh()
  if current is None:
    return function(*arrays)
  present = [i for i, array in enumerate(arrays) if array is not None]
  specs = [_fitted_spec(logical_axes[i], arrays[i].shape, current) for i in present]

  def on_shard(*shards):
    full = [None] * len(arrays)
    for i, shard in zip(present, shards):
      full[i] = shard
    return function(*full)

  # check_vma=False: a pallas_call's outputs carry no varying-axes annotation to check.
  return jax.shard_map(on_shard, mesh=current, in_specs=tuple(specs), out_specs=specs[0],
                       check_vma=False)(*(arrays[i] for i in present))


_LOCAL = threading.local()


@dataclasses.dataclass
class Trace:
  """What ``recording()`` saw while a program was traced."""

  # op ('retrieval', 'slot read') -> implementation -> descriptions of the calls
  choices: dict[str, dict[str, list[str]]] = dataclasses.field(default_factory=dict)
  # one entry per traced Mosaic kernel call: FLOPs per device of each of its kernels
  # ('fwd', 'dq', 'dkv'), which XLA's cost analysis does not see
  kernel_flops: list[dict[str, float]] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def recording():
  """A ``Trace`` of the kernels chosen while tracing inside the ``with`` block."""
  previous, _LOCAL.trace = getattr(_LOCAL, "trace", None), Trace()
  try:
    yield _LOCAL.trace
  finally:
    _LOCAL.trace = previous


def record(op: str, implementation: str, detail: str) -> None:
  """Note a kernel choice (a no-op unless ``recording()``)."""
  trace = getattr(_LOCAL, "trace", None)
  if trace is not None:
    details = trace.choices.setdefault(op, {}).setdefault(implementation, [])
    if detail not in details:
      details.append(detail)


def record_kernel_flops(flops: dict[str, float]) -> None:
  """Note the FLOPs of one Mosaic kernel call (a no-op unless ``recording()``)."""
  trace = getattr(_LOCAL, "trace", None)
  if trace is not None:
    trace.kernel_flops.append(flops)
