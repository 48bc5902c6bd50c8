"""Pod-scale layouts: how the paper-scale configs spread over Cloud TPU slices and H100 nodes.

    python -m experiments.layouts            # the table of memory per device (5 min on a CPU)
    python -m experiments.layouts --compiled # each TPU layout compiled for its slice (hours)
    python -m experiments.layouts --tune=v2_pretraining:small:v5p-128  # the least recompute
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
the compiler's memory and FLOPs beside the estimates. ``--tune`` compiles every candidate
layout of a slice's mesh (each remat, each accumulation from 1 to 8 that gives whole
micro-batches) at 1 and 2 blocks, extrapolates per block to the full depth, and picks the one
with the lowest step-time floor that fits 85% of HBM (on a tie, the fewer micro-batches);
then compiles it at full depth to confirm.
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


@dataclasses.dataclass(frozen=True)
class Candidate:
  """A layout's compiled cost at full depth, extrapolated from its compiles at 1 and 2 blocks
  (the blocks are identical: each adds the same memory, bytes and FLOPs)."""

  layout: Layout
  memory: float  # compiled bytes per device
  share: float  # of the chip's HBM
  compute_seconds: float  # the step-time floors
  memory_seconds: float
  flops_ratio: float  # compiled FLOPs over ours
  floor_mfu: float  # our FLOPs over the larger floor times the chip's peak
  error: str = ""  # why it does not compile, if it does not

  @property
  def floor(self) -> float:
    return max(self.compute_seconds, self.memory_seconds)


def _candidate_config(experiment: str, size: str, slice_name: str, name: str, layout: Layout,
                      depth: int):
  config = _config(experiment, size, slice_name)
  with config.unlocked():
    config.optimizer.accumulation_steps = layout.accumulation
    config.models[name].remat = layout.remat
    config.models[name].num_layers = depth
  return config


def _evaluate(experiment, size, slice_name, name, layout, layers, compile_model) -> Candidate:
  """Compile ``layout`` at depths 1 and 2 and extrapolate to ``layers`` blocks."""
  from mosaics_jax import compile as compile_lib  # pylint: disable=import-outside-toplevel
  chip, _ = hardware.chip(slice_name)
  reports = []
  for depth in (1, 2):
    config = _candidate_config(experiment, size, slice_name, name, layout, depth)
    try:
      reports.append(compile_model(config, slice_name, name))
    except compile_lib.CompileError as error:
      return Candidate(layout, float("inf"), float("inf"), float("inf"), float("inf"),
                       float("inf"), 0.0, error=str(error).split(": ", 1)[-1][:200])
  one, two = reports
  at_depth = lambda f: f(one) + (layers - 1) * (f(two) - f(one))
  memory = at_depth(lambda r: r.memory["total"])
  flops, ours = at_depth(lambda r: r.flops["total"]), at_depth(lambda r: r.flops["model"])
  floors, line = compile_lib.roofline(chip, flops, at_depth(lambda r: r.bytes_accessed), ours,
                                      one.tokens)
  return Candidate(layout, memory, memory / chip.memory, floors["compute_seconds"],
                   floors["memory_seconds"], flops / max(ours, 1.0), line["floor_mfu"])


def _compile_one(config, slice_name: str, name: str):
  from mosaics_jax import compile as compile_lib  # pylint: disable=import-outside-toplevel
  _, (report,) = compile_lib.compile_config(config, slice_name, [name], label=name,
                                            decode=False)
  return report


def tune(experiment: str, size: str, slice_name: str, name: str,
         remats=("none", "dots", "block"), accumulations=(1, 2, 4, 8), budget: float = 0.85,
         compile_model=_compile_one) -> list[Candidate]:
  """Every candidate layout of model ``name`` on ``slice_name`` (the slice's mesh as the
  experiment lays it out; each remat, and each accumulation that divides the batch into
  whole per-device micro-batches), compiled at reduced depth; sorted best first: those that
  fit ``budget`` of HBM by the lowest step-time floor (fewer micro-batches on a tie), then
  the rest."""
  config = _config(experiment, size, slice_name)
  _, devices = hardware.chip(slice_name)
  mesh = (config.mesh.data, config.mesh.fsdp)
  layers = config.models[name].num_layers
  candidates = []
  for accumulation in accumulations:
    if config.data.batch_size % (devices * accumulation):
      continue  # no whole micro-batch per device
    for remat in remats:
      layout = Layout(*mesh, accumulation, remat)
      candidates.append(_evaluate(experiment, size, slice_name, name, layout, layers,
                                  compile_model))
  return sorted(candidates, key=lambda c: (c.share > budget, c.floor, c.layout.accumulation))


TUNE_HEADER = ("| remat | micro-batch x accumulation | compiled memory (of HBM) | floor compute "
               "/ HBM | compiled / ours | floor-bound MFU | |\n"
               "| --- | --- | ---: | ---: | ---: | ---: | --- |")


def tune_rows(candidates: list[Candidate], batch: int, devices: int, budget: float) -> list[str]:
  out = []
  for index, c in enumerate(candidates):
    micro = f"{batch // (devices * c.layout.accumulation)} x {c.layout.accumulation}"
    if c.error:
      out.append(f"| {c.layout.remat} | {micro} | does not compile: {c.error} | | | | |")
      continue
    verdict = ("**chosen**" if index == 0 and c.share <= budget else
               "over budget" if c.share > budget else "")
    out.append(f"| {c.layout.remat} | {micro} | {c.memory / GIB:.2f} GiB ({c.share:.0%}) | "
               f"{c.compute_seconds:.3f} / {c.memory_seconds:.3f} s | {c.flops_ratio:.2f} | "
               f"{c.floor_mfu:.0%} | {verdict} |")
  return out


def tpu_layouts() -> list[tuple[str, str, str]]:
  """(experiment, size, slice) of every TPU layout: those the TPU compiler can check here."""
  return [(experiment, size, slice_name) for (experiment, size), known in LAYOUTS.items()
          for slice_name in known if hardware.chip(slice_name)[0].platform == "tpu"]


def _tune(spec: str) -> None:
  try:
    experiment, size, slice_name = spec.split(":")
  except ValueError:
    raise SystemExit(f"--tune={spec!r}: write EXPERIMENT:SIZE:SLICE, e.g. "
                     "v2_pretraining:small:v5p-128 (SIZE may be empty: babistories_v1::v5p-32).")
  config = _config(experiment, size, slice_name)
  _, devices = hardware.chip(slice_name)
  for name in _MODELS.value or list(config.models):
    candidates = tune(experiment, size, slice_name, name, budget=_BUDGET.value)
    print(f"{experiment}:{size or '-'} on {slice_name}, model {name} (compiled at 1 and 2 "
          f"blocks, extrapolated to {config.models[name].num_layers}; compiled, not run):")
    print(TUNE_HEADER)
    print("\n".join(tune_rows(candidates, config.data.batch_size, devices, _BUDGET.value)))
    best = candidates[0]
    if best.share > _BUDGET.value:
      raise SystemExit(f"No candidate fits {_BUDGET.value:.0%} of HBM: use a larger slice.")
    print(f"\nchosen: {best.layout}; its full-depth compile, to confirm:")
    config = _candidate_config(experiment, size, slice_name, name, best.layout,
                               config.models[name].num_layers)
    print(COMPILED_HEADER)
    print("\n".join(compiled_rows(experiment, size, slice_name, reports=[
        _compile_one(config, slice_name, name)])), flush=True)


def main(argv) -> None:
  del argv
  if _TUNE.value:
    _tune(_TUNE.value)
    return
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
  _TUNE = flags.DEFINE_string(
      "tune", None, "EXPERIMENT:SIZE:SLICE: compile every candidate layout (remat none / dots /"
      " block, accumulation 1 to 8) at 1 and 2 blocks, pick the lowest step-time floor that "
      "fits --budget of HBM, and confirm it at full depth.")
  _MODELS = flags.DEFINE_list("models", None, "With --tune, these models (default all).")
  _BUDGET = flags.DEFINE_float("budget", 0.85, "With --tune, the share of HBM a layout may use.")
  app.run(main)
