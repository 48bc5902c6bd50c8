"""``mosaics_jax.main`` with test hooks, for the preemption tests (tests/train/test_preemption.py).

    python tests/train/signalled_main.py HOOK MAIN_FLAGS...

It prints ``finished step N`` as each step completes on the device, and HOOK sends this
process a real SIGTERM (by process id) in one phase of the run:
    none         no signal
    tokenizer    once the tokenizer is trained, before it is written (data building)
    compile      as the first step is dispatched (before it compiles)
    save         as the first checkpoint save starts
    save_twice   two signals as the first checkpoint save starts
    final_eval   as the final evaluation starts
"""

import os
import signal
import sys
import threading
import time

from absl import app

from mosaics_jax import main
from mosaics_jax.data import tokenizer
from mosaics_jax.train import checkpoint, trainer


def _terminate(times: int = 1) -> None:
  for _ in range(times):
    print(f"hook: sending SIGTERM to {os.getpid()}", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.1)  # the handler runs between bytecodes: let it run before the next signal


def _once(function, before=None, after=None):
  calls = []

  def hooked(*args, **kwargs):
    first = not calls
    calls.append(None)
    if first and before:
      before()
    result = function(*args, **kwargs)
    if first and after:
      after()
    return result

  return hooked


def _report_finished_steps(train_step):
  """Wraps a program's train_step: a thread prints ``finished step N`` when step N's outputs
  are ready on the device (``is_ready`` does not wait), so that a test knows which step runs
  without synchronising the loop, whose asynchronous dispatch is what it tests."""
  outputs = []

  def watch():
    finished = 0
    while True:
      if finished < len(outputs) and outputs[finished].is_ready():
        finished += 1
        print(f"finished step {finished}", flush=True)
      else:
        time.sleep(0.005)

  threading.Thread(target=watch, daemon=True).start()

  def observed(state, batch):
    state, step_metrics = train_step(state, batch)
    outputs.append(step_metrics["loss"])
    return state, step_metrics

  return observed


def _install(hook: str) -> None:
  build_program = trainer.build_program

  def hooked_build_program(*args, **kwargs):
    program = build_program(*args, **kwargs)
    program.train_step = _report_finished_steps(program.train_step)
    if hook == "compile":
      program.train_step = _once(program.train_step, before=_terminate)
    return program

  trainer.build_program = hooked_build_program
  if hook == "tokenizer":
    tokenizer.train_tokenizer = _once(tokenizer.train_tokenizer, after=_terminate)
  elif hook in ("save", "save_twice"):
    times = 2 if hook == "save_twice" else 1
    checkpoint.Checkpoints.save = _once(checkpoint.Checkpoints.save,
                                        before=lambda: _terminate(times))
  elif hook == "final_eval":
    evaluate = trainer.evaluate

    def hooked_evaluate(*args, **kwargs):
      if "stop" not in kwargs:  # the final evaluation; the periodic one passes stop=
        _terminate()
      return evaluate(*args, **kwargs)

    trainer.evaluate = hooked_evaluate
  elif hook not in ("none", "compile"):
    raise SystemExit(f"unknown hook {hook!r}")


if __name__ == "__main__":
  _install(sys.argv[1])
  sys.argv = [sys.argv[0], *sys.argv[2:]]
  app.run(main.main)
