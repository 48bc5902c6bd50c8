"""lm-evaluation-harness on a tiny trained run (evaluate/harness.py), offline: local YAML tasks
over JSONL files made here; every number checked against our own forward pass."""

import json
import os
import sys

import jax
import numpy as np
import pytest

lm_eval = pytest.importorskip("lm_eval")

from mosaics_jax import generate  # noqa: E402
from mosaics_jax.evaluate import harness  # noqa: E402
from mosaics_jax.train import checkpoint  # noqa: E402

CHOICES = [
    {"question": "Once upon a time, there was a little", "choices": [" girl", " car", " sky"],
     "label": 0},
    {"question": "She went to the park with her", "choices": [" mom", " spoon"], "label": 0},
    {"question": "", "choices": ["The cat sat.", "Cat the sat."], "label": 0},
]
PROMPTS = [{"prompt": "Once upon a time", "answer": " there"},
           {"prompt": "Tom was happy because", "answer": " he"}]


def _task(directory, name, rows, **fields):
  data = directory / f"{name}.jsonl"
  data.write_text("".join(json.dumps(row) + "\n" for row in rows))
  lines = [f"task: {name}", "dataset_path: json",
           f"dataset_kwargs:\n  data_files:\n    test: {data}", "test_split: test"]
  lines += [f"{key}: {json.dumps(value)}" for key, value in fields.items()]
  (directory / f"{name}.yaml").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def setup(tiny_run, tmp_path_factory):
  workdir = tiny_run
  tasks = tmp_path_factory.mktemp("tasks")
  _task(tasks, "tiny_choice", CHOICES, output_type="multiple_choice",
        doc_to_text="{{question}}", doc_to_choice="{{choices}}", doc_to_target="{{label}}",
        metric_list=[{"metric": "acc"}])
  run = checkpoint.load_run(workdir, "mosaic")
  long_text = " ".join(["the little dog ran to the big tree and sat down"] * 12)
  assert len(run.tokenizer.encode([long_text])[0]) > 2 * run.model.config.context_length
  _task(tasks, "tiny_rolling", [{"text": "One day, a boy found a ball."}, {"text": long_text}],
        output_type="loglikelihood_rolling", doc_to_text="", doc_to_target="{{text}}",
        metric_list=[{"metric": "word_perplexity"}])
  _task(tasks, "tiny_generate", PROMPTS, output_type="generate_until",
        doc_to_text="{{prompt}}", doc_to_target="{{answer}}",
        generation_kwargs={"until": ["."], "max_gen_toks": 6, "do_sample": False},
        metric_list=[{"metric": "exact_match"}])
  os.environ["HF_DATASETS_OFFLINE"] = "1"
  os.environ["HF_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("hf"))
  return workdir, tasks, run


def _evaluate(workdir, tasks, **model_args):
  from lm_eval.tasks import TaskManager  # pylint: disable=import-outside-toplevel
  args = ",".join([f"run={workdir}:mosaic"] + [f"{k}={v}" for k, v in model_args.items()])
  out = lm_eval.simple_evaluate(model=harness.NAME, model_args=args,
                                tasks=["tiny_choice", "tiny_rolling", "tiny_generate"],
                                task_manager=TaskManager(include_path=str(tasks)),
                                batch_size=4, log_samples=True)
  return {name: [sample["resps"] for sample in samples]
          for name, samples in out["samples"].items()}, out["results"]


def _log_prob(run, context, continuation):
  """Our own sum of log-probabilities of ``continuation`` after ``context`` (token lists)."""
  tokens = np.array([context + continuation])
  logits = run.model.apply({"params": run.params}, tokens[:, :-1])
  log_probs = np.asarray(jax.nn.log_softmax(logits.astype(np.float32)))[0]
  positions = np.arange(len(context) - 1, tokens.shape[1] - 1)
  return float(log_probs[positions, tokens[0, positions + 1]].sum())


@pytest.mark.slow
def test_tasks_match_our_forward_pass_and_a_mesh(setup):
  workdir, tasks, run = setup
  one, results = _evaluate(workdir, tasks)
  encode = lambda text: run.tokenizer.encode([text])[0]
  eot, length = run.tokenizer.eot_id, run.model.config.context_length

  for doc, responses in zip(CHOICES, one["tiny_choice"]):
    for choice, ((log_prob, _),) in zip(doc["choices"], responses):
      if doc["question"]:
        context = encode(doc["question"])
        continuation = encode(doc["question"] + choice)[len(context):]
      else:
        context, continuation = [eot], encode(choice)
      assert log_prob == pytest.approx(_log_prob(run, context, continuation), rel=1e-5)
  assert 0.0 <= results["tiny_choice"]["acc,none"] <= 1.0

  for doc, ((total,),) in zip(["One day, a boy found a ball.", None], one["tiny_rolling"]):
    tokens = encode(doc) if doc else encode(" ".join(
        ["the little dog ran to the big tree and sat down"] * 12))
    expected = 0.0
    for start in range(0, len(tokens), length):  # disjoint spans of the context length,
      end = min(start + length, len(tokens))     # each read with up to that many tokens
      context = [eot] if start == 0 else tokens[end - length - 1:start]
      expected += _log_prob(run, context, tokens[start:end])
    assert total == pytest.approx(expected, rel=1e-5)

  for doc, (text,) in zip(PROMPTS, one["tiny_generate"]):
    prompt = encode(doc["prompt"])
    greedy = generate.sample(run.model, run.params, [prompt], max_new_tokens=6,
                             rng=jax.random.key(0), temperature=0.0)[0]
    expected = run.tokenizer.decode(generate.until_token(greedy, eot)).split(".")[0]
    assert text[0] == expected

  meshed, _ = _evaluate(workdir, tasks, mesh_fsdp=-1)
  assert meshed["tiny_generate"] == one["tiny_generate"]
  for name in ("tiny_choice", "tiny_rolling"):
    np.testing.assert_allclose(_numbers(meshed[name]), _numbers(one[name]), rtol=1e-5)


def _numbers(responses):
  """The floats of lm_eval's per-document responses, flattened (booleans dropped)."""
  if isinstance(responses, (list, tuple)):
    return [x for r in responses for x in _numbers(r)]
  return [] if isinstance(responses, bool) else [float(responses)]


def test_command_line_and_bad_arguments(setup, tmp_path, monkeypatch, capsys):
  workdir, tasks, _ = setup
  monkeypatch.setattr(sys, "argv", [
      "harness", "--model", harness.NAME, "--model_args", f"run={workdir}:mosaic", "--tasks",
      "tiny_generate", "--include_path", str(tasks), "--batch_size", "2", "--output_path",
      str(tmp_path)])
  harness.main()  # what python -m mosaics_jax.evaluate.harness runs
  out = capsys.readouterr().out
  assert "tiny_generate" in out and "exact_match" in out
  assert list(tmp_path.rglob("results_*.json"))
  with pytest.raises(ValueError, match="unknown"):
    harness.MosaicsLM(run=f"{workdir}:mosaic", mesh="2,4,1")
  with pytest.raises(ValueError, match="no v2 long-term memory"):
    harness.MosaicsLM(run=f"{workdir}:mosaic", without_long_term="1")
  with pytest.raises(ValueError, match="no 'auto'"):
    harness.MosaicsLM(run=f"{workdir}:mosaic", batch_size="auto")
