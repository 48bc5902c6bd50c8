"""Ahead-of-time compiles for TPU slices on this CPU host (libtpu's compiler, nothing runs):
the splash path under sharding, on one host and two, and the compile command.

libtpu comes with the test extra; where it is missing these tests skip, except in CI
(MOSAICS_REQUIRE_LIBTPU=1), where a missing libtpu fails them.
"""

import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from experiments import registry
from mosaics_jax import compile as compile_lib
from mosaics_jax import generate, hardware
from mosaics_jax.kernels import retrieval, target
from mosaics_jax.train import sharding, trainer
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_persistent_cache():
  """Executables compiled for devices this host lacks cannot be cached for it (jax warns on
  every read); the tests' compilation cache is for CPU programs."""
  jax.config.update("jax_enable_compilation_cache", False)
  yield
  jax.config.update("jax_enable_compilation_cache", True)


def tpu_devices(topology: str, **options):
  try:
    from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
    return topologies.get_topology_desc(platform="tpu", topology_name=topology,
                                        **options).devices
  except Exception as error:  # pylint: disable=broad-except
    if os.environ.get("MOSAICS_REQUIRE_LIBTPU") == "1":
      raise
    pytest.skip(f"no TPU compiler here ({error}); pip install -e '.[tpu]'")


def tiny_config(experiment: str, mesh_shape, remat: str = "none", scan_layers: bool = False):
  """The experiment's ``tiny`` models at 128 tokens (splash reads whole blocks of 128);
  scanned, two blocks."""
  config = registry.get_config(experiment, "tiny")
  with config.unlocked():
    config.data.seq_len = 128
    config.data.batch_size = 8
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh_shape
    for section in config.models.values():
      section.update(context_length=128, remat=remat, scan_layers=scan_layers)
      if scan_layers:
        section.num_layers = 2
  return config


def abstract(tree, shardings):
  return jax.tree_util.tree_map(
      lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), tree, shardings)


MOSAIC_CALL = "tpu_custom_call"  # how a Pallas TPU kernel appears in the lowered module


def test_the_splash_kernel_compiles_batch_sharded_over_four_chips():
  """The issue's case: "Mosaic kernels cannot be automatically partitioned" before."""
  mesh = sharding.make_mesh(dict(data=4, fsdp=1, tensor=1), tpu_devices("v5e:2x2"))
  x = jax.ShapeDtypeStruct((8, 1024, 8, 128), jnp.bfloat16,
                           sharding=NamedSharding(mesh, PartitionSpec(sharding.BATCH_AXES)))
  read = lambda q, k, v: retrieval.retrieve_splash(q, k, v, skip=1, interpret=False)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    forward = jax.jit(read).lower(x, x, x)
    backward = jax.jit(jax.grad(lambda q, k, v: jnp.sum(read(q, k, v).astype(jnp.float32)),
                                argnums=(0, 1, 2))).lower(x, x, x)
  for lowered in (forward, backward):
    assert MOSAIC_CALL in lowered.as_text()
    lowered.compile()


@pytest.mark.parametrize("experiment", ["babistories_v1", "v2_pretraining"])
@pytest.mark.parametrize("topology, mesh_shape, remat, scan_layers", [
    ("v5e:2x2", (4, 1, 1), "none", False),
    ("v5e:2x2", (1, 4, 1), "block", False),
    ("v5e:2x2", (2, 1, 2), "dots", False),  # heads over tensor
    ("v5p:2x2x2", (2, 2, 2), "none", False),  # 8 chips on 2 hosts
    ("v5p:2x2x2", (2, 2, 2), "block", True),  # the splash shard_map inside the scanned body
])
def test_train_and_decode_steps_compile_for_tpu_meshes_on_the_splash_path(
    experiment, topology, mesh_shape, remat, scan_layers):
  """Failed before the splash kernel ran per shard: "Mosaic kernels cannot be automatically
  partitioned" on every multi-chip mesh."""
  devices = tpu_devices(topology)
  config = tiny_config(experiment, mesh_shape, remat, scan_layers)
  mesh = sharding.make_mesh(config.mesh, devices)
  rows = sharding.batch_sharding(mesh)
  name = "mosaic"
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    program = trainer.build_program(name, config.models[name], config,
                                    config.data.tokenizer.vocab_size, mesh)
    state = abstract(program.abstract_state, program.state_shardings)
    batch = {k: jax.ShapeDtypeStruct((8, 128), jnp.int32, sharding=rows)
             for k in ("inputs", "targets", "segment_ids")}
    with target.recording() as trace:
      lowered = program.train_step.lower(state, batch)
    assert set(trace.choices["retrieval"]) == {"splash"}, trace.choices
    assert MOSAIC_CALL in lowered.as_text()
    lowered.compile()

    cache = generate.abstract_cache(program.model, 8, 128)
    cache_shardings = generate.cache_shardings(cache, mesh)
    one = jax.ShapeDtypeStruct((8, 1), jnp.int32, sharding=rows)
    decode = jax.jit(lambda p, c, t, s: generate.decode_chunk(program.model, p, c, t, s),
                     out_shardings=(None, cache_shardings), donate_argnums=1)
    decode.lower(state.params, abstract(cache, cache_shardings), one, one).compile()


def run_compile(*args):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-m", "mosaics_jax.compile", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600, check=False)


# v3-8 takes v2's path (no bf16 Mosaic matmuls; tests/test_hardware.py); docs/scaling.md has
# its compile.
@pytest.mark.parametrize("pod, devices, splash", [
    ("v2-8", 8, "T 128, skip 1, in float32 on v2"),  # Colab's TPU v2-8: no bf16 Mosaic matmul
    ("v4-8", 4, "T 128, skip 1"),  # megacore: one device a chip
    ("v5litepod-1", 1, "T 128, skip 1"),  # Colab's v5e-1
    ("v6e-1", 1, "T 128, skip 1"),
])
def test_the_quickstart_compiles_for_every_tpu_generation(pod, devices, splash):
  """Failed before: v2/v3 rejected bf16 splash ("Unsupported matmul RHS type"), and v4 and
  single-chip slices had no topology. The slot read takes its Pallas kernel on each."""
  topology, options = hardware.tpu_topology(pod)
  assert len(tpu_devices(topology, **options)) == devices
  config = tiny_config("quickstart", (-1, 1, 1))  # dtype None: bf16 on a TPU
  with config.unlocked():
    config.models.mosaic.num_layers = 1  # the kernel choice needs one block
  where, (report,) = compile_lib.compile_config(config, pod, ["mosaic"], "test", decode=False)
  assert report.kernels["retrieval"] == {"splash": [splash]}
  assert report.kernels["slot read"] == {"pallas": ["1 x 224 slots per head"]}
  assert where.startswith(f"{pod} ({topology}: ") and "retrieval by splash" in where


def test_the_command_reports_kernels_memory_and_flops_as_json():
  tpu_devices("v5e:2x2")
  result = run_compile("--config=experiments/configs/quickstart.py:tiny", "--pod=v5litepod-4",
                       "--config.data.seq_len=128", "--config.models.mosaic.context_length=128",
                       "--models=mosaic", "--json")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout)
  assert report["slice"].startswith("v5litepod-4 (v5e:2x2: 4 chips on 1 host")
  assert report["wall_seconds"] > 0 and 2 ** 28 < report["peak_host_memory"] < 2 ** 36
  (mosaic,) = report["reports"]
  assert mosaic["kernels"]["retrieval"] == {"splash": ["T 128, skip 1"]}
  assert mosaic["kernels"]["slot read"] == {"pallas": ["1 x 224 slots per head"]}
  memory = mosaic["memory"]
  assert memory["total"] == (memory["arguments"] + memory["outputs"] - memory["aliased"] +
                             memory["temporaries"] + memory["code"]) > 0
  assert 0 < mosaic["share"] < 0.01 and mosaic["hbm"] == 16e9
  flops = mosaic["flops"]
  assert flops["kernels"] > 0 and flops["total"] == flops["xla"] + flops["kernels"]
  # 8 sequences of 128 on 4 chips; no remat: the compiled step is about our count (the
  # compiler also counts norms, softmaxes and the optimizer, and whole splash blocks).
  assert mosaic["tokens"] == 8 * 128 // 4
  assert 0.9 < flops["total"] / flops["model"] < 2.0
  assert mosaic["floors"]["tokens_per_second"] > 0
  assert mosaic["decode"]["rows"] == 8 and mosaic["decode"]["memory"]["total"] > 0
  # The roofline: per-token figures, the ridge of a v5e (197 TFLOP/s over 819 GB/s), the MFU
  # that the larger floor allows.
  roofline, floors = mosaic["roofline"], mosaic["floors"]
  assert roofline["flops_per_token"] * mosaic["tokens"] == pytest.approx(flops["total"])
  assert roofline["bytes_per_token"] * mosaic["tokens"] == pytest.approx(mosaic["bytes_accessed"])
  assert roofline["ridge"] == pytest.approx(197e12 / 819e9)
  assert roofline["bound"] == ("memory" if roofline["intensity"] < roofline["ridge"] else "compute")
  assert roofline["floor_mfu"] == pytest.approx(
      flops["model"] / (max(floors["compute_seconds"], floors["memory_seconds"]) * 197e12))
  # The top ops: ranked, within the totals over every op, named after the model's code; the
  # splash kernels are custom calls among the bytes (their FLOPs are counted apart).
  top = mosaic["top_ops"]
  for by in ("bytes", "flops"):
    values = [op[by] for op in top[by]]
    assert len(values) == 5 and values == sorted(values, reverse=True) and values[-1] > 0
    assert sum(values) <= top["total_" + by] and sum(op["share"] for op in top[by]) <= 1
  assert any("MosaicLM" in op["source"] for op in top["flops"])
  assert 0.1 < top["total_bytes"] / mosaic["bytes_accessed"] < 2


def test_flops_of_an_accumulated_step_count_every_micro_batch():
  """Cost analysis counts the accumulation loop's body once; the report adds the other
  micro-batches (depth-extrapolated micro-step compiles): the same FLOPs as one big batch."""
  devices = tpu_devices("v5e:2x2")
  flops = {}
  for accumulation in (1, 2):
    config = tiny_config("quickstart", (4, 1, 1))
    with config.unlocked():
      config.data.batch_size, config.optimizer.accumulation_steps = 16, accumulation
    mesh = sharding.make_mesh(config.mesh, devices)
    report = compile_lib.compile_model(config, "transformer", mesh,
                                       hardware.chip("v5litepod-4")[0], "test", decode=False)
    flops[accumulation] = report.flops
  assert flops[2]["model"] == flops[1]["model"]
  assert flops[2]["kernels"] == flops[1]["kernels"]
  assert abs(flops[2]["total"] / flops[1]["total"] - 1) < 0.01


@pytest.mark.slow
def test_a_scanned_stack_compiles_to_the_unrolled_memory_and_flops(experiment="v2_pretraining"):
  """Cost analysis counts the scanned block once; the report adds the other blocks (from the
  unrolled micro steps at depth 0 and 1): the FLOPs of the unrolled stack. With the
  accumulation loop around it too."""
  devices = tpu_devices("v5e:2x2")
  reports = {}
  for scan_layers in (False, True):
    config = tiny_config(experiment, (4, 1, 1), scan_layers=True)
    with config.unlocked():
      config.data.batch_size, config.optimizer.accumulation_steps = 16, 2
      config.models.mosaic.update(num_layers=3, scan_layers=scan_layers)
    mesh = sharding.make_mesh(config.mesh, devices)
    reports[scan_layers] = compile_lib.compile_model(
        config, "mosaic", mesh, hardware.chip("v5litepod-4")[0], "test", decode=False)
  unrolled, scanned = reports[False], reports[True]
  assert scanned.flops["model"] == unrolled.flops["model"]
  for key in ("xla", "kernels"):
    assert abs(scanned.flops[key] / unrolled.flops[key] - 1) < 0.05, (key, scanned.flops,
                                                                      unrolled.flops)
  assert abs(scanned.bytes_accessed / unrolled.bytes_accessed - 1) < 0.25
  assert scanned.memory["total"] < 1.5 * unrolled.memory["total"]
  # The per-op figures count each loop's trips (the layers' and the micro-batches'): the
  # scanned program's FLOPs are the unrolled one's; its bytes 1.29x (the loop's carries are
  # copied; slices of the stacked weights are counted as slices).
  assert abs(scanned.top_ops["total_flops"] / unrolled.top_ops["total_flops"] - 1) < 0.05
  assert 1 <= scanned.top_ops["total_bytes"] / unrolled.top_ops["total_bytes"] < 1.4


def test_v1s_slot_read_kernel_compiles_for_a_slice_with_its_dropout():
  """``persistent_implementation='pallas'`` on 4 chips (batch over data, heads over tensor),
  the recipe's slot dropout on: the kernels compile with the Mosaic call, and the report
  counts their FLOPs (2 matmuls forward, 5 backward, per layer) beside splash's."""
  devices = tpu_devices("v5e:2x2")
  chip = hardware.chip("v5litepod-4")[0]
  kernels = {}
  for implementation in ("recompute", "pallas"):
    config = tiny_config("quickstart", (2, 1, 2))
    with config.unlocked():
      config.models.mosaic.update(persistent_implementation=implementation,
                                  persistent_dropout=0.05)  # the v1 recipe's
    mesh = sharding.make_mesh(config.mesh, devices)
    report = compile_lib.compile_model(config, "mosaic", mesh, chip, "test", decode=False)
    assert list(report.kernels["slot read"]) == [implementation]
    kernels[implementation] = report.flops["kernels"]
  section = registry.get_config("quickstart", "tiny").models.mosaic
  rows, heads = 8 // 2, section.num_heads // 2  # per device
  slots = -(-section.persistent_slots // 128) * 128  # padded to whole lanes
  per_matmul = 2.0 * rows * heads * 128 * slots * (section.embed_dim // section.num_heads)
  assert kernels["pallas"] - kernels["recompute"] == pytest.approx(
      section.num_layers * 7 * per_matmul)


def test_a_layout_that_does_not_fit_fails_with_the_fix():
  """Over the chip's HBM the TPU compiler itself refuses; over 90% of it, our budget does."""
  tpu_devices("v5e:2x2")
  # A width of 8192: 3.2B parameters with AdamW, 51 GB, replicated on every chip (data 4).
  result = run_compile("--config=experiments/configs/quickstart.py:tiny", "--pod=v5litepod-4",
                       "--config.models.transformer.embed_dim=8192", "--models=transformer",
                       "--nodecode")
  assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
  assert "the train step of model transformer does not compile for v5litepod-4" in result.stderr
  assert "accumulation_steps" in result.stderr and "experiments/layouts.py" in result.stderr
  config = registry.get_config("quickstart", "tiny")
  nearly_full = compile_lib.Report(
      model="mosaic", parameters=1, kernels={}, hbm=16e9, estimate=1, flops={},
      bytes_accessed=0, tokens=1, floors={}, roofline={}, top_ops={}, compile_seconds={},
      decode=None,
      memory=dict(arguments=0, outputs=0, aliased=0, temporaries=0, code=0, total=15e9))
  with pytest.raises(compile_lib.CompileError, match="94% of the chip's 16 GB .*remat=block"):
    compile_lib.check_fits([nearly_full], config, "quickstart.py:tiny")


def test_bad_targets_are_named():
  with pytest.raises(compile_lib.CompileError, match="GPU slice"):
    compile_lib.compile_config(registry.get_config("quickstart", "tiny"), "h100x8")
  result = run_compile("--config=experiments/configs/quickstart.py:tiny")
  assert result.returncode == 1 and "name the slice to compile for" in result.stderr
