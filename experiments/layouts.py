"""Pod-scale layouts: how the paper-scale configs spread over Cloud TPU slices and H100 nodes.

    python -m experiments.layouts            # the table of memory per device (5 min on a CPU)
    python -m experiments.layouts --compiled # each TPU layout compiled for its slice (hours)
    python launch/tpu.py up --name=v2 --zone=us-east5-a --accelerator=v5p-128 \
        -- --config=experiments/configs/v2_pretraining.py:small,pod=v5p-128 --workdir=gs://B/v2

A layout keeps the experiment's global batch (the paper's) and chooses the mesh (data x fsdp;
tensor stays 1), the gradient accumulation (so that the per-device micro-batch fits) and the
rematerialisation of each block. Memory per device is computed from the model
(``mosaics_jax/train/memory.py``: parameter and optimizer shards by ``jax.eval_shape`` on the
slice's abstract mesh, the backward pass's saved residuals); ``tests/experiments`` checks that
every layout fits 90% of the device's memory. Retrieval runs on fused kernels that keep no
T x T weights (splash on TPU, cuDNN on H100s), except with weight dropout (GPT-2's attention
dropout), which only the reference path has. ``--compiled`` compiles each TPU layout's steps
for its slice with the TPU compiler on this host (``mosaics_jax/compile.py``) and tabulates
the compiler's memory and FLOPs beside the estimates.
"""

from __future__ import annotations

import dataclasses

from mosaics_jax import hardware

GIB = 1024 ** 3


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
        # No remat for v1: the TPU compiler keeps more with "dots" than without (2.4 against
        # 1.4 GiB per layer at 32 sequences; docs/scaling.md), so the micro-batch shrinks instead.
        "v5litepod-16": Layout(16, 1, 4, "none"),
        "v6e-16": Layout(16, 1, 2, "none"),
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


def apply(config, experiment: str, size: str, slice_name: str) -> None:
  """Set the mesh, accumulation and remat of ``slice_name``'s layout in an unlocked config."""
  known = LAYOUTS.get((experiment, size), {})
  if slice_name not in known:
    raise ValueError(f"{experiment}:{size or '(default)'} has no layout for pod={slice_name!r}; "
                     f"choose one of {sorted(known)} (or set --config.mesh.* yourself).")
  layout = known[slice_name]
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = layout.data, layout.fsdp, 1
  config.mesh.pod = slice_name
  config.optimizer.accumulation_steps = layout.accumulation
  for section in config.models.values():
    section.remat = layout.remat


HEADER = ("| config | pod | devices | mesh (data x fsdp) | micro-batch x accumulation | remat | "
          "model | parameters | optimizer | gradients | activations | retrieval T x T | total | "
          "of HBM |\n"
          "| --- | --- | ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: |")


def _config(experiment: str, size: str, slice_name: str):
  from experiments import registry  # pylint: disable=import-outside-toplevel
  return registry.get_config(experiment, ",".join(filter(None, [size, f"pod={slice_name}"])))


def rows(experiment: str, size: str, slice_name: str, names=None) -> list[str]:
  """The table rows of a layout (one per model, or per model of ``names``), memory per device
  in GiB estimated now, with the fused retrieval kernels a run takes (splash, cuDNN): T x T
  retrieval weights count only where weight dropout keeps a retrieval on the reference path."""
  from mosaics_jax.train import memory  # pylint: disable=import-outside-toplevel
  layout = LAYOUTS[(experiment, size)][slice_name]
  chip, devices = hardware.chip(slice_name)
  config = _config(experiment, size, slice_name)
  micro = config.data.batch_size // (devices * layout.accumulation)
  out = []
  for name in names or config.models:
    used = memory.training_memory(config, name, devices)
    total, weights = used.total(fused=True), used.weights(fused=True)
    out.append(
        f"| {experiment}:{size or '-'} | {slice_name} | {devices} | {layout.data} x "
        f"{layout.fsdp} | {micro} x {layout.accumulation} | {layout.remat} | {name} | "
        f"{used.parameters / GIB:.2f} | {used.optimizer / GIB:.2f} | "
        f"{used.gradients / GIB:.2f} | {(used.activations + used.recompute) / GIB:.2f} | "
        f"{weights / GIB:.2f} | {total / GIB:.2f} | {total / chip.memory:.0%} |")
  return out


COMPILED_HEADER = (
    "| config | pod | model | retrieval | compiled total (temporaries) | estimate | "
    "estimate / compiled | of HBM | compiled TFLOP (kernels) | ours TFLOP | compiled / ours | "
    "floor compute / HBM | decode step | compile |\n"
    "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
    "| ---: |")


def compiled_rows(experiment: str, size: str, slice_name: str, names=None,
                  reports=None) -> list[str]:
  """Rows of the compiled table: the TPU compiler's memory and FLOPs per device per step
  (``mosaics_jax.compile``; minutes per model on a CPU) beside the estimates."""
  from mosaics_jax import compile as compile_lib  # pylint: disable=import-outside-toplevel
  if reports is None:
    _, reports = compile_lib.compile_config(_config(experiment, size, slice_name), slice_name,
                                            names, label=f"{experiment}:{size},pod={slice_name}")
  out = []
  for report in reports:
    memory, flops, floors = report.memory, report.flops, report.floors
    retrieval = ", ".join(report.kernels.get("retrieval", {})) or "-"
    decode = f"{report.decode['memory']['total'] / GIB:.2f} GiB" if report.decode else "-"
    seconds = sum(report.compile_seconds.values())
    out.append(
        f"| {experiment}:{size or '-'} | {slice_name} | {report.model} | {retrieval} | "
        f"{memory['total'] / GIB:.2f} ({memory['temporaries'] / GIB:.2f}) | "
        f"{report.estimate / GIB:.2f} | {report.estimate / memory['total']:.2f} | "
        f"{report.share:.0%} | {flops['total'] / 1e12:,.0f} ({flops['kernels'] / 1e12:,.0f}) | "
        f"{flops['model'] / 1e12:,.0f} | {flops['total'] / flops['model']:.2f} | "
        f"{floors['compute_seconds']:.2f} / {floors['memory_seconds']:.2f} s | {decode} | "
        f"{seconds:.0f} s |")
  return out


def tpu_layouts() -> list[tuple[str, str, str]]:
  """(experiment, size, slice) of every TPU layout: those the TPU compiler can check here."""
  return [(experiment, size, slice_name) for (experiment, size), known in LAYOUTS.items()
          for slice_name in known if hardware.chip(slice_name)[0].platform == "tpu"]


def main(argv) -> None:
  del argv
  if not _COMPILED.value:
    print(HEADER)
    for (experiment, size), known in LAYOUTS.items():
      for slice_name in known:
        print("\n".join(rows(experiment, size, slice_name)), flush=True)
    return
  print(COMPILED_HEADER)
  for experiment, size, slice_name in tpu_layouts():
    if _ONLY.value and f"{experiment}:{size}:{slice_name}" not in _ONLY.value:
      continue
    print("\n".join(compiled_rows(experiment, size, slice_name)), flush=True)


if __name__ == "__main__":
  import os  # pylint: disable=import-outside-toplevel
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # shapes only; compiles target the slices
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  _COMPILED = flags.DEFINE_bool(
      "compiled", False, "Compile every TPU layout for its slice (mosaics_jax.compile; hours on "
      "a CPU) and print the compiled table instead of the estimates.")
  _ONLY = flags.DEFINE_list("only", None, "With --compiled, only these EXPERIMENT:SIZE:SLICE "
                            "(e.g. v2_pretraining:small:v5p-128).")
  app.run(main)
