"""The devices a program is traced for: what picks its kernels and splits them over a mesh.

A training step is traced under ``jax.set_mesh(mesh)``, and the mesh's devices, not the host
running Python, decide which kernels it may use: an ahead-of-time compile for a TPU slice on
a CPU host (``mosaics_jax.compile``) takes the splash path a TPU run takes. Without a mesh, the
default backend decides.

XLA cannot partition a Pallas (Mosaic) kernel, so under a mesh a kernel runs on each device's
shard through ``jax.shard_map`` (``per_shard``). Which mesh axes split the batch and the heads
comes from the logical-axis rules in effect (``train/sharding.py``'s table, installed with
``flax.linen.logical_axis_rules``): the one table that shards the rest of the model.

What the target's chip accepts is decided here, from its generation (``hardware.CHIPS``), and
nowhere else; the kernels ask ``splash_dtype`` and ``cudnn_flash``:

  ==========================  =====================================  =========================
  target                      retrieval (automatic)                  persistent slot read
  ==========================  =====================================  =========================
  TPU v4, v5e, v5p, v6e       splash, in the model's dtype           Pallas (probabilities in
                                                                     VMEM, dropout in-kernel)
  TPU v2, v3                  splash in float32 (Mosaic has no bf16  Pallas, in float32
                              matmul there: inputs cast, output back)
  GPU sm80+ (A100, A10, L4,   cuDNN flash attention (bf16 / fp16)    cuDNN (bf16 / fp16)
  H100, H200, B200)
  GPU below sm80 (T4, V100),  XLA                                    XLA (recomputing)
  unknown devices
  CPU                         blockwise (``kernels/blockwise.py``;   blockwise (a quarter of
                              2-14x XLA's speed, measured)           the memory, as fast)
  ==========================  =====================================  =========================

Splash also needs lengths in multiples of 128 and no additive bias (ALiBi); cuDNN a head size
that is a multiple of 8, at most 128 (``kernels/retrieval.py``). Found by compiling on each
generation (``tests/test_compile.py``): on v2/v3 bf16 splash fails with Mosaic's
"Unsupported matmul RHS type", float32 splash compiles. An unknown GPU is taken at its
reported compute capability where JAX gives one.

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
import jax.numpy as jnp
from flax.linen import spmd
from jax.sharding import PartitionSpec

from mosaics_jax import hardware


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


def device() -> jax.Device | jax.sharding.AbstractDevice:
  """A device of the target: the mesh's (an abstract device for an ahead-of-time compile),
  else the default backend's first."""
  current = mesh()
  found = None if current is None else current.abstract_device
  return found if found is not None else jax.devices()[0]


def chip() -> hardware.Chip | None:
  """The target's chip generation (None: a CPU or an accelerator not in hardware.CHIPS)."""
  return hardware.chip_of_kind(device().device_kind)


def splash_dtype(dtype) -> jnp.dtype | None:
  """The dtype splash computes in on the target for inputs of ``dtype`` (float32 where Mosaic
  cannot multiply them, TPU v2/v3), or None where splash does not run (not a TPU)."""
  if platform() != "tpu":
    return None
  found = chip()
  if jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and found is not None and not found.mosaic_bf16:
    return jnp.dtype(jnp.float32)
  return jnp.dtype(dtype)


def cudnn_flash() -> bool:
  """Whether the target GPU runs cuDNN's fused flash attention (compute capability 8.0+)."""
  if platform() != "gpu":
    return False
  found = chip()
  if found is not None:
    return found.compute_capability >= 8.0
  capability = getattr(device(), "compute_capability", None)  # real CUDA devices: "8.6"
  return capability is not None and float(capability) >= 8.0


def summary() -> str:
  """The target and its row of the table above, for reports and notebooks:
  'TPU v2 (v2, 8 devices): retrieval by splash in float32 (no bf16 Mosaic matmuls)'."""
  found, here = chip(), device()
  current = mesh()
  count = jax.device_count() if current is None else current.size
  name = (f"{here.device_kind} ({found.name if found else platform()}, "
          f"{count} device{'s' * (count > 1)})")
  compute = splash_dtype(jnp.bfloat16)
  if compute is not None:
    retrieval = "splash" + ("" if compute == jnp.bfloat16 else
                            f" in {compute.name} (no bf16 Mosaic matmuls)")
  elif cudnn_flash():
    retrieval = "cuDNN flash attention (bf16 / fp16)"
  else:
    retrieval = "XLA" + (" (cuDNN flash needs compute capability 8.0+)"
                         if platform() == "gpu" else "")
  return f"{name}: retrieval by {retrieval}"


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
  # one entry per traced Mosaic kernel call: its kernels' name prefix ('splash_mha',
  # 'slot_read') and the FLOPs per device of each of its passes ('fwd', 'dq', 'dkv'; 'fwd',
  # 'bwd'), which XLA's cost analysis does not see
  kernel_flops: list[tuple[str, dict[str, float]]] = dataclasses.field(default_factory=list)


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


def record_kernel_flops(prefix: str, flops: dict[str, float]) -> None:
  """Note the FLOPs of one call of the Mosaic kernels named ``prefix``_PASS, per pass (a
  no-op unless ``recording()``)."""
  trace = getattr(_LOCAL, "trace", None)
  if trace is not None:
    trace.kernel_flops.append((prefix, flops))
