r"""Seconds from a SIGTERM to a saved checkpoint and a clean exit, during training.

    python benchmarks/preemption.py --batches=16,128 --record

For each batch size: the quickstart's Memory Mosaic (``experiments/configs/quickstart.py``,
one process, every device) with ``log_every`` and ``checkpoint_every`` out of the way, run by
``tests/train/signalled_main.py``, which prints ``finished step N`` as each step completes on
the device. After ``--after`` steps it gets a SIGTERM; the row gives the step time, the step
running when the signal was sent, the checkpoint step, and the seconds from the signal to the
handler's message, to the checkpoint written (the trainer's ``stopped at step`` line, printed
once the asynchronous save has finished) and to the process's exit. A spot TPU VM leaves
about 30 s between its SIGTERM and the stop; SLURM's ``--signal=B:TERM@120`` (launch/slurm.py)
120 s. Prints a table; ``--json`` and ``--record`` (docs/benchmarks.md) as in
train_throughput.py.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

import recording  # benchmarks/recording.py, beside this script

REPO = pathlib.Path(__file__).resolve().parents[1]


def measure(batch: int, after: int, num_steps: int, workdir: str) -> dict:
  command = [sys.executable, str(REPO / "tests" / "train" / "signalled_main.py"), "none",
             "--config=experiments/configs/quickstart.py", "--config.train.models=mosaic",
             f"--config.data.batch_size={batch}", f"--config.train.num_steps={num_steps}",
             "--config.optimizer.decay_steps=300", "--config.train.log_every=100000",
             "--config.train.checkpoint_every=0", "--config.train.eval_every=0", "--mode=train",
             f"--workdir={workdir}"]
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
  finished, sent, times, checkpoint_step = {}, None, {}, None
  for line in process.stdout:
    now = time.time()
    match = re.match(r"finished step (\d+)$", line.strip())
    if match:
      finished[int(match.group(1))] = now
      if int(match.group(1)) == after and sent is None:
        process.send_signal(signal.SIGTERM)
        sent = now
    elif "Received SIGTERM" in line:
      times["handler"] = now
    elif "stopped at step" in line:
      times["saved"] = now
      checkpoint_step = int(re.search(r"stopped at step (\d+)", line).group(1))
  process.wait()
  if sent is None or checkpoint_step is None:
    raise SystemExit(f"batch {batch}: no preemption measured (exit {process.returncode}); "
                     f"raise --num_steps above --after={after}.")
  step_seconds = (finished[after] - finished[2]) / (after - 2)
  return {"batch": batch, "step_seconds": step_seconds, "running_at_signal": after + 1,
          "checkpoint_step": checkpoint_step, "exit_code": process.returncode,
          "to_handler": times["handler"] - sent, "to_checkpoint": times["saved"] - sent,
          "to_exit": time.time() - sent}


def table(rows: list[dict]) -> str:
  lines = ["| batch x 128 tokens | step | running at signal | checkpoint | SIGTERM to handler | "
           "to checkpoint | to exit | exit code |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    lines.append(f"| {r['batch']} | {r['step_seconds']:.2f} s | {r['running_at_signal']} | "
                 f"{r['checkpoint_step']} | {r['to_handler']:.2f} s | {r['to_checkpoint']:.2f} s | "
                 f"{r['to_exit']:.2f} s | {r['exit_code']} |")
  return "\n".join(lines)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batches", default="16,128", help="comma-separated batch sizes")
  parser.add_argument("--after", type=int, default=10, help="signal after this many steps")
  parser.add_argument("--num_steps", type=int, default=60)
  recording.add_flags(parser)
  args = parser.parse_args(argv)
  rows = []
  for batch in (int(b) for b in args.batches.split(",")):
    with tempfile.TemporaryDirectory() as workdir:
      rows.append(measure(batch, args.after, args.num_steps, workdir))
  recording.report(rows, table(rows), args, "Preemption latency", "preemption.py",
                   argv if argv is not None else sys.argv[1:], recording.device())
  return rows


if __name__ == "__main__":
  main()
