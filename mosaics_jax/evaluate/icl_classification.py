r"""Many-shot in-context classification: accuracy against shots, semantic and anonymous labels
(v2 paper section 5.3, Figs 3-5), on the synthetic task of ``data/icl_classification.py``.

    python -m mosaics_jax.evaluate.icl_classification --run=/tmp/icl:mosaic \
        --run=/tmp/icl:transformer --run=/tmp/icl:transformer_long_short \
        --shots=1,2,4,8 --episodes=64 --output=/tmp/icl/icl_classification

Each run is scored on the task it was trained on (rebuilt from WORKDIR/config.json), on the
same test episodes for every model: for each label kind, shot count (one shot = one example of
every class) and prompt order (rounds shuffled, or in class order), two accuracies:

* greedy: the greedy continuation of the prompt (a few tokens, cut at the end-of-text token),
  up to its first whitespace, is the right label;
* constrained: of the K labels of the episode, the right one has the highest log-likelihood.

As in the paper, each model is credited with its better prompt order; the JSON keeps both.
Models with learned positions are only scored where the prompt fits their context. Writes
``icl_classification.md``, ``icl_classification.json`` and ``icl_classification.png``.
"""

from __future__ import annotations

import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from mosaics_jax import generate, storage
from mosaics_jax.data import icl_classification as icl
from mosaics_jax.evaluate import command, plotting
from mosaics_jax.train import sharding

ORDERS = {"shuffled": True, "grouped": False}


def predicted_label(continuation: str) -> str:
  """The label a continuation gives: its text up to the first whitespace (a newline, or the
  space before the next demonstration)."""
  words = continuation.split(maxsplit=1)
  return words[0] if words else ""


def greedy_accuracy(continuations: list[str], answers: list[str]) -> float:
  """The fraction of continuations whose first word is the answer."""
  if len(continuations) != len(answers) or not answers:
    raise ValueError(f"Need as many continuations as answers, at least one; got "
                     f"{len(continuations)} and {len(answers)}.")
  return float(np.mean([predicted_label(c) == a for c, a in zip(continuations, answers)]))


def _batched_leaves(model, length: int):
  """Which leaves of a decoding cache hold one row per sequence (the rest, e.g. the step
  counter, are shared): those whose leading size follows the batch."""
  def shapes(batch):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((batch, length),
                                                                          jnp.int32),
                                             decode=True)["cache"])
  return jax.tree_util.tree_map(lambda one, two: one.shape[:1] != two.shape[:1], shapes(1),
                                shapes(2))


@functools.partial(jax.jit, static_argnames=("model",))
def _candidate_log_likelihoods(model, params, cache, tokens, segments, candidates, lengths):
  """(B, K) log-likelihoods of K candidate continuations (B, K, L; ``lengths`` (B, K) tokens
  each) of B prompts: the prompts are read once, then the cache is copied for each candidate."""
  batch, count, width = candidates.shape
  logits, variables = model.apply({"params": params, "cache": cache}, tokens, segments,
                                  decode=True, mutable=["cache"])
  first = jax.nn.log_softmax(logits[:, -1].astype(jnp.float32))
  scores = jnp.take_along_axis(first, candidates[:, :, 0], axis=1)
  cache = jax.tree_util.tree_map(lambda leaf, rows: jnp.repeat(leaf, count, 0) if rows else leaf,
                                 variables["cache"],
                                 _batched_leaves(model, tokens.shape[1] + width))
  flat = candidates.reshape(batch * count, width)
  ones = jnp.ones((batch * count, 1), jnp.int32)
  for position in range(1, width):
    logits, variables = model.apply({"params": params, "cache": cache},
                                    flat[:, position - 1:position], ones, decode=True,
                                    mutable=["cache"])
    cache = variables["cache"]
    step = jax.nn.log_softmax(logits[:, -1].astype(jnp.float32))
    step = jnp.take_along_axis(step, flat[:, position:position + 1], axis=1)
    scores += jnp.where(position < lengths, step.reshape(batch, count), 0.0)
  return scores


def candidate_log_likelihoods(model, params, prompts: list[list[int]],
                              candidates: list[list[list[int]]], *,
                              batch_size: int, mesh=None) -> np.ndarray:
  """(episodes, K) log-likelihood of each candidate label (token lists) after each prompt;
  with ``mesh`` (``params`` on it), the episodes and the cache are split over it."""
  count = len(candidates[0])
  width = max(len(ids) for row in candidates for ids in row)
  padded = np.zeros((len(prompts), count, width), np.int32)
  lengths = np.zeros((len(prompts), count), np.int32)
  for e, row in enumerate(candidates):
    for k, ids in enumerate(row):
      padded[e, k, :len(ids)], lengths[e, k] = ids, len(ids)
  empty = generate.init_cache(model, batch_size, max(len(p) for p in prompts) + width, mesh)
  scores = []
  for tokens, segments, index, count in generate.fixed_shape_batches(
      prompts, batch_size, max(len(p) for p in prompts)):
    placed = sharding.rows_on(mesh, tokens, segments, padded[index], lengths[index])
    scores.append(np.asarray(_candidate_log_likelihoods(model, params, empty, *placed))[:count])
  return np.concatenate(scores)


def _encode(tokenizer, episodes: list[icl.Episode], task: icl.Task):
  """Prompts ([end-of-text] + prompt tokens), candidate token lists and the answer's index."""
  prompts = [[tokenizer.eot_id] + ids for ids in tokenizer.encode([e.prompt() for e in episodes])]
  label_ids = {}
  for kind in icl.LABEL_KINDS:
    label_ids.update(zip(task.labels(kind), tokenizer.encode(list(task.labels(kind)))))
  documents = tokenizer.encode([e.document() for e in episodes])
  if any(d != p[1:] + label_ids[e.answer] for d, p, e in zip(documents, prompts, episodes)):
    raise ValueError("The tokenizer does not split '<prompt> <label>' into the prompt's tokens "
                     "followed by the label's, so labels cannot be scored apart from prompts; "
                     "use a SentencePiece tokenizer that splits at whitespace (the default).")
  candidates = [[label_ids[label] for label in task.labels(e.kind)] for e in episodes]
  answers = [task.labels(e.kind).index(e.answer) for e in episodes]
  return prompts, candidates, answers


def evaluate_run(model, params, tokenizer, task: icl.Task, *, shots, episodes: int,
                 batch_size: int = 16, log=print, mesh=None) -> dict:
  """{kind: {shots: {accuracy, constrained_accuracy (best prompt order), prompt_tokens,
  orders: {order: {accuracy, constrained_accuracy}}}}}, shot counts whose prompts do not fit
  a learned-position model left out (with a note through ``log``); ``mesh`` as in
  ``candidate_log_likelihoods``."""
  results: dict = {kind: {} for kind in icl.LABEL_KINDS}
  longest_label = max(len(ids) for ids in tokenizer.encode(
      [label for kind in icl.LABEL_KINDS for label in task.labels(kind)]))
  for count in shots:
    groups = [(kind, order, task.test_episodes(kind, count, shuffled, episodes))
              for kind in icl.LABEL_KINDS for order, shuffled in ORDERS.items()]
    flat = [e for _, _, group in groups for e in group]
    prompts, candidates, answers = _encode(tokenizer, flat, task)
    needed = max(len(p) for p in prompts) + longest_label + 1
    if (getattr(model.config, "position", None) == "learned"
        and needed > model.config.context_length):
      log(f"  {count} shots skipped: prompts need {needed} positions, the model has learned "
          f"positions for {model.config.context_length}.")
      continue
    continuations = generate.greedy_in_batches(
        model, params, prompts, width=max(len(p) for p in prompts), steps=longest_label + 1,
        batch_size=batch_size, mesh=mesh)
    texts = [tokenizer.decode(generate.until_token(ids, tokenizer.eot_id))
             for ids in continuations]
    scores = candidate_log_likelihoods(model, params, prompts, candidates, batch_size=batch_size,
                                       mesh=mesh)
    picked = scores.argmax(axis=1) == np.asarray(answers)
    start = 0
    for kind, order, group in groups:
      span = slice(start, start + len(group))
      start += len(group)
      row = results[kind].setdefault(count, {
          "orders": {}, "prompt_tokens": float(np.mean([len(p) for p in prompts[span]]))})
      row["orders"][order] = {
          "accuracy": greedy_accuracy(texts[span], [e.answer for e in group]),
          "constrained_accuracy": float(picked[span].mean())}
    for kind in icl.LABEL_KINDS:
      row = results[kind][count]
      for metric in ("accuracy", "constrained_accuracy"):
        row[metric] = max(o[metric] for o in row["orders"].values())
      log(f"  {kind:9s} {count:3d} shots: accuracy {row['accuracy']:.3f}, constrained "
          f"{row['constrained_accuracy']:.3f} ({row['prompt_tokens']:.0f} prompt tokens)")
  return results


def table(results: dict[str, dict], chance: float) -> str:
  """Markdown: one row per model and label kind, one column per shot count."""
  shots = sorted({s for rows in results.values() for kind in rows.values() for s in kind})
  lines = ["| model | labels | " + " | ".join(f"{s} shot{'s' * (s > 1)}" for s in shots) + " |",
           "| --- | --- |" + " ---: |" * len(shots)]
  for name, rows in results.items():
    for kind in icl.LABEL_KINDS:
      cells = [f"{100 * rows[kind][s]['accuracy']:.1f} "
               f"({100 * rows[kind][s]['constrained_accuracy']:.1f})" if s in rows[kind] else "-"
               for s in shots]
      lines.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
  return ("\n".join(lines) + f"\n\nAccuracy in %: greedy (constrained to the labels); "
          f"chance {100 * chance:.1f}.\n")


def plot(results: dict[str, dict], chance: float, path: str) -> None:
  """Accuracy against shots, one panel per label kind, one colour per model (solid: greedy,
  dashed: constrained)."""
  plt = plotting.pyplot()
  figure, axes = plt.subplots(1, len(icl.LABEL_KINDS), figsize=(10, 4), sharey=True)
  every_shot = sorted({s for rows in results.values() for kind in rows.values() for s in kind})
  for axis, kind in zip(axes, icl.LABEL_KINDS):
    for index, (name, rows) in enumerate(results.items()):
      shots = sorted(rows[kind])
      colour = f"C{index}"
      axis.plot(shots, [rows[kind][s]["accuracy"] for s in shots], "o-", color=colour,
                label=f"{name} (greedy)")
      axis.plot(shots, [rows[kind][s]["constrained_accuracy"] for s in shots], "s--",
                color=colour, alpha=0.6, label=f"{name} (constrained)")
    axis.axhline(chance, color="grey", linestyle=":", label="chance")
    axis.set_xscale("log", base=2)
    axis.set_xticks(every_shot, [str(s) for s in every_shot])
    axis.minorticks_off()
    axis.set_title(f"{kind} labels")
    axis.set_xlabel("shots (examples per class)")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
  axes[0].set_ylabel("accuracy")
  axes[-1].legend(fontsize=7)
  plotting.save(figure, path)


def task_of_workdir(workdir: str) -> icl.Task:
  """The task a workdir was trained on, from the config.json that training wrote."""
  import ml_collections  # pylint: disable=import-outside-toplevel

  path = storage.path(workdir) / "config.json"
  try:
    saved = json.loads(path.read_text())
  except OSError as error:
    raise ValueError(f"Cannot read {path} ({error}): is {workdir} a training workdir?") \
        from error
  if saved.get("data", {}).get("source") != "icl_classification":
    raise ValueError(f"{workdir} was not trained on the icl_classification data source; train "
                     "with experiments/configs/icl_classification.py.")
  return icl.Task.from_config(ml_collections.ConfigDict(saved["data"]["icl"]), saved["seed"])


def define_flags(values: flags.FlagValues) -> None:
  command.define_common(values, output="icl_classification")
  flags.DEFINE_list("shots", ["1", "2", "4", "8"], "Shot counts (examples per class) to evaluate.",
                    flag_values=values)
  flags.DEFINE_integer("episodes", 64, "Test episodes per label kind, shot count and order.",
                       flag_values=values)
  flags.DEFINE_integer("batch_size", 16, "Episodes per forward pass.", flag_values=values)


def run(values) -> dict:
  """Write icl_classification.md, .json and .png to ``--output``; {model: results}."""
  shots = sorted(int(s) for s in values.shots)
  mesh = command.mesh(values)
  results, classes = {}, set()
  for workdir, name, run in command.load_runs(values, reading="the episodes", on=mesh):
    task = task_of_workdir(workdir)
    classes.add(task.classes)
    print(f"{name} (step {run.step}): {task.classes} classes")
    results[name] = evaluate_run(run.model, run.params, run.tokenizer, task, shots=shots,
                                 episodes=values.episodes, batch_size=values.batch_size,
                                 mesh=mesh)
  if len(classes) > 1:
    raise ValueError(f"The runs were trained on tasks with different numbers of classes "
                     f"({sorted(classes)}); compare runs of one experiment.")
  chance = 1 / classes.pop()
  markdown = table(results, chance)
  output = command.Output(values.output)
  output.write_text("icl_classification.md", f"# In-context classification: accuracy against "
                    f"shots\n\n{values.episodes} test episodes per label kind, shot count and "
                    f"prompt order; the better order is shown.\n\n{markdown}")
  output.write_json("icl_classification.json", {
      "chance": chance, "episodes": values.episodes,
      "runs": {name: {kind: {str(s): row for s, row in rows[kind].items()} for kind in rows}
               for name, rows in results.items()}})
  plot(results, chance, output.path("icl_classification.png"))
  print(markdown)
  return results


if __name__ == "__main__":
  command.main(sys.modules[__name__])
