"""One process of the multi-process test (not collected by pytest).

    python tests/train/multihost_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID DEVICES WORKDIR

Trains quickstart:tiny (Memory Mosaic only) through ``jax.distributed`` and prints one JSON
line: the validation loss and a checksum of the final parameters, gathered on every process.
"""

import json
import os
import pathlib
import sys

coordinator, num_processes, process_id, devices, workdir = sys.argv[1:6]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
if int(num_processes) > 1:
  jax.distributed.initialize(coordinator, int(num_processes), int(process_id))

from jax.experimental import multihost_utils  # noqa: E402

from experiments.configs import quickstart  # noqa: E402
from mosaics_jax.train import trainer  # noqa: E402

config = quickstart.get_config("tiny")
with config.unlocked():
  config.train.models = "mosaic"
  config.train.num_steps = 6
  config.train.eval_every = 3
  config.train.checkpoint_every = 3
  config.optimizer.eps = 1e-6  # see tests/train/test_sharding.py
result = trainer.train_and_evaluate(config, workdir)["mosaic"]
params = multihost_utils.process_allgather(result.params, tiled=True)
leaves = [np.asarray(leaf, np.float64) for leaf in jax.tree_util.tree_leaves(params)]
print("RESULT " + json.dumps({
    "process": jax.process_index(), "processes": jax.process_count(),
    "devices": jax.device_count(), "step": result.step,
    "validation_loss": result.validation_loss,
    "checksum": float(sum(np.sum(leaf * (1 + np.arange(leaf.size).reshape(leaf.shape) % 7))
                          for leaf in leaves)),
    "samples": result.samples}), flush=True)
