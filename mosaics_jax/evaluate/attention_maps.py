r"""Where the last token looks (v1 Figures 14-16): its average retrieval / attention weight over
earlier positions, per memory and head, at the training context and beyond it.

    python -m mosaics_jax.evaluate.attention_maps --run=/tmp/stories:mosaic \
        --run=/tmp/stories:transformer --run=/tmp/stories:transformer_rope \
        --run=/tmp/stories:transformer_alibi --text=package:tinystories/validation.txt \
        --multiples=1,3 --output=/tmp/attention

For each run and each context length (``--multiples`` x the model's training context; learned
positions cannot go past 1x), windows of held-out text are read and the weights of the last
query over every position are averaged over windows: one heatmap per memory (rows: heads,
columns: distance from the last token, log colour scale). For v1 Memory Mosaics it also relates
each head's leaky-average coefficient lambda = exp(-10 |leak|) to the width of its recent-token
peak (the number of most recent positions whose weight stays above half the peak's maximum):
the paper observes that heads with slower leaky averages spread over more recent tokens.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
from absl import flags

from mosaics_jax.data import corpus, text
from mosaics_jax.evaluate import command, plotting, position_loss
from mosaics_jax.layers.features import EXP_PARAM_SCALE
from mosaics_jax.models import stack
from mosaics_jax.train import sharding

SOWN = "last_query_weights"
RECENT = 64  # positions searched for the recent-token peak


def last_token_attention(model, params, windows: np.ndarray, batch_size: int = 8,
                         mesh=None) -> dict[str, np.ndarray]:
  """{memory path: (H, T) weights of the last token over positions, averaged over windows};
  with ``mesh`` (``params`` on it), each batch of windows is split over it."""

  @jax.jit
  def weights(params, tokens):
    _, state = model.apply({"params": params}, tokens, mutable=["intermediates"])
    flat = jax.tree_util.tree_flatten_with_path(
        stack.to_layout(state["intermediates"], scanned=False))[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path[:-2]): value.sum(0)
            for path, value in flat if getattr(path[-2], "key", None) == SOWN}

  total = None
  for start in range(0, len(windows), batch_size):
    tokens, = sharding.rows_on(mesh, windows[start:start + batch_size].astype(np.int32))
    batch = jax.device_get(weights(params, tokens))
    total = batch if total is None else {k: total[k] + batch[k] for k in total}
  if not total:
    raise ValueError(f"{type(model).__name__} exposes no {SOWN}: the analyses cover v1/v2 "
                     "contextual memories and attention.")
  return {k: np.asarray(v) / len(windows) for k, v in total.items()}


def peak_width(weights: np.ndarray, skip: int = 1) -> int:
  """Most recent positions (from the last readable one back) whose weight stays >= half the
  maximum over the last ``RECENT`` readable positions."""
  readable = weights[:len(weights) - skip][::-1][:RECENT]  # most recent first
  above = readable >= readable.max() / 2
  return int(np.argmin(above)) if not above.all() else len(above)


def leaky_coefficients(params) -> dict[str, np.ndarray]:
  """{memory path: (H,) lambda = exp(-10 |leak|)} of a v1 Memory Mosaic's contextual memories."""
  out = {}
  for block, tree in stack.to_layout(params, scanned=False).items():
    context = tree.get("context") if isinstance(tree, dict) else None
    leak = context["keys"].get("leak") if isinstance(context, dict) else None
    if leak is not None:
      out[f"{block}/context"] = np.exp(-EXP_PARAM_SCALE * np.abs(np.asarray(leak)))
  return out


def leaky_vs_width(maps: dict[str, np.ndarray], params) -> dict:
  """Each v1 head's lambda beside its peak width, and their rank correlation."""
  coefficients = leaky_coefficients(params)
  rows = [(float(lam), peak_width(maps[path][head]), f"{path}/head{head}")
          for path, lams in coefficients.items() if path in maps
          for head, lam in enumerate(lams)]
  if len(rows) < 3:
    return {"heads": rows, "spearman": None}
  lam, width = (np.argsort(np.argsort(np.array([r[i] for r in rows]))) for i in (0, 1))
  return {"heads": rows, "spearman": float(np.corrcoef(lam, width)[0, 1])}


def plot_maps(maps: dict[str, np.ndarray], path: str, title: str) -> None:
  from matplotlib import colors  # pylint: disable=import-outside-toplevel
  plt = plotting.pyplot()

  names = sorted(maps)
  figure, axes = plt.subplots(len(names), 1, figsize=(9, 1.1 + 0.9 * len(names)), squeeze=False)
  for axis, name in zip(axes[:, 0], names):
    image = maps[name][:, ::-1]  # column d: distance d from the last token
    floor = max(float(image[image > 0].min()) if (image > 0).any() else 1e-6, 1e-6)
    shown = axis.imshow(np.maximum(image, floor), aspect="auto", interpolation="nearest",
                        norm=colors.LogNorm(vmin=floor, vmax=max(float(image.max()), floor * 10)))
    axis.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    axis.set_yticks(range(image.shape[0]))
    figure.colorbar(shown, ax=axis, pad=0.01)
  axes[-1, 0].set_xlabel("distance from the last token")
  axes[0, 0].set_title(title)
  plotting.save(figure, path, dpi=110)


def plot_leaky(relation: dict, path: str) -> None:
  plt = plotting.pyplot()

  figure, axis = plt.subplots(figsize=(5, 4))
  axis.scatter([r[0] for r in relation["heads"]], [r[1] for r in relation["heads"]])
  axis.set_xlabel("leaky-average coefficient lambda")
  axis.set_ylabel("recent-token peak width (positions)")
  axis.set_title(f"Spearman rank correlation {relation['spearman']:.2f}"
                 if relation["spearman"] is not None else "")
  axis.grid(alpha=0.3)
  plotting.save(figure, path)


def define_flags(values: flags.FlagValues) -> None:
  command.define_common(values, output="attention_maps", text=True, multiples="1,3", windows=32)


def run(values) -> dict:
  """Write one heatmap per run and length (and the leaky-coefficient plots) and
  attention_maps.json to ``--output``; the summary."""
  documents = corpus.read_documents(values.text, values.format)
  mesh = command.mesh(values)
  output = command.Output(values.output)
  summary = {}
  for _, name, run in command.load_runs(values, reading=values.text, on=mesh):
    stream = text.encode_stream(documents, run.tokenizer)
    context = run.model.config.context_length
    for multiple in command.multiples(values):
      if multiple > 1 and getattr(run.model.config, "position", None) == "learned":
        print(f"{name}: learned positions stop at {context} tokens; skipping {multiple}x.")
        continue
      windows = position_loss.consecutive_windows(stream, multiple * context, values.windows)
      maps = last_token_attention(run.model, run.params, windows[:, :-1], mesh=mesh)
      stem = f"{name}_{multiple}x"
      plot_maps(maps, output.path(f"{stem}.png"),
                f"{name}: last token's weights, {len(windows)} windows of "
                f"{multiple * context} tokens")
      entry = {"windows": len(windows), "length": multiple * context,
               "peak_width": {path: [peak_width(row, skip=0 if "attention" in path else 1)
                                     for row in weights] for path, weights in maps.items()}}
      relation = leaky_vs_width(maps, run.params)
      if relation["heads"]:
        entry["leaky_vs_width"] = relation
        plot_leaky(relation, output.path(f"{stem}_leaky.png"))
        print(f"{stem}: leaky coefficient vs peak width, Spearman "
              f"{relation['spearman'] if relation['spearman'] is not None else 'n/a'}")
      summary[stem] = entry
      print(f"{stem}: wrote {output.path(stem + '.png')}")
  output.write_json("attention_maps.json", summary)
  return summary


if __name__ == "__main__":
  command.main(sys.modules[__name__])
