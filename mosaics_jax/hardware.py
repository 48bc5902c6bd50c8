"""Accelerators by slice name: memory, peak FLOP/s, HBM bandwidth, and TPU topologies.

A slice is named as Cloud TPU names it (``v5litepod-16``, ``v6e-64``; ``v5p-128`` counts
TensorCores, two per chip, so it has 64 chips) or as H100 GPUs (``h100x64``: 8 nodes of 8).
``tpu_topology`` gives the topology that ``jax.experimental.topologies`` builds devices from,
so a step can be compiled for a slice on a host without it (``mosaics_jax.compile``).
"""

from __future__ import annotations

import dataclasses
import math
import re


@dataclasses.dataclass(frozen=True)
class Chip:
  platform: str  # "tpu" or "gpu"
  memory: float  # bytes of HBM per device (vendor figures: GB)
  peak_flops: float  # dense bf16 FLOP/s per device
  hbm_bandwidth: float  # bytes/s per device
  devices_per_unit: float  # devices per unit of the slice name (v5p names count TensorCores)
  topology: str = ""  # jax topology prefix and smallest slice, e.g. "v5p:2x2x1"


# Google Cloud TPU v5e / v5p / v6e and NVIDIA H100 SXM data sheets.
CHIPS = {
    "v5litepod": Chip("tpu", 16e9, 197e12, 819e9, 1, "v5e:2x2"),
    "v5p": Chip("tpu", 95e9, 459e12, 2765e9, 0.5, "v5p:2x2x1"),
    "v6e": Chip("tpu", 32e9, 918e12, 1640e9, 1, "v6e:2x2"),
    "h100x": Chip("gpu", 80e9, 989e12, 3350e9, 1),
}


MEMORY_BUDGET = 0.9  # of HBM a layout may use: XLA's own buffers and collectives need the rest


def chip(slice_name: str) -> tuple[Chip, int]:
  """(the chip, its number of devices) of a slice name such as v5p-128 or h100x8."""
  match = re.fullmatch(r"(v5litepod-|v5p-|v6e-|h100x)(\d+)", slice_name)
  if not match:
    raise ValueError(f"pod={slice_name!r}: name a TPU slice (v5litepod-16, v5p-128, v6e-64) or "
                     "H100s as h100xN (N GPUs, 8 per node).")
  found = CHIPS[match.group(1).rstrip("-")]
  return found, int(int(match.group(2)) * found.devices_per_unit)


def tpu_topology(slice_name: str) -> str:
  """The ``jax.experimental.topologies`` name of a TPU slice: its smallest topology with the
  smallest side doubled until it holds the slice's chips (v5p-128 -> 'v5p:4x4x4')."""
  found, devices = chip(slice_name)
  if found.platform != "tpu":
    raise ValueError(f"pod={slice_name!r} is a GPU slice: XLA compiles for a GPU only on a "
                     "machine that has one, so it cannot be compiled ahead of time here; "
                     "compile it on a GPU host, or read its estimate in docs/scaling.md.")
  prefix, base = found.topology.split(":")
  sides = [int(side) for side in base.split("x")]
  smallest = math.prod(sides)
  if devices == smallest:
    return found.topology
  while math.prod(sides) < devices:
    sides[sides.index(min(sides))] *= 2
  if math.prod(sides) != devices:
    raise ValueError(f"pod={slice_name!r}: {devices} chips make no {prefix} topology; use a "
                     f"power of two times {smallest} chips.")
  return f"{prefix}:" + "x".join(str(side) for side in sorted(sides))
