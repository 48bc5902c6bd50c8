r"""Training and validation curves of a depth sweep (v1 Figures 7 and 13), one panel per depth.

    python -m mosaics_jax.evaluate.depth_curves --workdirs=/tmp/stories/d1,/tmp/stories/d4 \
        --output=/tmp/stories/curves

Each workdir is one run of an experiment (e.g. ``babistories_v1.py:depth=4``) holding several
models; the depth is read from each model's config. Writes ``depth_curves.png`` (loss against
step: training solid, validation dashed, one colour per model) and ``depth_curves.md`` (final
validation loss per model and depth).
"""

from __future__ import annotations

import json
import sys

import numpy as np
from absl import flags

from mosaics_jax import storage
from mosaics_jax.evaluate import command, plotting
from mosaics_jax.train import metrics


def read_run(workdir: str) -> dict[str, dict]:
  """{model: {'depth', 'train': [(step, loss)], 'validation': [(step, loss)]}} of one workdir
  (local or in a bucket)."""
  out = {}
  for config_path in sorted(storage.path(workdir).glob("*/model_config.json")):
    name = config_path.parent.name
    depth = json.loads(config_path.read_text())["num_layers"]
    rows = metrics.read_metrics(config_path.parent)
    out[name] = {
        "depth": depth,
        "train": sorted({r["step"]: r["train/loss"] for r in rows if "train/loss" in r}.items()),
        "validation": sorted({r["step"]: r["eval/loss"] for r in rows
                              if "eval/loss" in r}.items())}
  if not out:
    raise ValueError(f"{workdir} holds no trained model (no */model_config.json): pass the "
                     "workdirs given to mosaics_jax.main.")
  return out


def plot(runs: dict[int, dict[str, dict]], path: str) -> None:
  plt = plotting.pyplot()

  depths = sorted(runs)
  names = sorted({name for models in runs.values() for name in models})
  figure, axes = plt.subplots(1, len(depths), figsize=(4 * len(depths), 3.6), squeeze=False,
                              sharey=True)
  for axis, depth in zip(axes[0], depths):
    for index, name in enumerate(names):
      curves = runs[depth].get(name)
      if not curves:
        continue
      if curves["train"]:
        axis.plot(*zip(*curves["train"]), color=f"C{index}", alpha=0.8, label=f"{name} train")
      if curves["validation"]:
        axis.plot(*zip(*curves["validation"]), "o--", color=f"C{index}",
                  label=f"{name} validation")
    axis.set_title(f"{depth} block{'s' if depth > 1 else ''}")
    axis.set_xlabel("step")
    axis.grid(alpha=0.3)
  axes[0, 0].set_ylabel("cross-entropy (nats / token)")
  axes[0, -1].legend(fontsize=8)
  plotting.save(figure, path, dpi=110)


def table(runs: dict[int, dict[str, dict]]) -> str:
  names = sorted({name for models in runs.values() for name in models})
  lines = ["| depth | " + " | ".join(f"{n} validation loss" for n in names) + " |",
           "| ---: |" + " ---: |" * len(names)]
  for depth in sorted(runs):
    cells = []
    for name in names:
      validation = runs[depth].get(name, {}).get("validation")
      cells.append(f"{validation[-1][1]:.4f} (step {validation[-1][0]})" if validation else "-")
    lines.append(f"| {depth} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def collect(workdirs: list[str]) -> dict[int, dict[str, dict]]:
  """{depth: {model: curves}}; two workdirs of one depth fail (which one to plot?)."""
  runs: dict[int, dict[str, dict]] = {}
  for workdir in workdirs:
    models = read_run(workdir)
    depths = {m["depth"] for m in models.values()}
    if len(depths) != 1:
      raise ValueError(f"{workdir}: models of several depths {sorted(depths)}; one per workdir.")
    depth = depths.pop()
    if depth in runs:
      raise ValueError(f"Two workdirs have depth {depth}; pass one per depth.")
    runs[depth] = models
  return runs


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_list("workdirs", None, "Workdirs (local or in a bucket), one per depth.",
                    flag_values=values)
  flags.DEFINE_string("output", "depth_curves", "Directory (local or a bucket) for the plot and "
                      "the table.", flag_values=values)
  flags.mark_flag_as_required("workdirs", flag_values=values)


def run(values) -> dict:
  """Write depth_curves.png and .md to ``--output``; {depth: {model: curves}}."""
  runs = collect([w for w in values.workdirs if w])
  output = command.Output(values.output)
  plot(runs, output.path("depth_curves.png"))
  markdown = table(runs)
  output.write_text("depth_curves.md", "# Validation loss by depth\n\n" + markdown)
  print(markdown)
  best = {d: min(m, key=lambda n: m[n]["validation"][-1][1] if m[n]["validation"] else np.inf)
          for d, m in runs.items()}
  print("lowest validation loss: " + ", ".join(f"depth {d}: {n}" for d, n in sorted(best.items())))
  return runs


if __name__ == "__main__":
  command.main(sys.modules[__name__])
