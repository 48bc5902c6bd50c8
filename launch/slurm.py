r"""GPU clusters under SLURM: one batch script, one process per node driving all its GPUs.

    python launch/slurm.py --nodes=4 --gpus_per_node=8 --partition=h100 --time=24:00:00 \
        -- --config=experiments/configs/babistories_v1.py --workdir=/shared/runs/mm \
        --config.mesh.data=4 --config.mesh.fsdp=8
    python launch/slurm.py --nodes=1 ... --dry-run      # print the script, submit nothing

Writes ``WORKDIR/slurm/job.sbatch`` and submits it with ``sbatch`` (``--dry-run`` prints it
instead). ``srun`` starts ``python -m mosaics_jax.main`` once per node; ``jax.distributed``
reads the SLURM variables (``SLURM_NTASKS`` > 1) and finds the other nodes, and each node reads
its slice of the data. The job asks for ``SIGTERM`` two minutes before its time limit: the
trainer saves a checkpoint and exits 0, and ``--requeue`` (on by default) puts the job back in
the queue, where it resumes from that checkpoint. The workdir must be on a filesystem every
node mounts. On one machine with several GPUs no launcher is needed: ``python -m
mosaics_jax.main ...`` uses every local GPU.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){1,2}$")


class LaunchError(SystemExit):
  """Bad arguments: the message names the problem and the fix; exits non-zero."""

  def __init__(self, message: str):
    super().__init__(f"launch/slurm.py: {message}")


def workdir_of(args: list[str], nodes: int = 1) -> str:
  workdir = next((x.split("=", 1)[1] for x in args if x.startswith("--workdir=")), "")
  if not workdir:
    raise LaunchError("no --workdir=DIR among the training arguments (after '--'): give a "
                      "directory on a filesystem that every node mounts.")
  if "://" in workdir:
    raise LaunchError(f"--workdir={workdir}: the job script and SLURM's logs go to WORKDIR/slurm, "
                      "which sbatch writes through the filesystem; give a path on a filesystem "
                      "every node mounts.")
  if nodes > 1 and workdir.startswith("/tmp"):
    raise LaunchError(f"--workdir={workdir} is node-local; the {nodes} nodes must share "
                      "checkpoints: give a path on a filesystem every node mounts.")
  return workdir


def batch_script(a) -> str:
  """The sbatch script for the parsed arguments ``a``."""
  if a.nodes < 1 or a.gpus_per_node < 1:
    raise LaunchError(f"--nodes={a.nodes} and --gpus_per_node={a.gpus_per_node} must be >= 1.")
  if not TIME.match(a.time):
    raise LaunchError(f"--time={a.time!r} is not a SLURM time such as 24:00:00 or 2-00:00:00.")
  logs = job_dir(workdir_of(a.args, a.nodes))
  options = [f"--job-name={a.job_name}", f"--nodes={a.nodes}", "--ntasks-per-node=1",
             f"--gpus-per-node={a.gpus_per_node}", f"--cpus-per-task={a.cpus_per_task}",
             f"--time={a.time}", f"--output={logs}/%x-%j.out", "--signal=B:TERM@120"]
  options += [f"--partition={a.partition}"] if a.partition else []
  options += [f"--account={a.account}"] if a.account else []
  options += ["--requeue"] if a.requeue else []
  program = shlex.join([a.python, "-m", "mosaics_jax.main", *a.args])
  on_term = "kill -TERM $run; wait $run" + ("; scontrol requeue $SLURM_JOB_ID" if a.requeue
                                            else "")
  lines = ["#!/bin/bash", *(f"#SBATCH {o}" for o in options), "",
           "# One process per node drives its GPUs; jax.distributed reads the SLURM variables.",
           "set -uo pipefail", f"cd {shlex.quote(str(ROOT))} || exit 1",
           *(f"export {shlex.quote(e)}" for e in a.env),
           f"srun --kill-on-bad-exit=1 {program} &", "run=$!",
           "# Two minutes before the time limit: the trainer checkpoints on TERM and exits 0,",
           "# then the job goes back to the queue and resumes from that checkpoint.",
           f"trap '{on_term}' TERM", "wait $run"]
  return "\n".join(lines) + "\n"


def job_dir(workdir: str) -> str:
  """Where the script and the logs go."""
  return f"{workdir}/slurm"


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--nodes", type=int, default=1)
  p.add_argument("--gpus_per_node", type=int, default=8)
  p.add_argument("--cpus_per_task", type=int, default=32)
  p.add_argument("--time", default="24:00:00", help="SLURM time limit")
  p.add_argument("--partition", default="")
  p.add_argument("--account", default="")
  p.add_argument("--job_name", default="mosaics_jax")
  p.add_argument("--python", default=sys.executable, help="the Python with mosaics_jax installed")
  p.add_argument("--env", action="append", default=[], help="VAR=value, repeatable")
  p.add_argument("--no_requeue", dest="requeue", action="store_false")
  p.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
  p.add_argument("args", nargs=argparse.REMAINDER,
                 help="after '--': the arguments of python -m mosaics_jax.main")
  return p


def main(argv=None) -> str:
  a = parser().parse_args(argv)
  a.args = a.args[1:] if a.args[:1] == ["--"] else a.args
  script = batch_script(a)
  if a.dry_run:
    print(script, end="")
    return script
  path = pathlib.Path(job_dir(workdir_of(a.args))) / "job.sbatch"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(script)
  os.chmod(path, 0o755)
  print(f"wrote {path}", flush=True)
  subprocess.run(["sbatch", str(path)], check=True)
  return script


if __name__ == "__main__":
  main(sys.argv[1:])
