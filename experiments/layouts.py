"""Pod-scale layouts: how the paper-scale configs spread over Cloud TPU slices and H100 nodes.

    python -m experiments.layouts            # the table of memory per device (2 min on a CPU)
    python launch/tpu.py up --name=v2 --zone=us-east5-a --accelerator=v5p-128 \
        -- --config=experiments/configs/v2_pretraining.py:small,pod=v5p-128 --workdir=gs://B/v2

A layout keeps the experiment's global batch (the paper's) and chooses the mesh (data x fsdp;
tensor stays 1), the gradient accumulation (so that the per-device micro-batch fits) and the
rematerialisation of each block. Memory per device is computed from the model
(``mosaics_jax/train/memory.py``: parameter and optimizer shards by ``jax.eval_shape`` on the
slice's abstract mesh, the backward pass's saved residuals); ``tests/experiments`` checks that
every layout fits 90% of the device's memory. TPU rows count the XLA path's T x T retrieval
weights (a bound: the splash path, automatic on TPU, keeps none); H100s run cuDNN's fused
kernel, which keeps none.
"""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class Accelerator:
  memory: float  # bytes of HBM per device (vendor figures: GB)
  peak_flops: float  # dense bf16 per device
  devices_per_unit: float  # devices per unit of the slice name (v5p names count TensorCores)
  fused_retrieval: bool  # counted as fused (cuDNN); TPU rows bound with the XLA path


# Google Cloud TPU v5e / v5p / v6e and NVIDIA H100 SXM data sheets.
ACCELERATORS = {
    "v5litepod": Accelerator(16e9, 197e12, 1, False),
    "v5p": Accelerator(95e9, 459e12, 0.5, False),
    "v6e": Accelerator(32e9, 918e12, 1, False),
    "h100x": Accelerator(80e9, 989e12, 1, True),
}
MEMORY_BUDGET = 0.9  # of HBM: XLA's buffers, fragmentation and collectives need the rest


@dataclasses.dataclass(frozen=True)
class Layout:
  data: int  # mesh sizes; data x fsdp = the slice's devices
  fsdp: int
  accumulation: int
  remat: str  # models' remat: "none", "dots" or "block"


# (experiment, size argument) -> slice -> layout. H100 slices are NODES x 8 GPUs
# ("h100x64" = 8 nodes): data across nodes, FSDP within.
LAYOUTS = {
    ("babistories_v1", ""): {  # GPT2-small v1 and GPT-2; 512 x 512 tokens per step
        "v5litepod-16": Layout(16, 1, 2, "dots"),
        "v6e-16": Layout(16, 1, 1, "dots"),
        "v5p-32": Layout(16, 1, 1, "none"),
        "h100x8": Layout(8, 1, 2, "none"),
        "h100x64": Layout(64, 1, 1, "none"),  # the paper's 64 GPUs
    },
    ("v2_pretraining", "small"): {  # 1.5B; 1024 x 4096 tokens per step
        "v5litepod-256": Layout(1, 256, 4, "block"),
        "v6e-64": Layout(1, 64, 8, "block"),
        "v5p-128": Layout(1, 64, 4, "block"),
        "h100x8": Layout(1, 8, 32, "dots"),
        "h100x64": Layout(8, 8, 4, "dots"),
    },
    ("v2_pretraining", "large"): {  # 9.9B; 1024 x 4096 tokens per step
        "v6e-256": Layout(1, 256, 4, "block"),
        "v5p-512": Layout(1, 256, 2, "block"),
        "h100x64": Layout(1, 64, 8, "dots"),
    },
}


def accelerator(slice_name: str) -> tuple[Accelerator, int]:
  """(the accelerator, its number of devices) of a slice name such as v5p-128 or h100x8."""
  match = re.fullmatch(r"(v5litepod-|v5p-|v6e-|h100x)(\d+)", slice_name)
  if not match:
    raise ValueError(f"pod={slice_name!r}: name a TPU slice (v5litepod-16, v5p-128, v6e-64) or "
                     "H100s as h100xN (N GPUs, 8 per node).")
  chip = ACCELERATORS[match.group(1).rstrip("-")]
  return chip, int(int(match.group(2)) * chip.devices_per_unit)


def apply(config, experiment: str, size: str, slice_name: str) -> None:
  """Set the mesh, accumulation and remat of ``slice_name``'s layout in an unlocked config."""
  known = LAYOUTS.get((experiment, size), {})
  if slice_name not in known:
    raise ValueError(f"{experiment}:{size or '(default)'} has no layout for pod={slice_name!r}; "
                     f"choose one of {sorted(known)} (or set --config.mesh.* yourself).")
  layout = known[slice_name]
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = layout.data, layout.fsdp, 1
  config.optimizer.accumulation_steps = layout.accumulation
  for section in config.models.values():
    section.remat = layout.remat


HEADER = ("| config | pod | devices | mesh (data x fsdp) | micro-batch x accumulation | remat | "
          "model | parameters | optimizer | gradients | activations | retrieval T x T | "
          "total | of HBM |\n"
          "| --- | --- | ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: |")


def rows(experiment: str, size: str, slice_name: str, names=None) -> list[str]:
  """The table rows of a layout (one per model, or per model of ``names``), memory per device
  in GiB, computed now."""
  from experiments import registry  # pylint: disable=import-outside-toplevel
  from mosaics_jax.train import memory  # pylint: disable=import-outside-toplevel
  gib = 1024 ** 3
  layout = LAYOUTS[(experiment, size)][slice_name]
  chip, devices = accelerator(slice_name)
  config = registry.get_config(experiment, ",".join(filter(None, [size, f"pod={slice_name}"])))
  micro = config.data.batch_size // (devices * layout.accumulation)
  out = []
  for name in names or config.models:
    used = memory.training_memory(config, name, devices)
    total = used.total(fused=chip.fused_retrieval)
    weights = 0 if chip.fused_retrieval else used.retrieval_weights + used.recompute_weights
    out.append(
        f"| {experiment}:{size or '-'} | {slice_name} | {devices} | {layout.data} x "
        f"{layout.fsdp} | {micro} x {layout.accumulation} | {layout.remat} | {name} | "
        f"{used.parameters / gib:.2f} | {used.optimizer / gib:.2f} | "
        f"{used.gradients / gib:.2f} | {(used.activations + used.recompute) / gib:.2f} | "
        f"{weights / gib:.2f} | {total / gib:.2f} | {total / chip.memory:.0%} |")
  return out


if __name__ == "__main__":
  print(HEADER)
  for (experiment, size), layouts in LAYOUTS.items():
    for slice_name in layouts:
      print("\n".join(rows(experiment, size, slice_name)), flush=True)
