"""RegBench (Akyurek et al. 2024): in-context learning of random probabilistic automata.

Written from ../shared/spec/benchmarks.md section 1 (the official generator is
berlino/seq_icl). Every sequence is one "problem instance": 10-19 strings from one random
probabilistic finite automaton (PFA), separated by '|'. A model sees many PFAs in training and
is tested on new ones, so it must infer each automaton from the strings in its context.

* Vocabulary (20): '.' = 0 (padding), letters 'a'..'r' = 1..18, '|' = 19.
* A PFA: n ~ U{4..12} states, an alphabet of k ~ U{4..18} distinct letters; each state has
  d ~ U{1,2,3} outgoing edges with distinct letters and distinct targets among the other
  states (no self-loops); start state 0, every state accepting, the next letter uniform over the
  current state's edges. (The official code then minimises the automaton, which relabels states
  but leaves the distribution of strings unchanged, so we skip it.)
* An instance: m ~ U{10..19} strings of lengths L ~ U{1..49}, joined by '|'.
* Splits: N training PFAs with one instance each; 500 test and 500 validation PFAs, new ones.
  Separators are never trained (their targets are ignored).
* Exact next-token distribution of every prefix: uniform over the letters leaving the state the
  current string (the part after the last '|') reaches.

The PFAs follow the spec's distribution, not the official generator's random stream, so a run
draws different (statistically equivalent) automata than the paper's.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter

import numpy as np

from mosaics_jax.data import pipeline
from mosaics_jax.data.pipeline import Data

PAD, SEPARATOR, VOCAB_SIZE = 0, 19, 20
LETTERS = np.arange(1, 19)
IGNORE = -1
TEST_PFAS = 500  # and as many validation automata


@dataclasses.dataclass
class PFA:
  transitions: list[dict[int, int]]  # state -> {letter: next state}
  seed: int  # of the private generator that samples its strings

  def __post_init__(self):
    self._letters = [sorted(edges) for edges in self.transitions]

  def step(self, state: int, letter: int) -> int:
    return self.transitions[state][letter]

  def letters(self, state: int) -> list[int]:
    return self._letters[state]


def sample_pfa(rng: np.random.Generator) -> PFA:
  states = int(rng.integers(4, 13))
  alphabet = rng.choice(LETTERS, size=int(rng.integers(4, 19)), replace=False)
  sub = np.random.default_rng(int(rng.integers(0, 2 ** 32)))
  transitions = []
  for state in range(states):
    degree = int(sub.integers(1, 4))
    letters = sub.choice(alphabet, size=degree, replace=False)
    others = np.asarray([s for s in range(states) if s != state])
    targets = sub.choice(others, size=degree, replace=False)
    transitions.append({int(a): int(b) for a, b in zip(letters, targets)})
  return PFA(transitions, int(sub.integers(0, 2 ** 32)))


def sample_instance(pfa: PFA, rng: np.random.Generator) -> np.ndarray:
  """m strings of random lengths, letters drawn by the PFA's own generator, '|'-separated."""
  strings = np.random.default_rng(pfa.seed)
  tokens = []
  for index in range(int(rng.integers(10, 20))):
    if index:
      tokens.append(SEPARATOR)
    state = 0
    length = int(rng.integers(1, 50))
    for draw in strings.random(length):  # a uniform choice among the state's edges
      choices = pfa.letters(state)
      letter = choices[int(draw * len(choices))]
      tokens.append(letter)
      state = pfa.step(state, letter)
  return np.asarray(tokens, np.int32)


def true_distributions(pfa: PFA, tokens: np.ndarray) -> np.ndarray:
  """(T-1, 20): the exact distribution of token t+1 given tokens[:t+1], for every t."""
  out = np.zeros((len(tokens) - 1, VOCAB_SIZE))
  state = 0
  for t, token in enumerate(tokens[:-1]):
    state = 0 if token == SEPARATOR else pfa.step(state, int(token))
    letters = pfa.letters(state)
    out[t, letters] = 1.0 / len(letters)
  return out


@dataclasses.dataclass
class Split:
  pfas: list[PFA]
  instances: list[np.ndarray]

  def distributions(self) -> list[np.ndarray]:
    return [true_distributions(p, x) for p, x in zip(self.pfas, self.instances)]


def make_splits(num_train: int, seed: int = 0, held_out: int = TEST_PFAS) -> dict[str, Split]:
  """Train (N PFAs), test and validation (``held_out`` = 500 PFAs each) with one instance each,
  and an in-distribution set: a fresh instance of each of the first ``held_out`` training PFAs."""
  rng = np.random.default_rng(seed)
  pfas = [sample_pfa(rng) for _ in range(num_train + 2 * held_out)]
  order = rng.permutation(len(pfas))
  pfas = [pfas[i] for i in order]
  groups = {"train": pfas[:num_train], "test": pfas[num_train:num_train + held_out],
            "validation": pfas[num_train + held_out:]}
  splits = {name: Split(group, [sample_instance(p, rng) for p in group])
            for name, group in groups.items()}
  seen = groups["train"][:held_out]
  splits["in_distribution"] = Split(seen, [sample_instance(p, rng) for p in seen])
  return splits


def training_pair(tokens: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets) padded to ``length``: '.' inputs, ignored targets, separators ignored."""
  inputs = np.full(length, PAD, np.int32)
  targets = np.full(length, IGNORE, np.int32)
  inputs[:len(tokens) - 1] = tokens[:-1]
  targets[:len(tokens) - 1] = np.where(tokens[1:] == SEPARATOR, IGNORE, tokens[1:])
  return inputs, targets


# ---------------------------------------------------------------------------------------------
# Metrics (spec section 1.6): micro-averages over every input position of every instance.


def score(predicted: list[np.ndarray], true: list[np.ndarray]) -> dict[str, float]:
  """Per position, averaged: accuracy (the top token is a legal continuation), tvd (half the
  L1 distance), and the diagnostics that say whether a model learned the automata:
  entropy of the prediction (nats; uniform over the 20 tokens is 3.00), legal_mass (its
  probability on legal letters), cross_entropy (the expected loss under the true
  distribution; probabilities floored at 1e-9) and its floor, true_entropy (the entropy of the
  true distribution: the loss of a model that knows the automaton)."""
  legal, tvd, entropy, legal_mass, cross_entropy, true_entropy, count = 0, 0.0, 0.0, 0.0, 0.0, \
      0.0, 0
  for p, q in zip(predicted, true):
    legal += int(np.sum(q[np.arange(len(q)), np.argmax(p, axis=-1)] > 0))
    tvd += float(0.5 * np.abs(p - q).sum())
    log_p = np.log(np.maximum(p, 1e-9))
    entropy += float(-(p * log_p).sum())
    legal_mass += float(p[q > 0].sum())
    cross_entropy += float(-(q * log_p).sum())
    true_entropy += float(-(q[q > 0] * np.log(q[q > 0])).sum())
    count += len(q)
  return {"accuracy": legal / count, "tvd": tvd / count, "entropy": entropy / count,
          "legal_mass": legal_mass / count, "cross_entropy": cross_entropy / count,
          "true_entropy": true_entropy / count}


def ngram_distributions(tokens: np.ndarray, order: int) -> np.ndarray:
  """(T-1, 20) in-context n-gram predictions with back-off (the paper's Algorithm 1).

  Counts n-grams of orders 1..``order`` over the strings seen so far in the sequence, the current
  partial string included, each left-padded with order-1 pads (which count in the unigram
  total). A context's count includes its current, not yet continued occurrence; seen
  continuations get count(ctx + x) / count(ctx), the left-over mass goes to letters seen in the
  sequence but not after the context, in proportion to the next lower order; not renormalised.
  """
  counts = [Counter() for _ in range(order + 1)]  # counts[k][k-gram]
  seen_letters: set[int] = set()
  string: list[int] = []

  def append(symbol: int) -> None:  # and count the windows that end at it
    string.append(symbol)
    for k in range(1, min(order, len(string)) + 1):
      counts[k][tuple(string[-k:])] += 1

  def start_string() -> None:
    string.clear()
    for _ in range(order - 1):
      append(-1)  # a pad

  start_string()
  out = np.zeros((len(tokens) - 1, VOCAB_SIZE))
  for t, token in enumerate(tokens[:-1]):
    if token == SEPARATOR:
      start_string()
    else:
      append(int(token))
      seen_letters.add(int(token))
    out[t] = _backoff(counts, string, seen_letters, order)
  return out


def _backoff(counts, string, seen_letters, order) -> np.ndarray:
  total = sum(counts[1].values())
  row = np.zeros(VOCAB_SIZE)
  for letter in seen_letters:
    row[letter] = counts[1][(letter,)] / total
  for k in range(2, order + 1):
    context = tuple(string[-(k - 1):])
    context_count = counts[k - 1][context]
    higher = np.zeros(VOCAB_SIZE)
    continued = [x for x in seen_letters if counts[k][context + (x,)]]
    for letter in continued:
      higher[letter] = counts[k][context + (letter,)] / context_count
    unseen = [x for x in seen_letters if x not in continued]
    lower_mass = sum(row[x] for x in unseen)
    if unseen and lower_mass > 0:
      leftover = 1.0 - higher.sum()
      for letter in unseen:
        higher[letter] = leftover * row[letter] / lower_mass
    row = higher
  return row


# ---------------------------------------------------------------------------------------------
# Training batches.


@dataclasses.dataclass
class InstanceBatches:
  """Maps a batch index to this process's slice of a batch of instances (picklable).

  Every epoch visits the instances in a fresh random order (the last batch of an epoch is
  completed with the epoch's first instances, so batches keep their size). Within chunks of
  ``sort_chunk`` batches of an epoch, instances are sorted by length, so a batch pads to little
  more than its longest instance, rounded up to a multiple of ``bucket`` (a few shapes to
  compile); the chunk's batches then come in random order.
  """

  instances: list[np.ndarray]
  global_batch: int
  seed: int
  bucket: int = 64
  sort_chunk: int = 16
  process_index: int = 0
  process_count: int = 1
  shuffle: bool = True

  def __post_init__(self):
    self.batches_per_epoch = -(-len(self.instances) // self.global_batch)

  def __call__(self, batch_index: int) -> dict[str, np.ndarray]:
    size = self.global_batch
    epoch, index = divmod(batch_index, self.batches_per_epoch)
    order = (np.random.default_rng([self.seed, epoch]).permutation(len(self.instances))
             if self.shuffle else np.arange(len(self.instances)))
    order = np.resize(order, self.batches_per_epoch * size)  # wraps to fill the last batch
    chunk, position = divmod(index, self.sort_chunk)
    first = chunk * self.sort_chunk
    count = min(self.sort_chunk, self.batches_per_epoch - first)
    items = order[first * size:(first + count) * size]
    if self.shuffle:
      items = items[np.argsort([len(self.instances[i]) for i in items], kind="stable")]
      position = np.random.default_rng([self.seed, epoch, chunk, 1]).permutation(count)[position]
    members = items[position * size:(position + 1) * size]
    width = max(len(self.instances[i]) for i in members) - 1
    width = -(-width // self.bucket) * self.bucket
    local = size // self.process_count
    mine = members[self.process_index * local:(self.process_index + 1) * local]
    pairs = [training_pair(self.instances[i], width) for i in mine]
    return {"inputs": np.stack([p[0] for p in pairs]), "targets": np.stack([p[1] for p in pairs])}


def regbench_data(config, *, seed: int, workdir: str, process_index: int = 0,
                  process_count: int = 1) -> Data:
  """RegBench: N training automata, validation loss on held-out ones (``data/regbench.py``)."""
  del workdir
  splits = make_splits(config.regbench_train_pfas, seed, config.regbench_eval_pfas)
  batches = InstanceBatches(splits["train"].instances, config.batch_size, seed,
                            bucket=config.regbench_bucket, process_index=process_index,
                            process_count=process_count)
  validation = InstanceBatches(splits["validation"].instances, config.batch_size, seed,
                               bucket=config.regbench_bucket, process_index=process_index,
                               process_count=process_count, shuffle=False)
  count = min(config.eval_batches, len(splits["validation"].instances) // config.batch_size)
  description = (f"RegBench: {config.regbench_train_pfas:,} training automata (one instance "
                 f"each), {len(splits['test'].pfas)} test and {len(splits['validation'].pfas)} "
                 "validation automata")
  return Data(functools.partial(pipeline.train_iterator, batches, config.num_workers),
              [validation(g) for g in range(max(count, 1))], VOCAB_SIZE, None,
              description, extras={"regbench": splits, "bucket": config.regbench_bucket})
