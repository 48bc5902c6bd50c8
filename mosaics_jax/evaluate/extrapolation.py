r"""Loss at 1x to 8x the training length, with and without v2's long-term memory (v2 paper,
section 5: the ablations and the extrapolation without fine-tuning).

    python -m mosaics_jax.evaluate.extrapolation --run=/tmp/v2:mosaic --run=/tmp/v2:mosaic_fixed_m \
        --run=/tmp/v2:transformer --run=/tmp/v2:transformer_long_short \
        --text=package:tinystories/validation.txt --multiples=1,2,4,8 --output=/tmp/v2/extrapolation

For each run and each multiple k, windows of k x the training context are read (documents
joined by the end-of-text token, no resets); reported: the mean loss over the window, and over
the positions past the training context (where a model extrapolates). Memory Mosaics v2 also
run without their long-term memory (its projection removed, the rest unchanged): the gap is
what the long-term memory contributes at each length; at 1x, the mean loss is the held-out
in-distribution ("persistent knowledge") side. Learned positions stop at 1x. Writes
``extrapolation.md``, ``extrapolation.json`` and ``extrapolation.png``.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
from absl import flags

from mosaics_jax import models
from mosaics_jax.data import corpus, text
from mosaics_jax.evaluate import command, plotting, position_loss


def without_long_term(model, params):
  """The same Memory Mosaic v2 with its long-term memories removed (parameters dropped)."""
  config = model.config
  if getattr(config, "version", None) != 2 or not config.long_term_memory:
    raise ValueError(f"{type(model).__name__} has no v2 long-term memory to remove.")

  def drop(tree):
    return {k: drop(v) for k, v in tree.items() if k != "long_term"} if isinstance(
        tree, dict) else tree

  return models.build_model(dataclasses.replace(config, long_term_memory=False)), drop(params)


def length_losses(model, params, stream: np.ndarray, multiples, max_windows: int,
                  mesh=None) -> dict:
  """{k: {'loss', 'beyond', 'windows'}} for windows of k x the model's training context."""
  context = model.config.context_length
  out = {}
  for multiple in multiples:
    windows = position_loss.consecutive_windows(stream, multiple * context, max_windows)
    curve = position_loss.position_losses(model, params, windows, batch_size=4, mesh=mesh)
    out[multiple] = {"loss": float(curve.mean()),
                     "beyond": float(curve[context:].mean()) if multiple > 1 else None,
                     "windows": len(windows)}
  return out


def table(results: dict[str, dict]) -> str:
  multiples = sorted({k for rows in results.values() for k in rows})
  lines = ["| model | " + " | ".join(f"{k}x loss" for k in multiples) + " | " +
           " | ".join(f"{k}x past training length" for k in multiples if k > 1) + " |",
           "| --- |" + " ---: |" * (2 * len(multiples) - (1 in multiples))]
  for name, rows in results.items():
    loss = [f"{rows[k]['loss']:.4f}" if k in rows else "-" for k in multiples]
    beyond = [f"{rows[k]['beyond']:.4f}" if k in rows else "-" for k in multiples if k > 1]
    lines.append(f"| {name} | " + " | ".join(loss + beyond) + " |")
  return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], path: str) -> None:
  plt = plotting.pyplot()
  figure, axis = plt.subplots(figsize=(6.5, 4.2))
  for name, rows in results.items():
    multiples = sorted(rows)
    axis.plot(multiples, [rows[k]["loss"] for k in multiples], "o-", label=name)
  axis.set_xscale("log", base=2)
  axis.set_xlabel("evaluation length / training context")
  axis.set_ylabel("cross-entropy (nats / token)")
  axis.grid(alpha=0.3)
  axis.legend(fontsize=8)
  plotting.save(figure, path)


def define_flags(values: flags.FlagValues) -> None:
  command.define_common(values, output="extrapolation", text=True, multiples="1,2,4,8",
                        windows=16)


def run(values) -> dict:
  """Write extrapolation.md, .json and .png to ``--output``; {model: {k: losses}}."""
  documents = corpus.read_documents(values.text, values.format)
  multiples = command.multiples(values)
  mesh = command.mesh(values)
  results = {}
  for _, name, run in command.load_runs(values, reading=values.text, on=mesh):
    stream = text.encode_stream(documents, run.tokenizer)
    reachable = ([1] if getattr(run.model.config, "position", None) == "learned" else multiples)
    results[name] = length_losses(run.model, run.params, stream, reachable, values.windows,
                                  mesh)
    if getattr(run.model.config, "version", None) == 2 and run.model.config.long_term_memory:
      ablated, params = without_long_term(run.model, run.params)
      results[f"{name} without long-term memory"] = length_losses(ablated, params, stream,
                                                                  multiples, values.windows,
                                                                  mesh)
  markdown = table(results)
  output = command.Output(values.output)
  output.write_text("extrapolation.md", f"# Loss by evaluation length\n\n{values.text}\n\n"
                    f"{markdown}")
  output.write_json("extrapolation.json",
                    {name: {str(k): v for k, v in rows.items()} for name, rows in results.items()})
  plot(results, output.path("extrapolation.png"))
  print(markdown)
  return results


if __name__ == "__main__":
  command.main(sys.modules[__name__])
