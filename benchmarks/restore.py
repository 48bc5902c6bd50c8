r"""Peak host memory of restoring a run for inference: parameters only, against the whole state.

    python benchmarks/restore.py --record

Trains ``quickstart:tiny`` widened (``--embed_dim``, ``--layers``, ``--slots``) for one step
into a temporary workdir, so that its checkpoint holds the parameters and both AdamW moments.
Then, each in a fresh process after its imports: ``checkpoint.load_run`` (parameters only,
what generation and the evaluations use), and orbax restoring the whole training state as it
lies on disk (what ``load_run`` did before issue 17). Each row: resident memory just before
the restore, its peak during it (``/proc/self/statm`` sampled every 2 ms) and the difference,
also in float32 copies of the parameters.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import recording  # benchmarks/recording.py, beside this script

REPO = pathlib.Path(__file__).resolve().parents[1]

MEASURE = r"""
import json, os, sys, threading, time
import jax
import orbax.checkpoint as ocp
from mosaics_jax import models
from mosaics_jax.train import checkpoint
workdir, what = sys.argv[1], sys.argv[2]
run_dir = f"{workdir}/mosaic"
with open(f"{run_dir}/model_config.json") as f:
  models.build_model(models.config_from_dict(json.load(f)))
page = os.sysconf("SC_PAGE_SIZE")
def resident():
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * page
before, peak, done = resident(), [0], threading.Event()
def watch():
  while not done.is_set():
    peak[0] = max(peak[0], resident())
    time.sleep(0.002)
watcher = threading.Thread(target=watch)
watcher.start()
if what == "parameters":
  jax.block_until_ready(checkpoint.load_run(workdir, "mosaic").params)
else:
  step = checkpoint.Checkpoints(f"{run_dir}/checkpoints").latest_step()
  jax.block_until_ready(ocp.StandardCheckpointer().restore(f"{run_dir}/checkpoints/{step}/state"))
done.set()
watcher.join()
print(json.dumps({"before": before, "peak": max(peak[0], resident())}))
"""


def _peak(workdir: str, what: str) -> dict:
  """Resident bytes of a fresh process before the restore, and its peak during it."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  out = subprocess.run([sys.executable, "-c", MEASURE, workdir, what], cwd=REPO, env=env,
                       capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--embed_dim", type=int, default=1536)
  parser.add_argument("--layers", type=int, default=8)
  parser.add_argument("--slots", type=int, default=4096)
  recording.add_flags(parser)
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as workdir:
    model = "--config.models.mosaic."
    subprocess.run([sys.executable, "-m", "mosaics_jax.main", "--config=quickstart:tiny",
                    f"--workdir={workdir}", "--mode=train", "--config.train.num_steps=1",
                    "--config.train.models=mosaic", "--config.optimizer.decay_steps=10",
                    f"{model}embed_dim={args.embed_dim}",
                    f"{model}num_layers={args.layers}", f"{model}persistent_slots={args.slots}"],
                   cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
                   check=True, capture_output=True)
    sys.path.insert(0, str(REPO))
    from mosaics_jax.train import checkpoint  # pylint: disable=import-outside-toplevel
    import jax  # pylint: disable=import-outside-toplevel
    run = checkpoint.load_run(workdir, "mosaic")
    params = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(run.params))
    rows = []
    for what in ("parameters", "whole state"):
      measured = _peak(workdir, what)
      added = measured["peak"] - measured["before"]
      rows.append({"restore": what, "parameter_bytes": params, "before_bytes": measured["before"],
                   "peak_bytes": measured["peak"], "added_bytes": added,
                   "added_in_parameter_copies": added / params})
  gib = 2**30
  table = "\n".join(
      [f"Parameters: {params // 4:,} float32 ({params / gib:.2f} GiB).", "",
       "| restore | resident before | peak during | added | in parameter copies |",
       "| --- | ---: | ---: | ---: | ---: |"] +
      [f"| {r['restore']} | {r['before_bytes'] / gib:.2f} GiB | {r['peak_bytes'] / gib:.2f} GiB "
       f"| {r['added_bytes'] / gib:.2f} GiB | {r['added_in_parameter_copies']:.2f} |"
       for r in rows])
  recording.report(rows, table, args, "Restore for inference: peak host memory", "restore.py",
                   argv if argv is not None else sys.argv[1:], recording.device())
  return rows


if __name__ == "__main__":
  main()
