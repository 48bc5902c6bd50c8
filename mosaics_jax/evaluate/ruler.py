r"""RULER-style new-knowledge storage at 1x to 8x the training context, with no fine-tuning
(v2 paper section 5.2, Table 3, at small scale; tasks in ``mosaics_jax/data/ruler.py``).

    python -m mosaics_jax.evaluate.ruler --run=/tmp/ruler:mosaic --run=/tmp/ruler:transformer \
        --run=/tmp/ruler:transformer_long_short --multiples=1,2,4,8 --samples=20 \
        --output=/tmp/ruler/eval

For each run, task and multiple k, ``--samples`` prompts are sized to k x the model's training
context in its own tokens (answer budget included), continued greedily and cut at the
end-of-text token; scores are RULER's (string_match_all, string_match_part for qa), x 100,
and "overall" is their mean over tasks. Sample i of a task carries the same keys and values at
every length. Learned positions stop at 1x. The tasks default to those the run was trained on.
Writes ``ruler.md``, ``ruler.json`` and ``ruler.png``.
"""

from __future__ import annotations

import itertools
import json
import sys
from typing import Sequence

import numpy as np
from absl import flags

from mosaics_jax import generate, storage
from mosaics_jax.data import ruler
from mosaics_jax.evaluate import command, plotting


def evaluate_run(model, params, tokenizer, tasks: Sequence[str], multiples: Sequence[int],
                 samples_per_task: int, seed: int = 42, batch_size: int = 8,
                 mesh=None) -> dict:
  """{'context_length', 'tasks': {task: {k: score}}, 'overall': {k: score}, 'examples':
  {task: {k: first sample's answers and prediction}}} for one model; with ``mesh``
  (``params`` on it), prompts and cache are split over it."""
  tasks = ruler.check_tasks(tasks)
  context = model.config.context_length
  learned = getattr(model.config, "position", None) == "learned"
  reachable = sorted(k for k in multiples if k == 1 or not learned)
  eot = tokenizer.eot_id

  def length_of(text: str) -> int:
    return 1 + len(tokenizer.encode([text])[0])  # the prompt starts with the end-of-text token

  results = {"context_length": context, "tasks": {task: {} for task in tasks}, "overall": {},
             "examples": {task: {} for task in tasks}}
  by_budget = itertools.groupby(sorted(tasks, key=ruler.ANSWER_TOKENS.get),
                                key=ruler.ANSWER_TOKENS.get)
  groups = [(budget, list(group)) for budget, group in by_budget]
  for multiple in reachable:
    target = multiple * context
    cache = generate.init_cache(model, batch_size, target, mesh)  # width + budget = target
    for budget, group in groups:
      samples = [sample for task in group for sample in ruler.evaluation_samples(
          task, samples_per_task, target, length_of, seed)]
      prompts = [[eot] + ids for ids in tokenizer.encode([s.prompt for s in samples])]
      continuations = generate.greedy_in_batches(model, params, prompts, width=target - budget,
                                                 steps=budget, batch_size=batch_size,
                                                 cache=cache, mesh=mesh)
      predictions = [tokenizer.decode(generate.until_token(c, eot)) for c in continuations]
      for index, task in enumerate(group):
        rows = slice(index * samples_per_task, (index + 1) * samples_per_task)
        results["tasks"][task][multiple] = ruler.score(task, predictions[rows], samples[rows])
        results["examples"][task][multiple] = {"answers": list(samples[rows][0].answers),
                                               "prediction": predictions[rows][0]}
    results["overall"][multiple] = float(np.mean([results["tasks"][t][multiple] for t in tasks]))
  return results


def table(results: dict[str, dict], multiples: Sequence[int]) -> str:
  """Markdown: one row per model and task, then the model's overall row; '-' where a model
  cannot reach a length."""
  contexts = {rows["context_length"] for rows in results.values()}
  header = [f"{k}x ({k * min(contexts)} tokens)" if len(contexts) == 1 else f"{k}x"
            for k in multiples]
  lines = ["| model | task | " + " | ".join(header) + " |",
           "| --- | --- |" + " ---: |" * len(multiples)]
  for name, rows in results.items():
    for task, scores in [*rows["tasks"].items(), ("overall", rows["overall"])]:
      cells = [f"{scores[k]:.1f}" if k in scores else "-" for k in multiples]
      lines.append(f"| {name} | {'**overall**' if task == 'overall' else task} | " +
                   " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], path: str) -> None:
  plt = plotting.pyplot()
  figure, axis = plt.subplots(figsize=(6.5, 4.2))
  for name, rows in results.items():
    multiples = sorted(rows["overall"])
    axis.plot(multiples, [rows["overall"][k] for k in multiples], "o-", label=name)
  axis.set_xscale("log", base=2)
  axis.set_ylim(-2, 102)
  axis.set_xlabel("evaluation length / training context")
  axis.set_ylabel("RULER-style score (mean over tasks)")
  axis.grid(alpha=0.3)
  axis.legend(fontsize=8)
  plotting.save(figure, path)


def trained_tasks(workdir: str) -> list[str]:
  """The tasks a run was trained on (its config.json), or every task."""
  config_path = storage.path(workdir) / "config.json"
  if not config_path.exists():
    return list(ruler.TASKS)
  section = json.loads(config_path.read_text()).get("data", {}).get("ruler", {})
  return [t.strip() for t in section.get("tasks", ",".join(ruler.TASKS)).split(",") if t.strip()]


def define_flags(values: flags.FlagValues) -> None:
  command.define_common(values, output="ruler", multiples="1,2,4,8")
  flags.DEFINE_string("tasks", "", "Comma-separated tasks; empty: those each run was trained on.",
                      flag_values=values)
  flags.DEFINE_integer("samples", 20, "Samples per task and length.", flag_values=values)
  flags.DEFINE_integer("seed", 42, "Seed of the evaluation samples (RULER's).", flag_values=values)
  flags.DEFINE_integer("batch_size", 8, "Prompts decoded together.", flag_values=values)


def run(values) -> dict:
  """Write ruler.md, .json and .png to ``--output``; {model: results}."""
  multiples = command.multiples(values)
  mesh = command.mesh(values)
  results = {}
  for workdir, name, run in command.load_runs(values, reading="the RULER prompts", on=mesh):
    tasks = [t.strip() for t in values.tasks.split(",") if t.strip()] or trained_tasks(workdir)
    results[name] = evaluate_run(run.model, run.params, run.tokenizer, tasks, multiples,
                                 values.samples, values.seed, values.batch_size, mesh)
  markdown = table(results, multiples)
  output = command.Output(values.output)
  output.write_text("ruler.md", f"# RULER-style tasks by evaluation length\n\n{values.samples} "
                    f"samples per task and length, seed {values.seed}; scores x 100 "
                    f"(string_match_all, string_match_part for qa).\n\n{markdown}")
  output.write_json("ruler.json", {"samples": values.samples, "seed": values.seed,
                                   "runs": results})
  plot(results, output.path("ruler.png"))
  print(markdown)
  return results


if __name__ == "__main__":
  command.main(sys.modules[__name__])
