"""RULER-style task generators, sizing, metrics and data source against the spec
(../shared/spec/benchmarks.md section 2)."""

import collections
import re

import numpy as np
import pytest

from experiments import registry
from mosaics_jax import data as data_lib
from mosaics_jax.data import ruler
from mosaics_jax.train.config import base_config


def words_in(text: str) -> int:
  return len(text.split())


def query_of(prompt: str) -> str:
  return re.search(r"The special magic numbers for (.+) mentioned in the provided text are$",
                   prompt).group(1)


def test_samples_are_deterministic():
  for task in ruler.TASKS:
    sample = ruler.build_sample(task, (3, 1), 6)
    assert sample == ruler.build_sample(task, (3, 1), 6) and sample.task == task
    assert sample != ruler.build_sample(task, (3, 2), 6)
  first = ruler.training_documents(20, 256, ruler.TASKS, seed=1)
  assert first == ruler.training_documents(20, 256, ruler.TASKS, seed=1)
  assert not set(first) & set(ruler.training_documents(20, 256, ruler.TASKS, seed=1,
                                                       validation=True))


def test_needles_hold_the_answers():
  for seed in range(5):
    single = ruler.build_sample("niah_single", seed, 30)
    key, (value,) = query_of(single.prompt), single.answers
    assert single.prompt.count(f"One of the special magic numbers for {key} is: {value}.") == 1
    assert len(value) == 7 and single.prompt.count("The grass is green.") == 6

    multikey = ruler.build_sample("niah_multikey", seed, 30)
    key, (value,) = query_of(multikey.prompt), multikey.answers
    needles = re.findall(r"One of the special magic numbers for (\S+) is: (\d{7})\.",
                         multikey.prompt)
    assert len(needles) == 31 and len({k for k, _ in needles}) == 31  # distractors only
    assert (key, value) in needles and "The grass" not in multikey.prompt

    multivalue = ruler.build_sample("niah_multivalue", seed, 30)
    key = query_of(multivalue.prompt)
    found = re.findall(rf"for {key} is: (\d{{7}})\.", multivalue.prompt)
    assert sorted(found) == sorted(multivalue.answers) and len(set(found)) == 4

    multiquery = ruler.build_sample("niah_multiquery", seed, 30)
    keys = re.split(r", | and ", query_of(multiquery.prompt))
    assert len(keys) == 4 and len(multiquery.answers) == 4
    for key, value in zip(keys, multiquery.answers):
      assert f"One of the special magic numbers for {key} is: {value}." in multiquery.prompt


def test_variable_tracking_chain():
  for seed in range(5):
    sample = ruler.build_sample("vt", seed, 40)
    value = re.search(r"assigned the value (\d{5}) are$", sample.prompt).group(1)
    statements = re.findall(r"VAR ([A-Z]{5}) = (VAR [A-Z]{5}|\d{5})\.", sample.prompt)
    assert len(statements) == 5 and statements[0] == (sample.answers[0], value)
    for (name, source), previous in zip(statements[1:], sample.answers):
      assert source == f"VAR {previous}"  # in order: each hop follows the one it copies
    assert tuple(name for name, _ in statements) == sample.answers
    assert len(set(sample.answers)) == 5 and sample.prompt.count("The sky is blue.") == 8


def test_common_and_frequent_word_counts():
  for seed in range(5):
    sample = ruler.build_sample("cwe", seed, 25)
    items = re.findall(r"(\d+)\. (\S+)", sample.prompt.split("\n")[1])
    assert [int(n) for n, _ in items] == list(range(1, len(items) + 1))
    counts = collections.Counter(word for _, word in items)
    assert len(items) == 25 + ruler.CWE_COMMON_WORDS * ruler.CWE_COMMON_REPEATS
    assert {w: counts.pop(w) for w in sample.answers} == dict.fromkeys(
        sample.answers, ruler.CWE_COMMON_REPEATS)
    assert set(counts.values()) == {1}

    sample = ruler.build_sample("fwe", seed, 300)
    counts = collections.Counter(sample.prompt.split("\n")[1].split())
    assert counts.most_common(1)[0][0] == "..."  # rank 1 is the noise
    ranked = [count for word, count in counts.most_common() if word != "..."]
    assert [counts[w] for w in sample.answers] == ranked[:3]
    assert ranked[0] > ranked[1] > ranked[2] > ranked[3]
  assert ruler.zipf_counts(0) == [5, 4, 3, 2, 1, 1]
  assert ruler.zipf_counts(1000)[:5] == [607, 151, 67, 37, 24]  # floor(1000 k^-2 / zeta(2))


def test_question_answering_asks_one_document():
  for seed in range(5):
    sample = ruler.build_sample("qa", seed, 12)
    documents = re.findall(r"Document \d+:\n([^\n]+)", sample.prompt)
    question = re.search(r"Question: (.+)\nAnswer:$", sample.prompt).group(1)
    assert len(documents) == 13
    people = {re.match(r"(\w+ \w+)", d).group(1) for d in documents}
    asked = [p for p in people if p in question]
    assert len(people) == 13 and len(asked) == 1
    gold = [d for d in documents if d.startswith(asked[0])]
    assert len(gold) == 1 and sample.answers[0] in gold[0]


@pytest.mark.parametrize("task", ruler.TASKS)
def test_sizing_fills_the_target_within_one_unit(task):
  target, budget = 400, ruler.ANSWER_TOKENS[task]
  samples = ruler.evaluation_samples(task, 2, target, words_in, seed=7)
  for index, sample in enumerate(samples):
    build = lambda units: ruler.build_sample(task, (7, 2, ruler.TASKS.index(task), index), units)
    units = ruler.largest_fitting(build, lambda s: words_in(s.prompt) + budget <= target)
    assert sample == build(units)
    assert words_in(build(units).prompt) + budget <= target < words_in(
        build(units + 1).prompt) + budget
  longer = ruler.evaluation_samples(task, 1, 2 * target, words_in, seed=7)[0]
  assert longer.answers == samples[0].answers  # the same facts at every length
  with pytest.raises(data_lib.DataError, match="does not fit in 20 tokens"):
    ruler.evaluation_samples(task, 1, 20, words_in)


def test_training_documents_fit_their_estimated_sizes():
  documents = ruler.training_documents(80, 256, ruler.TASKS, seed=0)
  for index, document in enumerate(documents):
    task = ruler.TASKS[int(np.random.default_rng((0, 0, index)).integers(len(ruler.TASKS)))]
    assert ruler.estimated_tokens(document, task) <= 192
    assert document.endswith(".") and not document.endswith(" are.")
  with pytest.raises(data_lib.DataError, match="more than 3/4 of the 64-token"):
    ruler.training_documents(5, 64, ["niah_multiquery"], seed=0)
  with pytest.raises(data_lib.DataError, match="Unknown RULER tasks"):
    ruler.training_documents(5, 256, ["niah"], seed=0)


def test_metrics_on_hand_made_predictions():
  references = [("1234567", "7654321"), ("Paris",), ("KQXZA", "BWTYV", "CRRPO", "DJJMU")]
  predictions = [" 7654321, 1234567.", "paris", "kqxza and BWTYV"]
  assert ruler.string_match_all(predictions, references) == pytest.approx(100 * (1 + 1 + 0.5) / 3)
  assert ruler.string_match_part(predictions, references) == pytest.approx(100.0)
  assert ruler.string_match_part(["London", "no"], [("Paris", "London"), ("yes",)]) == 50.0
  sample = ruler.Sample("prompt", ("Rome",), "qa")
  assert ruler.score("qa", ["rome."], [sample]) == 100.0 and ruler.METRICS["vt"] is \
      ruler.string_match_all


def test_the_source_builds_data(tmp_path):
  config = registry.get_config("ruler_v2", "tiny")
  data = data_lib.build(config.data, seed=0, workdir=str(tmp_path))
  assert "RULER-style tasks (niah_single, niah_multikey)" in data.description
  batch = next(data.train_iterator())
  assert batch["inputs"].shape == (8, 128) and "segment_ids" in batch
  text = data.tokenizer.decode(data.evaluation[0]["inputs"][0])
  assert "special magic numbers for" in text
  bare = base_config()
  bare.data.source = "ruler"
  with pytest.raises(data_lib.DataError, match="needs a config.data.ruler section"):
    data_lib.build(bare.data, seed=0, workdir=str(tmp_path))
