r"""Seconds from process start to the first training step, cold and restarted.

    python benchmarks/restart.py --record

Runs ``python -m mosaics_jax.main --config=quickstart`` for ``--steps`` steps in a fresh
workdir (cold: nothing compiled), then again to twice as many steps in the same workdir (a
restart, as after a preemption: it resumes from the checkpoint and finds its executables in
``WORKDIR/compilation_cache``, train.compilation_cache_dir). No ``JAX_*`` variable is passed
on, so the cache is the workdir's. Each row: seconds until the trainer's first-step line, and
the compile time that line reports.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import recording  # benchmarks/recording.py, beside this script

REPO = pathlib.Path(__file__).resolve().parents[1]


def first_step(workdir: str, steps: int, finish: bool) -> tuple[float, float]:
  """(seconds to the first step, its compile seconds); ``finish``: let the run end (it
  saves its checkpoint), else stop it there."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  env.update(JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"), PYTHONUNBUFFERED="1")
  started = time.time()
  process = subprocess.Popen(
      [sys.executable, "-m", "mosaics_jax.main", "--config=quickstart", f"--workdir={workdir}",
       f"--config.train.num_steps={steps}", "--config.optimizer.decay_steps=300",
       "--config.train.models=mosaic"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  measured = None
  try:
    for line in process.stdout:
      found = re.search(r"first step, compiled in ([\d.]+)s", line)
      if found and measured is None:
        measured = time.time() - started, float(found.group(1))
        if not finish:
          break
  finally:
    if not finish:
      process.kill()
    process.wait()
  if measured is None:
    raise RuntimeError("the run printed no first step")
  return measured


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=20)
  recording.add_flags(parser)
  args = parser.parse_args(argv)
  rows = []
  with tempfile.TemporaryDirectory() as workdir:
    for label, steps in (("cold", args.steps), ("restarted", 2 * args.steps)):
      seconds, compiled = first_step(workdir, steps, finish=label == "cold")
      rows.append({"start": label, "seconds_to_first_step": seconds, "compile_seconds": compiled})
  table = "\n".join(["| start | s to first step | first step's compile |", "| --- | ---: | ---: |"] +
                    [f"| {r['start']} | {r['seconds_to_first_step']:.1f} | "
                     f"{r['compile_seconds']:.1f} |" for r in rows])
  recording.report(rows, table, args, "Restart: time to the first step", "restart.py",
                   argv if argv is not None else sys.argv[1:], recording.device())
  return rows


if __name__ == "__main__":
  main()
