"""The synthetic in-context classification task: episodes, label kinds, the data source."""

import collections
import dataclasses

import numpy as np
import pytest

from experiments import registry
from mosaics_jax import data as data_lib
from mosaics_jax.data import icl_classification as icl
from mosaics_jax.data.corpus import DataError

TASK = icl.Task(classes=5, prototype_words=6, example_words=3, noise=0.2, vocabulary_words=60,
                seed=3)


def test_word_list_is_fixed_and_leaves_out_the_format_words():
  words = icl.word_list(60)
  assert len(set(words)) == 60 and words == icl.word_list(60)
  assert not set(words) & set(icl.RESERVED_WORDS)
  assert all(w.isalpha() and w.islower() for w in words)


@pytest.mark.parametrize("kind", icl.LABEL_KINDS)
def test_episodes_are_deterministic(kind):
  first, again = (TASK.test_episodes(kind, 3, True, 4) for _ in range(2))
  assert first == again
  assert len({e.document() for e in first}) == 4  # distinct episodes
  other_seed = dataclasses.replace(TASK, seed=4).test_episodes(kind, 3, True, 4)
  assert [e.document() for e in other_seed] != [e.document() for e in first]


@pytest.mark.parametrize("shuffled", [True, False])
@pytest.mark.parametrize("kind", icl.LABEL_KINDS)
def test_n_shots_hold_n_examples_of_every_class(kind, shuffled):
  for shots in (1, 2, 5):
    episode = TASK.episode(kind, shots, shuffled, np.random.default_rng(shots))
    assert len(episode.demonstrations) == shots * TASK.classes
    assert collections.Counter(d.class_id for d in episode.demonstrations) == {
        c: shots for c in range(TASK.classes)}
    rounds = [episode.demonstrations[r * TASK.classes:(r + 1) * TASK.classes]
              for r in range(shots)]
    assert all(sorted(d.class_id for d in row) == list(range(TASK.classes)) for row in rounds)
    if not shuffled:
      assert all([d.class_id for d in row] == list(range(TASK.classes)) for row in rounds)
    assert all(len(d.words) == TASK.example_words for d in episode.demonstrations)
    assert all(d.label == episode.labels[d.class_id] for d in episode.demonstrations)


def test_anonymous_labels_are_dealt_anew_and_semantic_ones_are_fixed():
  anonymous = TASK.test_episodes("anonymous", 1, True, 12)
  semantic = TASK.test_episodes("semantic", 1, True, 12)
  assert len({e.labels for e in anonymous}) > 1
  assert all(sorted(e.labels) == list(TASK.anonymous_labels) for e in anonymous)
  assert {e.labels for e in semantic} == {TASK.semantic_labels}
  assert not set(TASK.semantic_labels) & set(TASK.anonymous_labels)
  # Anonymous prototypes are fresh too: the words of class 0 change from episode to episode.
  words = [{w for d in e.demonstrations if d.class_id == 0 for w in d.words} for e in anonymous]
  assert len({frozenset(w) for w in words}) == len(words)
  labels = TASK.semantic_labels
  assert not any(a != b and a.startswith(b) for a in labels for b in labels)


@pytest.mark.parametrize("kind", icl.LABEL_KINDS)
def test_the_answer_is_a_label_of_the_context_and_ends_the_document(kind):
  for episode in TASK.test_episodes(kind, 2, False, 10):
    assert episode.answer in {d.label for d in episode.demonstrations}
    assert episode.answer == episode.labels[episode.query.class_id]
    lines = episode.prompt().split("\n")
    assert len(lines) == 2 * TASK.classes + 1
    assert lines[0] == (f"input: {' '.join(episode.demonstrations[0].words)} label: "
                        f"{episode.demonstrations[0].label}")
    assert lines[-1].startswith("input: ") and lines[-1].endswith(" label:")
    assert episode.document() == f"{episode.prompt()} {episode.answer}"


def test_training_documents_mix_kinds_and_shots():
  documents = TASK.documents("train", 40, 3, 0.5)
  assert documents == TASK.documents("train", 40, 3, 0.5)
  assert not set(documents) & set(TASK.documents("validation", 40, 3, 0.5))
  anonymous = [d for d in documents if "class_" in d]
  assert 0 < len(anonymous) < len(documents)
  lines = {d.count("\n") + 1 for d in documents}
  assert lines <= {TASK.classes * s + 1 for s in (1, 2, 3)} and len(lines) > 1


def test_settings_that_cannot_work_fail_with_the_fix():
  with pytest.raises(DataError, match="use at least 78"):
    icl.Task(classes=6, prototype_words=12, vocabulary_words=50)
  with pytest.raises(DataError, match="example_words=5"):
    icl.Task(prototype_words=4, example_words=5)
  with pytest.raises(ValueError, match="Unknown label kind"):
    TASK.episode("named", 1, True, np.random.default_rng(0))


def test_the_source_builds_packed_batches(tmp_path):
  config = registry.get_config("icl_classification", "tiny")
  data = data_lib.build(config.data, seed=config.seed, workdir=str(tmp_path))
  batch = next(data.train_iterator())
  assert batch["inputs"].shape == (config.data.batch_size, config.data.seq_len)
  assert "segment_ids" in batch and data.evaluation and data.tokenizer is not None
  assert "label:" in data.tokenizer.decode(batch["inputs"][0])
  task = icl.Task.from_config(config.data.icl, config.seed)
  for word in task.words + task.semantic_labels:  # the task's words are single tokens
    assert len(data.tokenizer.encode([word])[0]) == 1, word
  with config.unlocked():
    del config.data["icl"]
  with pytest.raises(DataError, match="needs a config.data.icl section"):
    data_lib.build(config.data, seed=0, workdir=str(tmp_path))
