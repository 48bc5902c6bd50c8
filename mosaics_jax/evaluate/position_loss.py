r"""Loss against position in the context window on text unlike the training corpus (v1 Fig. 8).

    python -m mosaics_jax.evaluate.position_loss --run=/tmp/stories:mosaic \
        --run=/tmp/stories:transformer \
        --text=../shared/data/simplewiki_turkcorpus/tune.8turkers.tok.simp --output=/tmp/ood

Windows of consecutive tokens (documents joined by the end-of-text token, as in training) are
read by every model; the per-token cross-entropy is averaged over windows at each position.
A model that learns in context gets better further into the window; the v1 paper finds that
Memory Mosaics overtake GPT-2 after the first few hundred positions on out-of-distribution
text. Writes ``position_loss.png`` and ``position_loss.json``; prints, for the first run
against each other, the position after which the first run's (smoothed) loss stays lower.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
import optax
from absl import flags

from mosaics_jax.data import corpus, text
from mosaics_jax.evaluate import command, plotting
from mosaics_jax.train import sharding


def consecutive_windows(stream: np.ndarray, seq_len: int, max_windows: int) -> np.ndarray:
  """Non-overlapping (N, seq_len + 1) windows from the start of a token stream."""
  count = min((len(stream) - 1) // seq_len, max_windows)
  if count < 1:
    raise corpus.DataError(f"The text has {len(stream)} tokens, fewer than one window of "
                           f"{seq_len + 1}: give more text or a smaller --seq_len.")
  return np.stack([stream[i * seq_len:i * seq_len + seq_len + 1] for i in range(count)])


def position_losses(model, params, windows: np.ndarray, batch_size: int = 8,
                    mesh=None) -> np.ndarray:
  """Mean next-token cross-entropy at each position (seq_len,) over the windows; with ``mesh``
  (``params`` on it), each batch of windows is split over it."""

  @jax.jit
  def losses(params, window):
    logits = model.apply({"params": params}, window[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(np.float32),
                                                           window[:, 1:])

  total = np.zeros(windows.shape[1] - 1)
  for start in range(0, len(windows), batch_size):
    chunk = windows[start:start + batch_size]
    if len(chunk) < batch_size:  # one compiled shape: pad with copies, count only real rows
      chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - len(chunk), axis=0)])
    rows = min(batch_size, len(windows) - start)
    chunk, = sharding.rows_on(mesh, chunk.astype(np.int32))
    total += np.asarray(jax.device_get(losses(params, chunk)))[:rows].sum(0)
  return total / len(windows)


def smooth(curve: np.ndarray, width: int) -> np.ndarray:
  """Running mean over ``width`` positions (shorter at the start)."""
  sums = np.cumsum(np.concatenate([[0.0], curve]))
  starts = np.maximum(np.arange(1, len(curve) + 1) - width, 0)
  return (sums[1:] - sums[starts]) / (np.arange(1, len(curve) + 1) - starts)


def crossover(better: np.ndarray, other: np.ndarray, width: int = 16) -> int | None:
  """The first position from which ``better``'s smoothed loss stays below ``other``'s to the
  end of the window; None if it never does."""
  below = smooth(better, width) < smooth(other, width)
  if not below[-1]:
    return None
  above = np.flatnonzero(~below)
  return int(above[-1] + 1) if len(above) else 0


def plot(curves: dict[str, np.ndarray], path: str, title: str, width: int = 16) -> None:
  plt = plotting.pyplot()

  figure, axis = plt.subplots(figsize=(7, 4.2))
  for name, curve in curves.items():
    axis.plot(np.arange(len(curve)), smooth(curve, width), label=name)
  axis.set_xlabel("position in the context window")
  axis.set_ylabel(f"cross-entropy (nats / token, running mean over {width})")
  axis.set_title(title)
  axis.grid(alpha=0.3)
  axis.legend()
  plotting.save(figure, path)


def define_flags(values: flags.FlagValues) -> None:
  command.define_common(values, output="position_loss", text=True, windows=64,
                        run_help="WORKDIR:MODEL, once per model; the first is compared with "
                        "each other.")
  flags.DEFINE_integer("seq_len", 0, "Window length; 0: the first model's context length.",
                       flag_values=values)


def run(values) -> dict:
  """Write position_loss.json and .png to ``--output``; the summary."""
  documents = corpus.read_documents(values.text, values.format)
  mesh = command.mesh(values)
  curves, streams, seq_len = {}, {}, values.seq_len
  for workdir, name, run in command.load_runs(values, reading=values.text, on=mesh):
    spec = f"{workdir}:{name}"
    seq_len = seq_len or run.model.config.context_length
    context = run.model.config.context_length
    if getattr(run.model.config, "position", None) == "learned" and seq_len > context:
      raise ValueError(f"{spec} has learned positions up to {context}; "
                       f"windows of {seq_len} need --seq_len <= that.")
    stream = text.encode_stream(documents, run.tokenizer)
    if streams and not np.array_equal(stream, next(iter(streams.values()))):
      raise ValueError(f"{spec} tokenises the text differently from {next(iter(streams))}: "
                       "per-token losses are comparable only under one tokenizer (train the "
                       "models in one workdir, or pass runs that share a tokenizer).")
    streams[spec] = stream
    curves[f"{name} ({os.path.basename(os.path.normpath(workdir))})"] = position_losses(
        run.model, run.params, consecutive_windows(stream, seq_len, values.windows), mesh=mesh)
  names = list(curves)
  summary = {"text": values.text, "seq_len": seq_len, "windows": min(
      values.windows, (len(next(iter(streams.values()))) - 1) // seq_len),
             "mean_loss": {n: float(c.mean()) for n, c in curves.items()},
             "crossover": {n: crossover(curves[names[0]], curves[n]) for n in names[1:]},
             "curves": {n: c.tolist() for n, c in curves.items()}}
  output = command.Output(values.output)
  output.write_json("position_loss.json", summary, indent=None)
  plot(curves, output.path("position_loss.png"),
       f"{os.path.basename(values.text)}, {summary['windows']} windows of {seq_len}")
  for name in names:
    print(f"{name:40s} mean loss {summary['mean_loss'][name]:.4f}")
  for name, position in summary["crossover"].items():
    print(f"{names[0]} better than {name} " +
          (f"from position {position} on" if position is not None else "not at the window's end"))
  return summary


if __name__ == "__main__":
  command.main(sys.modules[__name__])
