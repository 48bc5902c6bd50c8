r"""Train and evaluate an experiment from the command line.

    python -m mosaics_jax.main --config=quickstart --workdir=/tmp/quick
    python -m mosaics_jax.main --config=babistories_v1:cpu --workdir=DIR \
        --config.train.num_steps=500 --config.models.mosaic.num_layers=4 --mode=train
    python -m mosaics_jax.main --config=my_configs/sweep.py:lr=3e-3 --workdir=DIR

``--config=NAME:ARG`` (an experiment of ``python -m experiments.registry``) or
``--config=FILE:ARG`` passes ARG to the config's ``get_config`` (e.g. ``cpu`` for a small run);
``--config.a.b=value`` overrides any field, and a mistyped field is an error. Rerunning a
command resumes from the latest checkpoint in ``--workdir``; a SIGTERM or SIGINT saves and
exits 0 (train/preemption.py).

Multi-host: on TPU pods and under SLURM, ``jax.distributed`` is initialised from the
environment; elsewhere pass ``--coordinator_address``, ``--num_processes`` and
``--process_id`` to every process.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from mosaics_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment name (python -m experiments.registry lists them) or config file, "
    "optionally NAME:ARG or FILE:ARG (e.g. quickstart:tiny).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
_MODE = flags.DEFINE_enum("mode", "train_and_eval", ["train", "eval", "train_and_eval"],
                          "train: train only; eval: evaluate the latest checkpoints; both.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")
flags.mark_flags_as_required(["config", "workdir"])


def _cluster_environment() -> bool:
  """True on a multi-host TPU slice or a multi-task SLURM job (jax.distributed auto-detects)."""
  tpu_hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return ("," in tpu_hosts or int(os.environ.get("SLURM_NTASKS", "1")) > 1
          or "JAX_COORDINATOR_ADDRESS" in os.environ)


def initialize_distributed() -> None:
  import jax  # pylint: disable=import-outside-toplevel

  # Gloo lets several CPU processes run collectives (tests, laptops); accelerators ignore it.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif _cluster_environment():
    jax.distributed.initialize()


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.quiet_logging()
  initialize_distributed()
  # Imported after jax.distributed.initialize, which must precede any backend use.
  from mosaics_jax.data import DataError  # pylint: disable=import-outside-toplevel
  from mosaics_jax.train import checkpoint, sharding, trainer  # pylint: disable=import-outside-toplevel
  from mosaics_jax.train.preemption import Preempted  # pylint: disable=import-outside-toplevel
  from mosaics_jax.train.config import ConfigError  # pylint: disable=import-outside-toplevel

  from mosaics_jax.evaluate import moons  # pylint: disable=import-outside-toplevel

  runners = {"language_model": lambda config, workdir: trainer.train_and_evaluate(
      config, workdir, _MODE.value), "three_moons": moons.run}
  runner = _CONFIG.value.get("runner", "language_model")
  try:
    if runner not in runners:
      raise ConfigError(f"config.runner={runner!r}: choose one of {sorted(runners)}.")
    runners[runner](_CONFIG.value, _WORKDIR.value)
  except (ConfigError, DataError, checkpoint.CheckpointError, sharding.MeshError,
          trainer.TrainingError) as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(1)
  except Preempted as stopped:
    # Outside the training steps: nothing new to save, and every file is written whole.
    print(f"Received {stopped.signal_name} outside the training steps: stopped with nothing "
          "half-written; rerun the same command to continue.", flush=True)
    sys.exit(0)


if __name__ == "__main__":
  from experiments import registry  # pylint: disable=import-outside-toplevel
  app.run(main, argv=registry.expand_config_names(sys.argv))
