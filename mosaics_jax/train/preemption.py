"""Preemption: a SIGTERM or SIGINT ends a run cleanly, in whatever phase it is.

A spot or preemptible TPU VM gets a SIGTERM about 30 s before it is stopped; SLURM's
``--signal=B:TERM@120`` gives two minutes (docs/training.md, Preemption, has the measured
latencies and what each launcher delivers).

* **During the training steps** a signal only sets a flag, which the loop reads after every
  step. The loop never dispatches more than one step beyond a step it has seen finish, so the
  Python handler (which runs only between bytecodes, that is once a blocking wait returns) runs
  within one step, and the checkpoint is the step after the one that was running.
* **While a checkpoint is saved** (the asynchronous write included) the signal waits for it.
* **Anywhere else** (data and tokenizer, building or restoring the program, the final
  evaluation, samples and report) there is nothing new to save: the signal raises ``Preempted``
  at the next bytecode (after the C++ call in progress, e.g. a tokenizer training, returns).
  Every file is written whole (``storage.write_bytes``), so nothing is half-written, and
  ``mosaics_jax.main`` exits 0; rerunning the command continues.
* **A second signal** gets the handler that was there before (SIGTERM: the process ends at once).
* **Several processes**: ``jax.distributed.initialize`` starts JAX's preemption service, whose
  own SIGTERM handler on each host tells every host through the coordination service;
  ``reached_preemption_sync_point`` then turns true at the same step everywhere. No Python
  handler is installed (it would replace that one), so a notice outside the steps takes effect
  at the first step after it.
"""

from __future__ import annotations

import contextlib
import signal
import threading

import jax

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(BaseException):
  """A signal outside the training steps. A BaseException, like KeyboardInterrupt, so that no
  ``except Exception`` on the way (e.g. around a checkpoint restore) takes it for an error."""

  def __init__(self, signal_name: str):
    super().__init__(signal_name)
    self.signal_name = signal_name


class Preemption:
  """``with Preemption() as preemption:`` around a whole run; ``with preemption.deferred():``
  around the steps and saves; ``preemption.requested(step)`` once per step."""

  def __init__(self, log=print):
    self.signal_name: str | None = None  # the first signal received (single process)
    self._log = log
    self._deferring = 0
    self._previous = {}

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      if signal.getsignal(sig) == self._handle:  # not already given back by a first signal
        signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    previous = self._previous.get(signum)
    signal.signal(signum, signal.SIG_DFL if previous is None else previous)  # a second one kills
    self.signal_name = self.signal_name or name
    if not self._deferring:
      raise Preempted(name)
    self._log(f"Received {name}: saving a checkpoint after the step in progress.")

  @contextlib.contextmanager
  def deferred(self):
    """Signals only set the flag: the training steps and the checkpoint saves run on."""
    self._deferring += 1
    try:
      yield
    finally:
      self._deferring -= 1

  @property
  def received(self) -> bool:
    """Whether this process got a signal (always False with several processes)."""
    return self.signal_name is not None

  def requested(self, step: int) -> bool:
    """Whether to save and stop after ``step``: the same answer on every host."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      return multihost_utils.reached_preemption_sync_point(step)
    return self.received
