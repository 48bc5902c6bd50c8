r"""Seconds from process start to the first training step, cold and restarted.

    python benchmarks/restart.py --record
    python benchmarks/restart.py --processes=2 --record   # a 2-process run (gloo, 1 CPU each)

Runs ``python -m mosaics_jax.main --config=quickstart`` for ``--steps`` steps in a fresh
workdir (cold: nothing compiled), then again to twice as many steps in the same workdir (a
restart, as after a preemption: it resumes from the checkpoint and finds its executables in
``WORKDIR/compilation_cache``, train.compilation_cache_dir). No ``JAX_*`` variable is passed
on, so the cache is the workdir's. Each row: seconds until the trainer's first-step line, and
the compile time that line reports, and how many entries the run added to the cache (none on
a restart whose every executable was found there). With ``--processes=N`` the run is N processes of one CPU
device each (``--coordinator_address`` on localhost), timed until every process's first step;
they share the workdir and so its cache, as the hosts of a pod share a bucket workdir.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import time

import recording  # benchmarks/recording.py, beside this script

REPO = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _entries(cache: pathlib.Path) -> set[str]:
  return {p.name for p in cache.iterdir()} if cache.is_dir() else set()


def first_step(workdir: str, steps: int, finish: bool, processes: int = 1) -> tuple[float, float]:
  """(seconds until every process's first step, the largest compile seconds reported);
  ``finish``: let the run end (it saves its checkpoint), else stop it there."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  env.update(JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"), PYTHONUNBUFFERED="1")
  command = [sys.executable, "-m", "mosaics_jax.main", "--config=quickstart",
             f"--workdir={workdir}", f"--config.train.num_steps={steps}",
             "--config.optimizer.decay_steps=300", "--config.train.models=mosaic"]
  if processes > 1:
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    command += [f"--coordinator_address=127.0.0.1:{_free_port()}",
                f"--num_processes={processes}"]
  started = time.time()
  runs = [subprocess.Popen(command + ([f"--process_id={i}"] if processes > 1 else []),
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True) for i in range(processes)]
  measured = []
  try:
    for process in runs:
      for line in process.stdout:
        found = re.search(r"first step, compiled in ([\d.]+)s", line)
        if found:
          measured.append((time.time() - started, float(found.group(1))))
          break
    if finish:
      for process in runs:
        process.communicate()
  finally:
    for process in runs:
      if not finish:
        process.kill()
      process.wait()
  if not measured:
    raise RuntimeError("the run printed no first step")
  return max(m[0] for m in measured), max(m[1] for m in measured)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--processes", type=int, default=1)
  recording.add_flags(parser)
  args = parser.parse_args(argv)
  rows = []
  with tempfile.TemporaryDirectory() as workdir:
    cache = pathlib.Path(workdir) / "compilation_cache"
    for label, steps in (("cold", args.steps), ("restarted", 2 * args.steps)):
      before = _entries(cache)
      seconds, compiled = first_step(workdir, steps, label == "cold", args.processes)
      rows.append({"start": label, "processes": args.processes,
                   "seconds_to_first_step": seconds, "compile_seconds": compiled,
                   "cache_entries_added": len(_entries(cache) - before)})
  table = "\n".join(["| processes | start | s to first step | first step's compile | "
                      "cache entries added |", "| ---: | --- | ---: | ---: | ---: |"] +
                    [f"| {r['processes']} | {r['start']} | {r['seconds_to_first_step']:.1f} | "
                     f"{r['compile_seconds']:.1f} | {r['cache_entries_added']} |" for r in rows])
  recording.report(rows, table, args, "Restart: time to the first step", "restart.py",
                   argv if argv is not None else sys.argv[1:], recording.device())
  return rows


if __name__ == "__main__":
  main()
