r"""RegBench evaluation (v1 Figure 9): accuracy and total variation distance to the exact
next-token distributions, on new automata (test) and on the training ones (in distribution).

* ``evaluate(model, params, data, config)``: the trainer's evaluator (``config.train.evaluators
  = "regbench"``): metrics of one trained model.
* ``python -m mosaics_jax.evaluate.regbench --workdirs=DIR,DIR,... --output=DIR``: collects the
  runs of a sweep over the number of training automata N into a table (with the in-context
  n-gram baselines and the paper's numbers) and a plot like Figure 9.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from mosaics_jax import storage
from mosaics_jax.data import regbench
from mosaics_jax.evaluate import command, plotting

# v1 paper, Figure 9 (digitised, see ../shared/spec/benchmarks.md 1.7): N -> (accuracy, TVD).
PAPER = {
    "mosaic": {100: (0.925, 0.569), 500: (0.929, 0.253), 1000: (0.934, 0.215),
               2500: (0.941, 0.186), 40000: (0.96, 0.122)},
    "transformer": {100: (0.523, 0.683), 500: (0.543, 0.64), 1000: (0.533, 0.63),
                    2500: (0.924, 0.231), 40000: (0.950, 0.144)},
}
SPLITS = ("test", "in_distribution")


def model_distributions(model, params, instances, batch_size: int = 32,
                        bucket: int = 64) -> list[np.ndarray]:
  """The model's next-token distributions (len - 1, 20) for every instance."""
  apply = jax.jit(lambda p, x: jax.nn.softmax(model.apply({"params": p}, x), axis=-1))
  order = np.argsort([len(x) for x in instances], kind="stable")
  out: list[np.ndarray | None] = [None] * len(instances)
  for start in range(0, len(order), batch_size):
    members = order[start:start + batch_size]
    width = -(-(max(len(instances[i]) for i in members) - 1) // bucket) * bucket
    inputs = np.stack([regbench.training_pair(instances[i], width)[0] for i in members])
    probabilities = np.asarray(jax.device_get(apply(params, jnp.asarray(inputs))))
    for row, i in enumerate(members):
      out[i] = probabilities[row, :len(instances[i]) - 1].astype(np.float64)
  return out


def evaluate(model, params, data, config) -> dict[str, float]:
  """Accuracy and TVD on the test automata and on fresh instances of training automata."""
  splits = data.extras["regbench"]
  metrics = {}
  for name in SPLITS:
    split = splits[name]
    scores = regbench.score(model_distributions(model, params, split.instances,
                                                config.data.batch_size, data.extras["bucket"]),
                            split.distributions())
    metrics.update({f"{name}_{key}": value for key, value in scores.items()})
  return metrics


def ngram_baselines(num_train: int, seed: int, held_out: int = regbench.TEST_PFAS,
                    orders=(1, 2, 3, 4)) -> dict[str, dict]:
  """In-context n-gram scores on the test automata of a run."""
  test = regbench.make_splits(num_train, seed, held_out)["test"]
  true = test.distributions()
  return {f"{n}-gram": regbench.score([regbench.ngram_distributions(x, n)
                                       for x in test.instances], true) for n in orders}


def _number(values: dict, key: str) -> str:
  return f"{values[key]:.3f}" if values.get(key) is not None else "-"


def _diagnostics(values: dict, prefix: str = "") -> list[str]:
  """Entropy, legal mass, and the expected loss against its floor (runs from before these
  diagnostics existed have none: '-')."""
  loss, floor = values.get(prefix + "cross_entropy"), values.get(prefix + "true_entropy")
  return [_number(values, prefix + "entropy"), _number(values, prefix + "legal_mass"),
          f"{loss:.2f} / {floor:.2f}" if loss is not None and floor is not None else "-"]


def collect(workdirs, output: str) -> str:
  """Table and plot of a sweep: each workdir is one N (its config.json says which), local or
  in a bucket, as ``output`` is."""
  plt = plotting.pyplot()
  rows = []
  for workdir in workdirs:
    config = json.loads((storage.path(workdir) / "config.json").read_text())
    results = json.loads((storage.path(workdir) / "results.json").read_text())
    n = config["data"]["regbench_train_pfas"]
    baselines = ngram_baselines(n, config["seed"], config["data"]["regbench_eval_pfas"])
    rows.append((n, results, baselines))
  rows.sort(key=lambda row: row[0])
  lines = ["| N | model | test accuracy | test TVD | paper accuracy | paper TVD | entropy | "
           "legal mass | loss / floor | validation loss | in-distribution accuracy | "
           "in-distribution TVD |", "| ---: | --- |" + " ---: |" * 10]
  for n, results, baselines in rows:
    for name, result in results.items():
      metrics = result["metrics"]
      paper = PAPER.get(name, {}).get(n)
      lines.append(f"| {n} | {name} | " + " | ".join(
          [_number(metrics, "test_accuracy"), _number(metrics, "test_tvd"),
           str(paper[0]) if paper else "-", str(paper[1]) if paper else "-",
           *_diagnostics(metrics, "test_"), _number(result, "validation_loss"),
           _number(metrics, "in_distribution_accuracy"),
           _number(metrics, "in_distribution_tvd")]) + " |")
    for name, scores in baselines.items():
      lines.append(f"| {n} | in-context {name} | {scores['accuracy']:.3f} | {scores['tvd']:.3f} "
                   "| | | " + " | ".join(_diagnostics(scores)) + " | | | |")
  table = "\n".join(lines) + "\n"
  figure, axes = plt.subplots(1, 2, figsize=(10, 4))
  for index, name in enumerate(sorted({m for _, results, _ in rows for m in results})):
    ns = [n for n, results, _ in rows if name in results]
    for axis, key in zip(axes, ("test_accuracy", "test_tvd")):
      axis.plot(ns, [r[name]["metrics"][key] for _, r, _ in rows if name in r], "o-",
                color=f"C{index}", label=f"{name} (ours)")
      paper = PAPER.get(name, {})
      axis.plot(sorted(paper), [paper[k][0 if key == "test_accuracy" else 1]
                                for k in sorted(paper)], "x:", color=f"C{index}",
                label=f"{name} (paper)")
  for axis, label in zip(axes, ("accuracy (greedy token is legal)", "total variation distance")):
    axis.set_xscale("log")
    axis.set_xlabel("training automata N")
    axis.set_ylabel(label)
    axis.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  output = command.Output(output)
  plotting.save(figure, output.path("regbench.png"))
  output.write_text("regbench.md", table)
  print(table)
  return table


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_list("workdirs", None, "Workdirs of regbench runs (one per N), local or in a "
                    "bucket.", flag_values=values)
  flags.DEFINE_string("output", "regbench_results", "Directory (local or a bucket) for "
                      "regbench.md and the plot.", flag_values=values)
  flags.mark_flag_as_required("workdirs", flag_values=values)


def run(values) -> str:
  """Write regbench.md and .png to ``--output``; the table."""
  return collect([d for d in values.workdirs if d], values.output)


if __name__ == "__main__":
  command.main(sys.modules[__name__])
