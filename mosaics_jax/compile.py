r"""Compile an experiment's steps for a TPU slice ahead of time, on any host (a CPU will do).

    python -m mosaics_jax.compile --config=experiments/configs/v2_pretraining.py:small,pod=v5p-128
    python -m mosaics_jax.compile --config=experiments/configs/babistories_v1.py:pod=v5p-32 \
        --models=mosaic --json
    python -m mosaics_jax.compile --config=experiments/configs/quickstart.py:tiny --pod=v5litepod-4

The slice (``pod=SLICE`` in the config argument, or ``--pod``) becomes TPU devices from its
topology (``jax.experimental.topologies``; multi-host slices too, from one process), the
config's mesh is laid on them, and for each model the real train step (gradient
accumulation, remat, dropout, v2's random m) and the one-token decode step of ``generate``
are lowered and compiled by the TPU compiler, against abstract arrays born sharded: no data is
read, nothing is written, nothing runs. Per model it reports

  * the kernel chosen for each memory (the target's choice, by chip generation: splash on TPU
    where it applies, in float32 on v2/v3; ``kernels/target.py``);
  * the compiler's memory per device (arguments, outputs, aliased, temporaries, code), its
    share of the chip's HBM, and ``train/memory.py``'s estimate beside it;
  * FLOPs per device per step: the compiler's (``cost_analysis``, which sees XLA's ops only,
    plus the Mosaic kernels' FLOPs counted from their block masks; loops multiplied out: cost
    analysis counts a loop's body once, so with gradient accumulation or scanned blocks one
    micro-batch's gradient is compiled too, with no block and with one, and the identical
    blocks multiplied out)
    beside ours (``train/metrics.py``, the MFU numerator:
    their ratio shows recomputation and what the formula leaves out);
  * two floors of the step time, labelled as estimates: compiled FLOPs over the chip's peak,
    compiled bytes accessed over its HBM bandwidth, and the tokens/s/device they bound;
  * a roofline: compiled FLOPs and bytes per token, their ratio (arithmetic intensity) against
    the chip's ridge point (peak FLOP/s over HBM bytes/s: below it the step is bound by
    memory), and the floor-bound MFU (our model FLOPs over the larger floor times the peak:
    the most MFU the compiled program allows);
  * the five ops (fusions, matmuls, copies, collectives, kernels) that move the most bytes and
    the five that do the most FLOPs, from the compiled module (``hlo_costs.py``);
  * compile times.

Exits with status 1, naming the layout and the fix, when a step does not compile or does not
fit 90% of the chip's HBM. Needs libtpu (``pip install -e '.[tpu]'``). A GPU slice cannot be
compiled without a GPU: XLA's GPU compiler needs the device.
"""

from __future__ import annotations

import os

# The host stays on its CPU (libtpu does not look for a TPU of its own); the slice's devices
# come from the topology. Only libtpu's compiler is used, so other processes may hold it too
# (tests, a training run on this host): no lock file. Set before jax is imported.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

# pylint: disable=wrong-import-position
import dataclasses  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from absl import app, flags  # noqa: E402
from jax.experimental import topologies  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mosaics_jax import cli, generate, hardware, hlo_costs  # noqa: E402
from mosaics_jax.data import text  # noqa: E402
from mosaics_jax.kernels import target  # noqa: E402
from mosaics_jax.train import memory, sharding, trainer  # noqa: E402
from mosaics_jax.train.config import ConfigError, optimizer_config  # noqa: E402

GIB = 1024 ** 3


class CompileError(RuntimeError):
  """A step that does not compile or does not fit the slice; the message names the fix."""


@dataclasses.dataclass
class Report:
  """One model's compiled steps on one slice; bytes and FLOPs are per device."""

  model: str
  parameters: int
  kernels: dict  # op -> implementation -> descriptions of the calls
  memory: dict  # arguments, outputs, aliased, temporaries, code, total
  hbm: float
  estimate: int  # train/memory.py's total for the same step
  flops: dict  # xla, kernels, total (compiled, loops multiplied out), model (ours)
  bytes_accessed: float
  tokens: int  # trained tokens per device per step
  floors: dict  # compute_seconds, memory_seconds, tokens_per_second
  roofline: dict  # flops_per_token, bytes_per_token, intensity, ridge, bound, floor_mfu
  top_ops: dict  # bytes, flops: the top ops (hlo_costs.summary); total_bytes, total_flops
  compile_seconds: dict  # train step, micro steps (with accumulation), decode step
  decode: dict | None  # the decode step: rows, cache length, memory total

  @property
  def share(self) -> float:
    return self.memory["total"] / self.hbm


def _memory(compiled) -> dict:
  stats = compiled.memory_analysis()
  out = dict(arguments=stats.argument_size_in_bytes, outputs=stats.output_size_in_bytes,
             aliased=stats.alias_size_in_bytes, temporaries=stats.temp_size_in_bytes,
             code=stats.generated_code_size_in_bytes)
  out["total"] = (out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"] +
                  out["code"])
  return out


_MOSAIC_CALL = re.compile(r"%(\S+) = .*custom_call_target=\"tpu_custom_call\"")


def _kernel_flops(compiled, trace) -> float:
  """FLOPs of the Mosaic kernels in a compiled program. Each traced kernel call recorded its
  passes' FLOPs (``kernels/splash.py``, ``kernels/pallas_slots.py``); the compiled module says
  how many times each pass runs (a forward recomputed by remat appears twice), spread evenly
  over the traced calls of the same kernels."""
  names = _MOSAIC_CALL.findall(compiled.as_text())
  total = 0.0
  for prefix in {prefix for prefix, _ in trace.kernel_flops}:
    calls = [flops for p, flops in trace.kernel_flops if p == prefix]
    passes = sorted(calls[0], key=len, reverse=True)  # 'dkv' before 'dq'
    runs = dict.fromkeys(passes, 0)
    for name in (n for n in names if n.startswith(prefix)):
      found = next((kind for kind in passes if f"_{kind}" in name), None)
      if found:
        runs[found] += 1
    total += sum(runs[kind] / len(calls) * sum(flops[kind] for flops in calls) for kind in passes)
  return total


def _describe_mesh(mesh, devices) -> str:
  """'4 chips on 1 host, mesh data 4 x ...'; TPU v2/v3 chips are two devices each."""
  devices = list(devices)
  hosts = len({device.process_index for device in devices})
  sizes = " x ".join(f"{name} {size}" for name, size in mesh.shape.items())
  found = hardware.chip_of_kind(devices[0].device_kind)
  per_chip = found.devices_per_chip if found else 1
  units = (f"{len(devices)} chip{'s' * (len(devices) > 1)}" if per_chip == 1 else
           f"{len(devices)} devices ({len(devices) // per_chip} chips of {per_chip} cores)")
  return f"{units} on {hosts} host{'s' * (hosts > 1)}, mesh {sizes}"


def slice_devices(slice_name: str):
  """The TPU devices of a slice, from its topology (no TPU needed)."""
  topology, options = hardware.tpu_topology(slice_name)
  try:
    return topology, topologies.get_topology_desc(platform="tpu", topology_name=topology,
                                                  **options).devices
  except Exception as error:  # libtpu missing, or a topology it does not know
    raise CompileError(
        f"Cannot build the TPU devices of {slice_name} ({topology}): {error}. Install the TPU "
        "compiler with pip install -e '.[tpu]' (libtpu pinned to the installed jax).") from error


def compile_model(config, name: str, mesh, chip, label: str, decode: bool = True) -> Report:
  """Compile model ``name``'s train step (and decode step) for ``mesh``; see the docstring."""
  devices = mesh.size
  accumulation = optimizer_config(name, config).accumulation_steps
  batch, length = config.data.batch_size, config.data.seq_len
  keys = ("inputs", "targets") + (("segment_ids",) if text.with_segments(config.data.packing) else ())
  seconds = {}

  def tokens_of(rows):
    rows_sharding = sharding.batch_sharding(mesh)
    return {k: jax.ShapeDtypeStruct((rows, length), jnp.int32, sharding=rows_sharding)
            for k in keys}

  def compile_traced(what, function, *args):
    print(f"[{name}] compiling the {what} for {config.mesh.pod or 'the slice'} ...",
          file=sys.stderr, flush=True)
    started = time.time()
    with target.recording() as trace:
      try:
        lowered = function.lower(*args)
        compiled = lowered.compile()
      except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        problem = (f"{label}: the {what} of model {name} does not compile for {chip_label}: "
                   f"{type(error).__name__}: {first[:400]}")
        if "RESOURCE_EXHAUSTED" in first or "Ran out of memory" in first:
          problem += ". " + _fix(config, name)
        raise CompileError(problem) from error
    seconds[what.replace(" ", "_")] = round(time.time() - started, 1)
    return compiled, trace

  def micro_cost(depth):
    """(XLA FLOPs, bytes accessed, kernel FLOPs) of one micro-batch's gradient for the model cut
    to ``depth`` unrolled blocks (0: the embedding and head alone): the blocks being
    identical, depths 0 and 1 give the full depth at a fraction of a full compile."""
    section = ml_collections.ConfigDict(config.models[name].to_dict())
    section.num_layers, section.scan_layers = depth, False
    shallow = trainer.build_program(name, section, config, config.data.tokenizer.vocab_size,
                                    mesh)
    loss = trainer.make_loss(shallow.model)
    gradient = jax.jit(lambda params, b: jax.value_and_grad(loss)(params, b, jax.random.key(0)),
                       in_shardings=(shallow.param_shardings, sharding.batch_sharding(mesh)))
    params = sharding.placed(shallow.abstract_state.params, shallow.param_shardings)
    compiled, trace = compile_traced(f"micro step at depth {depth}", gradient, params,
                                     tokens_of(batch // accumulation))
    cost = compiled.cost_analysis()
    return cost.get("flops", 0.0), cost.get("bytes accessed", 0.0), _kernel_flops(compiled, trace)

  chip_label = f"{config.mesh.pod or 'the slice'} ({_describe_mesh(mesh, mesh.devices.flat)})"
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    program = trainer.build_program(name, config.models[name], config,
                                    config.data.tokenizer.vocab_size, mesh)
    state = sharding.placed(program.abstract_state, program.state_shardings)
    step, trace = compile_traced("train step", program.train_step, state, tokens_of(batch))
    cost = step.cost_analysis()
    xla, accessed = cost.get("flops", 0.0), cost.get("bytes accessed", 0.0)
    kernels = _kernel_flops(step, trace)
    # Cost analysis counts a loop's body once: the accumulation loop's micro-batch, and a
    # scanned stack's block (forward and backward). A micro-batch's gradient is M + L B (M
    # outside the blocks, B one block's; from the micro steps at depths 0 and 1: M, M + B), and
    # the compiled step counts one micro-batch with c of its L blocks (c = 1 scanned, L
    # unrolled): the step is S - (M + c B) + A (M + L B) for A micro-batches. (The A - 1
    # uncounted additions of a micro-batch's gradient into the sum are left out: 12 bytes and
    # 1 FLOP per parameter each.)
    layers, scanned = program.model_config.num_layers, program.model_config.scan_layers
    counted_blocks = 1 if scanned else layers
    if accumulation > 1 or counted_blocks < layers:
      outside, one = micro_cost(0), micro_cost(1)
      xla, accessed, kernels = (
          total - (m + counted_blocks * (m1 - m)) + accumulation * (m + layers * (m1 - m))
          for total, m, m1 in zip((xla, accessed, kernels), outside, one))
    decoded = None
    if decode:
      rows = batch // accumulation
      cache = generate.abstract_cache(program.model, rows, length)
      cache_shardings = generate.cache_shardings(cache, mesh)
      cache = sharding.placed(cache, cache_shardings)
      one = jax.ShapeDtypeStruct((rows, 1), jnp.int32, sharding=sharding.batch_sharding(mesh))
      decode_step = jax.jit(functools.partial(generate.decode_chunk, program.model),
                            out_shardings=(None, cache_shardings), donate_argnums=1)
      decode_compiled, _ = compile_traced("decode step", decode_step, state.params, cache, one,
                                          one)
      decoded = dict(rows=rows, cache_length=length, memory=_memory(decode_compiled))

  used = memory.training_memory(config, name, devices)
  fused = not {"xla", "reference"} & set(trace.choices.get("retrieval", {}))
  tokens = batch * length // devices
  total = xla + kernels
  floors, line = roofline(chip, total, accessed, program.flops_per_token * tokens, tokens)
  return Report(
      model=name, parameters=program.parameters, kernels=trace.choices, memory=_memory(step),
      hbm=chip.memory, estimate=used.total(fused=fused),
      flops=dict(xla=xla, kernels=kernels, total=total,
                 model=program.flops_per_token * tokens),
      bytes_accessed=accessed, tokens=tokens, floors=floors, roofline=line,
      top_ops=hlo_costs.summary(step.as_text()), compile_seconds=seconds, decode=decoded)


def roofline(chip, flops: float, accessed: float, model_flops: float,
             tokens: int) -> tuple[dict, dict]:
  """The step-time floors of a compiled step (its FLOPs over the chip's peak, its bytes over
  the HBM bandwidth) and its roofline: per-token cost, arithmetic intensity against the
  ridge point, and the floor-bound MFU (``model_flops`` over the larger floor times the peak).
  One formula for the compile report and ``experiments.layouts --tune``."""
  floors = dict(compute_seconds=flops / chip.peak_flops,
                memory_seconds=accessed / chip.hbm_bandwidth)
  floor = max(floors.values())
  floors["tokens_per_second"] = tokens / max(floor, 1e-12)
  line = dict(flops_per_token=flops / tokens, bytes_per_token=accessed / tokens,
              intensity=flops / max(accessed, 1.0), ridge=chip.peak_flops / chip.hbm_bandwidth,
              floor_mfu=model_flops / max(floor * chip.peak_flops, 1.0))
  line["bound"] = "memory" if line["intensity"] < line["ridge"] else "compute"
  return floors, line


def compile_config(config, slice_name: str, names=None, label: str = "",
                   decode: bool = True) -> tuple[str, list[Report]]:
  """Compile every model of ``config`` (or of ``names``) for ``slice_name``; returns a
  description of the slice and mesh, and the reports. Raises CompileError."""
  label = label or slice_name
  chip, _ = hardware.chip(slice_name)
  if chip.platform != "tpu":
    raise CompileError(f"{label}: {slice_name} is a GPU slice; XLA compiles for a GPU only on "
                       "a machine with that GPU, so it cannot be compiled ahead of time here. "
                       "Compile it on a GPU host, or read its estimate in docs/scaling.md.")
  topology, devices = slice_devices(slice_name)
  try:
    mesh = sharding.make_mesh(config.mesh, devices)
  except sharding.MeshError as error:
    raise CompileError(f"{label}: {error} ({slice_name} has {len(devices)} chips)") from error
  names = names or [n.strip() for n in config.train.models.split(",") if n.strip()] or list(
      config.models)
  unknown = [n for n in names if n not in config.models]
  if unknown:
    raise CompileError(f"--models names {unknown}; the config has {list(config.models)}.")
  with config.unlocked():
    config.mesh.pod = slice_name
  reports = [compile_model(config, name, mesh, chip, label, decode) for name in names]
  with jax.set_mesh(mesh):
    kernels = target.summary()
  return f"{slice_name} ({topology}: {_describe_mesh(mesh, devices)}; {kernels})", reports


def _fix(config, name: str) -> str:
  return (f"Shrink the micro-batch (raise --config.optimizer.accumulation_steps, now "
          f"{optimizer_config(name, config).accumulation_steps}), recompute more "
          f"(--config.models.{name}.remat=block, now {config.models[name].remat}), or use a "
          "larger slice; the layouts are in experiments/layouts.py.")


def check_fits(reports: list[Report], config, label: str) -> None:
  """CompileError for the first model whose step needs more than the budget of HBM."""
  for report in reports:
    if report.share > hardware.MEMORY_BUDGET:
      raise CompileError(
          f"{label}: the train step of model {report.model} needs "
          f"{report.memory['total'] / GIB:.1f} GiB per device, {report.share:.0%} of the "
          f"chip's {report.hbm / 1e9:.0f} GB (the budget is {hardware.MEMORY_BUDGET:.0%}). "
          + _fix(config, report.model))


def _tera(flops: float) -> str:
  return f"{flops / 1e12:,.1f}"


def _scaled(value: float, unit: str) -> str:
  """1.5e9 -> '1.50 GB'; 2e6 FLOP -> '2.00 MFLOP'."""
  for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(value) >= scale:
      return f"{value / scale:,.2f} {prefix}{unit}"
  return f"{value:,.0f} {unit}"


def _top_lines(top_ops: dict) -> list[str]:
  """The top ops; each operand and result counted once (on TPU the compiler's own total,
  in the floors above, counts more: it models the chip's memory traffic)."""
  lines = []
  for by, what, unit in (("bytes", "bytes accessed", "B"), ("flops", "FLOPs", "FLOP")):
    lines.append(f"  top ops by {what} (of {_scaled(top_ops['total_' + by], unit)} over every "
                 "op, operands and results once, loops multiplied out):")
    for op in top_ops[by]:
      runs = f" x{op['count']}" if op["count"] > 1 else ""
      lines.append(f"    {_scaled(op[by], unit)} ({op['share']:.0%}) {op['kind']} "
                   f"{op['name']}{runs}: {op['source'] or '-'}")
    parts = top_ops.get("parts", {}).get(by, {})
    if parts:
      total = max(sum(parts.values()), 1.0)
      lines.append("    by part of the model: " + ", ".join(
          f"{name} {value / total:.0%}" for name, value in parts.items() if value / total >= 0.01))
  return lines


def format_report(report: Report) -> str:
  memory, flops, floors, roofline = report.memory, report.flops, report.floors, report.roofline
  kernels = "; ".join(f"{op}: {impl} [{' | '.join(calls)}]" for op, impls in report.kernels.items()
                      for impl, calls in impls.items())
  lines = [
      f"[{report.model}] {report.parameters:,} parameters",
      f"  kernels: {kernels or 'none recorded'}",
      f"  memory per device (compiled): arguments {memory['arguments'] / GIB:.2f} GiB, outputs "
      f"{memory['outputs'] / GIB:.2f}, aliased {memory['aliased'] / GIB:.2f}, temporaries "
      f"{memory['temporaries'] / GIB:.2f}, code {memory['code'] / GIB:.2f}: total "
      f"{memory['total'] / GIB:.2f} GiB, {report.share:.0%} of {report.hbm / 1e9:.0f} GB HBM; "
      f"estimate (train/memory.py) {report.estimate / GIB:.2f} GiB "
      f"({report.estimate / max(memory['total'], 1):.2f}x)",
      f"  TFLOP per device per step: compiled {_tera(flops['total'])} (XLA ops "
      f"{_tera(flops['xla'])} + Mosaic kernels {_tera(flops['kernels'])}), ours "
      f"{_tera(flops['model'])} (train/metrics.py): compiled / ours "
      f"{flops['total'] / max(flops['model'], 1):.2f}",
      f"  step-time floors (estimates): compute {floors['compute_seconds']:.3f} s, HBM "
      f"{floors['memory_seconds']:.3f} s ({report.bytes_accessed / 1e9:,.1f} GB accessed): at "
      f"most {floors['tokens_per_second']:,.0f} tokens/s/device ({report.tokens:,} tokens per "
      f"device per step)",
      f"  roofline: {_scaled(roofline['flops_per_token'], 'FLOP')} and "
      f"{_scaled(roofline['bytes_per_token'], 'B')} accessed per token; intensity "
      f"{roofline['intensity']:,.0f} FLOP/byte against the chip's ridge point "
      f"{roofline['ridge']:,.0f}: {roofline['bound']}-bound; floor-bound MFU "
      f"{roofline['floor_mfu']:.0%}",
      *_top_lines(report.top_ops),
      "  compiled in " + ", ".join(f"{s:.1f} s ({what.replace('_', ' ')})"
                                   for what, s in report.compile_seconds.items()),
  ]
  if report.decode:
    lines.append(f"  decode step ({report.decode['rows']} rows, cache of "
                 f"{report.decode['cache_length']}): "
                 f"{report.decode['memory']['total'] / GIB:.2f} GiB per device")
  return "\n".join(lines)


def _peak_host_memory() -> int:
  """This process's peak resident memory in bytes (getrusage: kilobytes on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.quiet_logging()
  # Executables for devices this host lacks cannot be reloaded from a compilation cache.
  jax.config.update("jax_enable_compilation_cache", False)
  values = flags.FLAGS
  config = values.config
  label = config_flags.get_config_filename(values["config"])
  slice_name = values.pod or config.mesh.pod
  try:
    if not slice_name:
      raise CompileError(f"{label}: name the slice to compile for: pod=SLICE in the config "
                         "argument (e.g. v2_pretraining.py:small,pod=v5p-128) or --pod=SLICE.")
    started = time.time()
    where, reports = compile_config(config, slice_name, values.models, label, values.decode)
    if values.json:
      print(json.dumps(dict(config=label, slice=where, budget=hardware.MEMORY_BUDGET,
                            wall_seconds=round(time.time() - started, 1),
                            peak_host_memory=_peak_host_memory(),
                            reports=[dataclasses.asdict(r) | dict(share=r.share)
                                     for r in reports]), indent=2))
    else:
      print(f"{label} on {where}")
      for report in reports:
        print(format_report(report))
      print(f"done in {time.time() - started:.0f} s, peak host memory "
            f"{_peak_host_memory() / GIB:.1f} GiB (compiled, not run)")
    check_fits(reports, config, label)
  except (CompileError, ConfigError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == "__main__":
  # The flags are the command line's only (the module is also a library, imported beside
  # other commands' flags).
  config_flags.DEFINE_config_file(
      "config", None, "Experiment name or config file, optionally NAME:ARG (e.g. "
      "v2_pretraining:small,pod=v5p-128).", lock_config=True)
  flags.DEFINE_string("pod", None, "The TPU slice to compile for (v2-8, v3-8, v4-8, "
                      "v5litepod-1, v5litepod-N, v5p-N, v6e-1, v6e-N), when the config "
                      "argument has no pod=SLICE.")
  flags.DEFINE_list("models", None, "Models of config.models to compile (default all).")
  flags.DEFINE_bool("json", False, "Print one JSON object instead of the report.")
  flags.DEFINE_bool("decode", True, "Also compile the one-token decode step.")
  flags.mark_flags_as_required(["config"])
  from experiments import registry  # pylint: disable=import-outside-toplevel
  app.run(main, argv=registry.expand_config_names(sys.argv))
