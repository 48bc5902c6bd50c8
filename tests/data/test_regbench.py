"""RegBench generator and metrics against the spec (../shared/spec/benchmarks.md section 1)."""

import numpy as np
import pytest

from mosaics_jax.data import regbench as R


@pytest.fixture(scope="module")
def splits():
  return R.make_splits(100, seed=0)


def test_automata_follow_the_spec():
  rng = np.random.default_rng(3)
  for _ in range(200):
    pfa = R.sample_pfa(rng)
    assert 4 <= len(pfa.transitions) <= 12
    alphabet = {a for edges in pfa.transitions for a in edges}
    assert alphabet <= set(range(1, 19))
    for state, edges in enumerate(pfa.transitions):
      assert 1 <= len(edges) <= 3 and state not in edges.values()  # no self-loops
      assert len(set(edges.values())) == len(edges)  # distinct targets


def test_instances_and_splits(splits):
  assert [len(splits[k].pfas) for k in ("train", "test", "validation", "in_distribution")] == \
      [100, 500, 500, 100]
  lengths = [len(x) for x in splits["test"].instances]
  assert 300 < np.mean(lengths) < 450 and max(lengths) <= 19 * 49 + 18  # spec: ~377 tokens
  for pfa, tokens in zip(splits["test"].pfas[:50], splits["test"].instances[:50]):
    strings = "".join("|" if t == R.SEPARATOR else "x" for t in tokens).split("|")
    assert 10 <= len(strings) <= 19 and all(1 <= len(s) <= 49 for s in strings)
    state = 0  # every string is a walk from the start state
    for t in tokens:
      state = 0 if t == R.SEPARATOR else pfa.step(state, int(t))
  train_ids = {id(p) for p in splits["train"].pfas}
  assert not train_ids & {id(p) for p in splits["test"].pfas}
  assert all(id(p) in train_ids for p in splits["in_distribution"].pfas)


def test_exact_distributions_and_training_pairs(splits):
  pfa, tokens = splits["test"].pfas[0], splits["test"].instances[0]
  dist = R.true_distributions(pfa, tokens)
  assert dist.shape == (len(tokens) - 1, 20)
  np.testing.assert_allclose(dist.sum(-1), 1.0)
  assert np.all(dist[:, [R.PAD, R.SEPARATOR]] == 0)
  legal = dist[np.arange(len(tokens) - 1), tokens[1:]]
  assert np.all((legal > 0) | (tokens[1:] == R.SEPARATOR))  # the sampled letter was legal
  inputs, targets = R.training_pair(tokens, 1024)
  assert np.all(inputs[len(tokens) - 1:] == R.PAD) and np.all(targets[len(tokens) - 1:] == -1)
  assert not np.any(targets == R.SEPARATOR)  # separators are never trained


def test_metrics_and_ngram_baselines_match_the_spec(splits):
  test = splits["test"]
  true = test.distributions()
  perfect = R.score(true, true)
  assert perfect["accuracy"] == 1.0 and perfect["tvd"] == 0.0 and perfect["legal_mass"] == \
      pytest.approx(1.0)
  assert perfect["cross_entropy"] == pytest.approx(perfect["true_entropy"]) == pytest.approx(
      perfect["entropy"])
  assert 0.5 < perfect["true_entropy"] < 2.0  # a few legal letters, spread evenly
  uniform = R.score([np.full_like(q, 1 / 20) for q in true], true)
  assert abs(uniform["tvd"] - 0.90) < 0.01  # uniform over 20 tokens
  assert uniform["entropy"] == pytest.approx(np.log(20)) == uniform["cross_entropy"]
  legal_letters = np.concatenate([(q > 0).sum(-1) for q in true])
  assert uniform["legal_mass"] == pytest.approx(legal_letters.mean() / 20)
  # Spec section 1.6-1.7 (other draws of 500 test automata): 2-gram 0.818 / 0.334,
  # 3-gram 0.932 / 0.262, 4-gram 0.948 / 0.274; unigram 0.50 / 0.62.
  anchors = {1: (0.50, 0.62), 2: (0.818, 0.334), 3: (0.932, 0.262), 4: (0.948, 0.274)}
  for order, (accuracy, tvd) in anchors.items():
    scores = R.score([R.ngram_distributions(x, order) for x in test.instances], true)
    assert abs(scores["accuracy"] - accuracy) < 0.03 and abs(scores["tvd"] - tvd) < 0.02, order


def test_ngram_by_hand():
  """Bigram after 'a b | a': counts over padded strings [p a b], [p a]; context 'a' seen twice
  (once continued by b) -> P(b) = 1/2, the rest goes to unseen in-context letters by unigram."""
  a, b = 1, 2
  tokens = np.asarray([a, b, R.SEPARATOR, a, b])
  rows = R.ngram_distributions(tokens, 2)
  assert rows[3, b] == pytest.approx(0.5)
  assert rows[3, a] == pytest.approx(0.5)  # the only unseen in-context letter takes the rest


def test_instance_batches_are_deterministic_bucketed_and_cover_every_instance(splits):
  instances = splits["train"].instances
  batches = R.InstanceBatches(instances, 20, seed=1, bucket=64)
  seen = []
  for g in range(5):  # one epoch = 100 instances
    batch = batches(g)
    assert batch["inputs"].shape[1] % 64 == 0 and batch["inputs"].shape[0] == 20
    np.testing.assert_array_equal(batch["inputs"], batches(g)["inputs"])
    for row in batch["inputs"]:
      seen.append(tuple(row[row != R.PAD]))
  assert sorted(seen) == sorted(tuple(x[:-1]) for x in instances)
  halves = [R.InstanceBatches(instances, 20, 1, bucket=64, process_index=p, process_count=2)
            for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([h(3)["inputs"] for h in halves]),
                                batches(3)["inputs"])
