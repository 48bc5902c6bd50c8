"""Preemption, in subprocesses sent real signals: how soon a SIGTERM is honoured during the
steps, what it does in every other phase, and that a stopped or killed run resumes bit-exactly.

The runs use one CPU device (no fake devices): there, as on an accelerator, the loop's
dispatch can run ahead of the computation, which is what the step bound tests.
"""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from mosaics_jax.train import checkpoint
from tests.train.test_trainer import final_params

REPO = pathlib.Path(__file__).resolve().parents[2]
DRIVER = str(REPO / "tests" / "train" / "signalled_main.py")
TINY = ["--config=experiments/configs/quickstart.py:tiny", "--config.train.models=mosaic",
        "--config.optimizer.decay_steps=40", "--config.train.eval_every=0"]


def _env():
  env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return env


def _start(hook, workdir, *flags):
  return subprocess.Popen([sys.executable, DRIVER, hook, *TINY, f"--workdir={workdir}", *flags],
                          cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _run(hook, workdir, *flags):
  process = _start(hook, workdir, *flags)
  output = process.communicate(timeout=300)[0]
  return process.returncode, output


def _read_until(process, marker, timeout=240):
  """The process's output up to the line with ``marker``; kills it after ``timeout`` s."""
  timer = threading.Timer(timeout, process.kill)
  timer.start()
  lines = []
  try:
    for line in process.stdout:
      lines.append(line)
      if marker in line:
        return "".join(lines)
  finally:
    timer.cancel()
  raise AssertionError(f"{marker!r} never printed:\n{''.join(lines)}")


def _latest(workdir):
  manager = checkpoint.Checkpoints(str(pathlib.Path(workdir) / "mosaic" / "checkpoints"))
  step = manager.latest_step()
  manager.close()
  return step


def _partial_files(workdir):
  return [str(p) for p in pathlib.Path(workdir).rglob("*") if ".tmp" in p.name]


@pytest.mark.slow
def test_sigterm_during_steps_saves_within_two_steps_and_sigkill_resumes_bit_exactly(tmp_path):
  # Steps of about 0.2 s on 2 cores; no periodic sync (log, evaluation, save) near the signal.
  run = ["--config.train.num_steps=16", "--config.data.batch_size=64", "--mode=train",
         "--config.train.log_every=1000"]
  code, output = _run("none", tmp_path / "straight", *run, "--config.train.checkpoint_every=0")
  assert code == 0, output

  process = _start("none", tmp_path / "stopped", *run, "--config.train.checkpoint_every=0")
  _read_until(process, "finished step 3\n")
  process.send_signal(signal.SIGTERM)  # step 4 is running (or about to)
  output = process.communicate(timeout=120)[0]
  assert process.returncode == 0, output
  assert "Received SIGTERM" in output and "rerun the same command" in output
  stopped_at = _latest(tmp_path / "stopped")
  assert 4 <= stopped_at <= 6, output  # the step running, plus at most two
  code, output = _run("none", tmp_path / "stopped", *run, "--config.train.checkpoint_every=0")
  assert code == 0 and f"resumed from step {stopped_at}" in output, output

  process = _start("none", tmp_path / "killed", *run, "--config.train.checkpoint_every=4")
  _read_until(process, "finished step 10\n")
  process.kill()  # SIGKILL: no handler runs, a save may be half written
  process.wait()
  code, output = _run("none", tmp_path / "killed", *run, "--config.train.checkpoint_every=4")
  assert code == 0 and "resumed from step" in output, output

  straight = final_params(tmp_path / "straight" / "mosaic")
  for name in ("stopped", "killed"):
    resumed = final_params(tmp_path / name / "mosaic")
    assert straight[0] == resumed[0] == 16
    jax.tree_util.tree_map(np.testing.assert_array_equal, straight[1], resumed[1])


PHASES = {
    # hook: (extra flags, expected return code, expected checkpoint, text in the output)
    "tokenizer": ([], 0, None, "SIGTERM outside the training steps"),
    "compile": ([], 0, 1, "stopped at step 1 with a checkpoint"),
    "save": (["--config.train.checkpoint_every=2"], 0, 2, "stopped at step 2 with a checkpoint"),
    "save_twice": (["--config.train.checkpoint_every=2"], -signal.SIGTERM, None, "Received"),
    "final_eval": (["--mode=train_and_eval"], 0, 4, "SIGTERM outside the training steps"),
}


@pytest.mark.slow
@pytest.mark.parametrize("hook", sorted(PHASES))
def test_a_signal_in_each_phase_ends_the_run_cleanly(tmp_path, hook):
  flags, expected_code, expected_step, expected_text = PHASES[hook]
  code, output = _run(hook, tmp_path, "--config.train.num_steps=4", "--mode=train", *flags)
  assert code == expected_code and expected_text in output, output
  assert "hook: sending SIGTERM" in output
  assert _latest(tmp_path) == expected_step, output
  if hook == "tokenizer":  # stopped before the tokenizer was written: nothing half-written
    assert not list((tmp_path / "data").glob("tokenizer-*")) and not _partial_files(tmp_path)
  if hook in ("tokenizer", "final_eval"):  # the same command continues where it stopped
    assert not (tmp_path / "report.md").exists()
    code, output = _run("none", tmp_path, "--config.train.num_steps=4", *flags)
    assert code == 0 and (tmp_path / "report.md").exists(), output
    assert _latest(tmp_path) == 4 and not _partial_files(tmp_path)


@pytest.mark.slow
def test_two_processes_save_the_same_step_when_one_gets_sigterm(tmp_path):
  """JAX's preemption service: the notice of one host reaches the other, and both save the
  same step within the same bound and exit 0."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  run = ["--config.train.num_steps=40", "--config.data.batch_size=64", "--mode=train",
         "--config.train.log_every=1000", "--config.train.checkpoint_every=0",
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
  processes = [_start("none", tmp_path, *run, f"--process_id={i}") for i in range(2)]
  second = []
  reader = threading.Thread(target=lambda: second.extend(processes[1].stdout))
  reader.start()
  first = _read_until(processes[0], "finished step 3\n")
  processes[1].send_signal(signal.SIGTERM)  # the other host only
  first += processes[0].communicate(timeout=120)[0]
  processes[1].wait(timeout=120)
  reader.join()
  assert [p.returncode for p in processes] == [0, 0], first + "".join(second)
  stopped_at = _latest(tmp_path)
  assert 4 <= stopped_at <= 6 and f"stopped at step {stopped_at}" in first, first
