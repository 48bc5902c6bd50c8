"""Synthetic many-shot in-context classification: the small-scale analogue of the v2 paper's
section 5.3 (Banking77, TACRED, GoEmotions with semantic or anonymous labels).

A task has K classes. An example of class c is a few words drawn from c's prototype (a set of
characteristic words), each replaced with probability ``noise`` by a word of the whole word
list. The words are the most frequent words of the TinyStories slice shipped with the package,
so nothing is downloaded. Two label kinds:

* ``semantic``: the prototypes and the label words (one word per class) are fixed by the seed
  and shared by every episode, so the input-to-label mapping can be learned in the weights:
  the analogue of label names that carry prior knowledge.
* ``anonymous``: every episode draws fresh prototypes and hands out class_00 ... class_{K-1}
  in a random order, so only the demonstrations in the context tell the classes apart. Fresh
  prototypes (not only fresh labels) make in-context learning the only way to score above
  chance: with fixed prototypes a model could still learn the classes in its weights and merely
  look up which label goes with which.

An episode with n shots holds n rounds of one example from every class (in class order, or
shuffled within each round: two of the paper's prompt variants), one per line, then a query:

    input: w1 w2 w3 label: class_03
    ...
    input: q1 q2 q3 label: class_05

The answer is the last label. The paper's other variant, a space instead of the newline
between demonstrations, is the same token sequence here: the SentencePiece normalisation maps
newlines to spaces.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re

import numpy as np

from mosaics_jax.data import corpus
from mosaics_jax.data.pipeline import Data
from mosaics_jax.data.text_data import documents_data

LABEL_KINDS = ("semantic", "anonymous")
WORD_SOURCE = "package:tinystories/train.txt"
RESERVED_WORDS = ("input", "label", "class")  # the format's own words never serve as content
# Independent random streams: one per split, one for the fixed semantic classes.
_STREAMS = {"train": 0, "validation": 1, "test": 2, "semantic": 3}


@functools.lru_cache(maxsize=None)
def word_list(count: int) -> tuple[str, ...]:
  """The ``count`` most frequent lowercase words (3-10 letters) of the shipped TinyStories
  slice, most frequent first (ties alphabetical): a fixed, offline vocabulary."""
  counts = collections.Counter(
      word for document in corpus.read_documents(WORD_SOURCE)
      for word in re.findall(r"[a-z]+", document.lower()) if 3 <= len(word) <= 10)
  for word in RESERVED_WORDS:
    counts.pop(word, None)
  ranked = sorted(counts, key=lambda word: (-counts[word], word))
  if len(ranked) < count:
    raise corpus.DataError(f"The word list asks for {count} words but {WORD_SOURCE} has only "
                           f"{len(ranked)}; lower icl.vocabulary_words.")
  return tuple(ranked[:count])


@dataclasses.dataclass(frozen=True)
class Example:
  words: tuple[str, ...]
  class_id: int
  label: str

  def line(self, with_label: bool = True) -> str:
    return f"input: {' '.join(self.words)} label:" + (f" {self.label}" if with_label else "")


@dataclasses.dataclass(frozen=True)
class Episode:
  """Demonstrations (``shots`` rounds of one example per class) and a query."""

  kind: str
  shots: int
  shuffled: bool
  labels: tuple[str, ...]  # labels[c]: the label of class c in this episode
  demonstrations: tuple[Example, ...]
  query: Example

  @property
  def answer(self) -> str:
    return self.query.label

  def prompt(self) -> str:
    """The text a model continues: the demonstrations and the query up to 'label:'."""
    return "\n".join([d.line() for d in self.demonstrations] + [self.query.line(False)])

  def document(self) -> str:
    """The training document: the prompt followed by the answer."""
    return f"{self.prompt()} {self.answer}"


@dataclasses.dataclass(frozen=True)
class Task:
  """The fixed side of the task (the word list, the semantic prototypes and label words, drawn
  from ``seed``) and the episodes drawn from it."""

  classes: int = 8
  prototype_words: int = 12
  example_words: int = 3
  noise: float = 0.1
  vocabulary_words: int = 400
  seed: int = 0

  def __post_init__(self):
    if self.classes < 2 or self.classes > 100:
      raise corpus.DataError(f"icl.classes={self.classes}: use 2 to 100 classes (anonymous "
                             "labels have two digits).")
    if not 1 <= self.example_words <= self.prototype_words:
      raise corpus.DataError(f"icl.example_words={self.example_words} must be between 1 and "
                             f"icl.prototype_words={self.prototype_words}.")
    if not 0.0 <= self.noise < 1.0:
      raise corpus.DataError(f"icl.noise={self.noise}: a probability in [0, 1).")
    needed = self.classes * (self.prototype_words + 1)
    if self.vocabulary_words < needed:
      raise corpus.DataError(
          f"icl.vocabulary_words={self.vocabulary_words} cannot hold {self.classes} prototypes "
          f"of {self.prototype_words} words plus {self.classes} label words: use at least "
          f"{needed}, or fewer classes or prototype words.")

  @classmethod
  def from_config(cls, icl, seed: int) -> "Task":
    """The task of a ``config.data.icl`` section and the experiment seed."""
    return cls(classes=icl.classes, prototype_words=icl.prototype_words,
               example_words=icl.example_words, noise=icl.noise,
               vocabulary_words=icl.vocabulary_words, seed=seed)

  @property
  def words(self) -> tuple[str, ...]:
    return word_list(self.vocabulary_words)

  @functools.cached_property
  def _semantic(self) -> tuple[np.ndarray, tuple[str, ...]]:
    """Fixed prototypes (K, P word indices) and label words, none a prefix of another (so a
    generated label is never mistaken for a shorter one)."""
    rng = np.random.default_rng([self.seed, _STREAMS["semantic"]])
    order = rng.permutation(len(self.words))
    size = self.classes * self.prototype_words
    labels: list[str] = []
    for index in order[size:]:
      word = self.words[index]
      if not any(word.startswith(other) or other.startswith(word) for other in labels):
        labels.append(word)
      if len(labels) == self.classes:
        break
    if len(labels) < self.classes:
      raise corpus.DataError(f"Found only {len(labels)} label words for {self.classes} classes "
                             "in the word list; raise icl.vocabulary_words.")
    return order[:size].reshape(self.classes, self.prototype_words), tuple(labels)

  @property
  def semantic_labels(self) -> tuple[str, ...]:
    return self._semantic[1]

  @property
  def anonymous_labels(self) -> tuple[str, ...]:
    return tuple(f"class_{c:02d}" for c in range(self.classes))

  def labels(self, kind: str) -> tuple[str, ...]:
    """The candidate labels of a label kind (for anonymous ones, in no particular order)."""
    return self.semantic_labels if kind == "semantic" else self.anonymous_labels

  def episode(self, kind: str, shots: int, shuffled: bool, rng: np.random.Generator) -> Episode:
    if kind not in LABEL_KINDS:
      raise ValueError(f"Unknown label kind {kind!r}; choose one of {LABEL_KINDS}.")
    if shots < 1:
      raise ValueError(f"shots={shots}: an episode needs at least one shot.")
    if kind == "semantic":
      prototypes, labels = self._semantic
    else:
      prototypes = rng.choice(len(self.words), (self.classes, self.prototype_words),
                              replace=False)
      labels = tuple(self.anonymous_labels[i] for i in rng.permutation(self.classes))

    rounds = [rng.permutation(self.classes) if shuffled else np.arange(self.classes)
              for _ in range(shots)]
    class_ids = np.concatenate(rounds + [rng.integers(self.classes, size=1)])
    # Each example: example_words distinct words of its prototype, some swapped for noise.
    picks = rng.random((len(class_ids), self.prototype_words)).argsort(axis=1)
    words = prototypes[class_ids[:, None], picks[:, :self.example_words]]
    noisy = rng.random(words.shape) < self.noise
    words = np.where(noisy, rng.integers(0, len(self.words), words.shape), words)
    examples = [Example(tuple(self.words[i] for i in row), int(c), labels[c])
                for row, c in zip(words, class_ids)]
    demonstrations, query = tuple(examples[:-1]), examples[-1]
    return Episode(kind, shots, shuffled, labels, demonstrations, query)

  def test_episodes(self, kind: str, shots: int, shuffled: bool, count: int) -> list[Episode]:
    """A fixed set of evaluation episodes, drawn apart from the training and validation ones."""
    return [self.episode(kind, shots, shuffled, np.random.default_rng(
        [self.seed, _STREAMS["test"], LABEL_KINDS.index(kind), shots, int(shuffled), index]))
            for index in range(count)]

  def documents(self, split: str, count: int, max_shots: int,
                semantic_fraction: float) -> list[str]:
    """Training or validation documents: episodes with 1..max_shots shots, semantic with
    probability ``semantic_fraction``, shuffled rounds or not with equal odds."""
    documents = []
    for index in range(count):
      rng = np.random.default_rng([self.seed, _STREAMS[split], index])
      kind = "semantic" if rng.random() < semantic_fraction else "anonymous"
      shots = int(rng.integers(1, max_shots + 1))
      documents.append(self.episode(kind, shots, bool(rng.random() < 0.5), rng).document())
    return documents


def icl_classification_data(config, *, seed: int, workdir: str, process_index: int = 0,
                            process_count: int = 1) -> Data:
  """The data source: generated training and validation episodes, tokenized and batched like
  any corpus. ``config.data.icl`` holds the task (classes, prototype_words, example_words,
  noise, vocabulary_words) and the documents (max_shots, semantic_fraction, train_episodes,
  validation_episodes)."""
  if "icl" not in config:
    raise corpus.DataError("data.source='icl_classification' needs a config.data.icl section "
                           "(see experiments/configs/icl_classification.py).")
  icl = config.icl
  task = Task.from_config(icl, seed)
  train = task.documents("train", icl.train_episodes, icl.max_shots, icl.semantic_fraction)
  validation = task.documents("validation", icl.validation_episodes, icl.max_shots,
                              icl.semantic_fraction)
  description = (f"in-context classification, {task.classes} classes, 1-{icl.max_shots} shots, "
                 f"{icl.semantic_fraction:.0%} semantic labels")
  return documents_data(train, validation, config, seed=seed, workdir=workdir,
                        process_index=process_index, process_count=process_count,
                        description=description)
