"""Accelerators by generation and slices by name: memory, peak FLOP/s, HBM bandwidth, what
their compilers accept, and the TPU topologies an ahead-of-time compile builds them from.

A device is what JAX calls one: a TPU v2 or v3 chip is two devices (one per TensorCore); v4
and v5p chips are one "megacore" device of two cores; v5e and v6e chips have one core. Slices
are named as Cloud TPU and Colab name them: ``v2-8``, ``v3-8``, ``v4-8`` and ``v5p-128``
count TensorCores (v4-8 and v5p-8 are 4 chips); ``v5litepod-N`` (or ``v5e-N``) and ``v6e-N``
count chips, single-chip VMs included (``v5litepod-1``, ``v6e-1``: Colab's v5e-1 / v6e-1).
GPUs are ``h100x64`` (64 GPUs, 8 a node), ``a100x8``, ``t4x1``, ...

``tpu_topology`` gives the ``jax.experimental.topologies`` arguments of a TPU slice, so a step
can be compiled for it on a host without it (``mosaics_jax.compile``). Figures are the vendors'
data sheets, per device, dense bf16 (fp16 on the T4, which has no bf16 units).
"""

from __future__ import annotations

import dataclasses
import math
import re


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  platform: str  # "tpu" or "gpu"
  device_kinds: tuple[str, ...]  # jax.Device.device_kind of its devices (lower case)
  memory: float  # bytes of HBM per device
  peak_flops: float  # dense bf16 FLOP/s per device
  hbm_bandwidth: float  # bytes/s per device
  devices_per_chip: int = 1
  # TPU: whether Mosaic (Pallas, hence splash) compiles bf16 matmuls; v2/v3 reject them.
  mosaic_bf16: bool = True
  compute_capability: float = 0.0  # GPU: CUDA compute capability (cuDNN flash needs 8.0)
  topology: str = ""  # TPU: jax topology prefix and smallest multi-chip slice, e.g. "v4:2x2x1"
  chip_config: str = ""  # TPU: "megacore" where a device is a chip of two cores (v4)


CHIPS = {chip.name: chip for chip in (
    Chip("v2", "tpu", ("tpu v2",), 8e9, 22.5e12, 350e9, devices_per_chip=2, mosaic_bf16=False,
         topology="v2:2x2"),
    Chip("v3", "tpu", ("tpu v3",), 16e9, 61.5e12, 450e9, devices_per_chip=2, mosaic_bf16=False,
         topology="v3:2x2"),
    Chip("v4", "tpu", ("tpu v4",), 32e9, 275e12, 1200e9, topology="v4:2x2x1",
         chip_config="megacore"),
    Chip("v5e", "tpu", ("tpu v5 lite", "tpu v5e"), 16e9, 197e12, 819e9, topology="v5e:2x2"),
    Chip("v5p", "tpu", ("tpu v5", "tpu v5p"), 95e9, 459e12, 2765e9, topology="v5p:2x2x1"),
    Chip("v6e", "tpu", ("tpu v6 lite", "tpu v6e"), 32e9, 918e12, 1640e9, topology="v6e:2x2"),
    Chip("t4", "gpu", ("t4",), 16e9, 65e12, 320e9, compute_capability=7.5),
    Chip("v100", "gpu", ("v100",), 32e9, 125e12, 900e9, compute_capability=7.0),
    Chip("a10", "gpu", ("a10", "a10g"), 24e9, 125e12, 600e9, compute_capability=8.6),
    Chip("l4", "gpu", ("l4",), 24e9, 121e12, 300e9, compute_capability=8.9),
    Chip("a100", "gpu", ("a100",), 80e9, 312e12, 2039e9, compute_capability=8.0),
    Chip("h100", "gpu", ("h100",), 80e9, 989e12, 3350e9, compute_capability=9.0),
    Chip("h200", "gpu", ("h200",), 141e9, 989e12, 4800e9, compute_capability=9.0),
    Chip("b200", "gpu", ("b200",), 180e9, 2250e12, 8000e9, compute_capability=10.0),
)}

# Slice name prefix -> (chip, what the number counts: "cores" or "chips"; GPUs count devices).
SLICE_NAMES = {"v2-": ("v2", "cores"), "v3-": ("v3", "cores"), "v4-": ("v4", "cores"),
               "v5litepod-": ("v5e", "chips"), "v5e-": ("v5e", "chips"),
               "v5p-": ("v5p", "cores"), "v6e-": ("v6e", "chips"),
               **{f"{gpu}x": (gpu, "devices") for gpu in ("t4", "v100", "a10", "l4", "a100",
                                                          "h100", "h200", "b200")}}

MEMORY_BUDGET = 0.9  # of HBM a layout may use: XLA's own buffers and collectives need the rest


def chip_of_kind(device_kind: str) -> Chip | None:
  """The chip of a ``jax.Device.device_kind`` ('TPU v5 lite', 'NVIDIA H100 80GB HBM3', 'Tesla
  T4'), or None for one not in the table (CPUs, new accelerators)."""
  kind = device_kind.lower().strip()
  for found in CHIPS.values():
    if found.platform == "tpu" and kind in found.device_kinds:
      return found
    if found.platform == "gpu" and any(re.search(rf"\b{name}\b", kind)
                                       for name in found.device_kinds):
      return found
  return None


def _parse(slice_name: str) -> tuple[Chip, int, int]:
  """(chip, chips, devices) of a slice name."""
  match = re.fullmatch(r"([a-z0-9]+?(?:-|x))(\d+)", slice_name)
  if not match or match.group(1) not in SLICE_NAMES:
    raise ValueError(
        f"pod={slice_name!r}: name a TPU slice (v2-8, v3-8, v4-8, v5litepod-1, v5litepod-16, "
        f"v5p-128, v6e-1, v6e-64) or GPUs as h100x8, a100x8, l4x1, t4x1 (N GPUs, 8 a node).")
  found, unit = CHIPS[SLICE_NAMES[match.group(1)][0]], SLICE_NAMES[match.group(1)][1]
  count = int(match.group(2))
  if unit == "devices":
    return found, count, count
  cores_per_chip = 2 if found.name in ("v2", "v3", "v4", "v5p") else 1
  if unit == "cores" and count % cores_per_chip:
    raise ValueError(f"pod={slice_name!r}: {found.name} slices count TensorCores, "
                     f"{cores_per_chip} a chip; use an even number (e.g. {found.name}-8).")
  chips = count // cores_per_chip if unit == "cores" else count
  return found, chips, chips * found.devices_per_chip


def chip(slice_name: str) -> tuple[Chip, int]:
  """(the chip, its number of JAX devices) of a slice name such as v5p-128 or h100x8."""
  found, _, devices = _parse(slice_name)
  return found, devices


def tpu_topology(slice_name: str) -> tuple[str, dict]:
  """``(topology_name, options)`` for ``jax.experimental.topologies.get_topology_desc`` of a
  TPU slice: its smallest topology with the smallest side doubled until it holds the slice's
  chips (v5p-128 -> 'v5p:4x4x4'), a single chip as '1x1' on a one-chip host, and v4's chips
  as megacore devices."""
  found, chips, _ = _parse(slice_name)
  if found.platform != "tpu":
    raise ValueError(f"pod={slice_name!r} is a GPU slice: XLA compiles for a GPU only on a "
                     "machine that has one, so it cannot be compiled ahead of time here; "
                     "compile it on a GPU host, or read its estimate in docs/scaling.md.")
  prefix, base = found.topology.split(":")
  options = {"chip_config_name": found.chip_config} if found.chip_config else {}
  sides = [int(side) for side in base.split("x")]
  if chips == 1 and len(sides) == 2:  # v5e-1 / v6e-1: a single-chip host
    return f"{prefix}:1x1", {**options, "chips_per_host_bounds": (1, 1, 1)}
  smallest = math.prod(sides)
  while math.prod(sides) < chips:
    sides[sides.index(min(sides))] *= 2
  if math.prod(sides) != chips:
    single = " or 1 chip" if len(sides) == 2 else ""
    raise ValueError(f"pod={slice_name!r}: {chips} chips make no {prefix} topology; use a "
                     f"power of two times {smallest} chips{single}.")
  if chips == smallest:
    return found.topology, options
  return f"{prefix}:" + "x".join(str(side) for side in sorted(sides)), options
