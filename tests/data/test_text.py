"""Token streams, windows, packing, per-host slices and resumable iterators."""

import numpy as np
import pytest

from mosaics_jax.data import pipeline, text, tokenizer as tokenizers
from mosaics_jax.data.corpus import DataError

EOT = 2


class FakeTokenizer:
  eot_id = EOT

  def encode(self, documents):
    return [[10 + len(word) for word in doc.split()] for doc in documents]


def test_stream_puts_eot_before_each_document():
  stream = text.encode_stream(["a bb", "ccc"], FakeTokenizer())
  np.testing.assert_array_equal(stream, [EOT, 11, 12, EOT, 13])


def test_segments_restart_at_each_eot():
  window = np.asarray([5, 6, EOT, 7, 8, EOT, 9, 4])
  np.testing.assert_array_equal(text.segments_of(window, EOT), [1, 1, 2, 2, 2, 3, 3])


def _stream(n=1000, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(3, 50, n).astype(np.int32)


def test_random_windows_are_deterministic_and_targets_shift():
  batches = text.WindowBatches(_stream(), seq_len=16, global_batch=4, packing="random_windows",
                               seed=3, eot=EOT)
  first, again = batches(7), batches(7)
  np.testing.assert_array_equal(first["inputs"], again["inputs"])
  np.testing.assert_array_equal(first["inputs"][:, 1:], first["targets"][:, :-1])
  assert "segment_ids" not in first
  assert not np.array_equal(batches(7)["inputs"], batches(8)["inputs"])
  other_seed = text.WindowBatches(_stream(), 16, 4, "random_windows", 4, EOT)
  assert not np.array_equal(other_seed(7)["inputs"], first["inputs"])


def test_document_packing_visits_every_window_once_per_epoch():
  stream = _stream(16 * 10 + 1)
  batches = text.WindowBatches(stream, seq_len=16, global_batch=5, packing="documents",
                               seed=0, eot=EOT)
  assert batches.num_windows == 10
  epoch = np.concatenate([batches(g)["inputs"] for g in range(2)])
  starts = sorted(int(np.flatnonzero((stream[:-1] == row[0]))[0]) for row in epoch)
  windows = sorted(tuple(row) for row in epoch)
  expected = sorted(tuple(stream[k * 16:k * 16 + 16]) for k in range(10))
  assert windows == expected and len(starts) == 10
  assert "segment_ids" in batches(0)
  next_epoch = np.concatenate([batches(g)["inputs"] for g in range(2, 4)])
  assert sorted(tuple(r) for r in next_epoch) == expected
  assert not np.array_equal(next_epoch, epoch)  # reshuffled


def test_process_slices_tile_the_global_batch():
  full = text.WindowBatches(_stream(), 8, 6, "random_windows", 1, EOT)
  parts = [text.WindowBatches(_stream(), 8, 6, "random_windows", 1, EOT, p, 3) for p in range(3)]
  for g in (0, 5):
    np.testing.assert_array_equal(np.concatenate([p(g)["inputs"] for p in parts]),
                                  full(g)["inputs"])
  with pytest.raises(DataError, match="does not split"):
    text.WindowBatches(_stream(), 8, 7, "random_windows", 1, EOT, 0, 2)


def test_iterator_state_resumes_exactly():
  batches = text.WindowBatches(_stream(), 8, 4, "documents", 1, EOT)
  iterator = pipeline.train_iterator(batches)
  for _ in range(3):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator)["inputs"] for _ in range(2)]
  resumed = pipeline.train_iterator(batches)
  resumed.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed)["inputs"], want)


def test_evaluation_batches_are_consecutive_windows():
  stream = _stream(8 * 9 + 1)
  batches = text.evaluation_batches(stream, 8, 4, num_batches=5, eot=EOT, packing_name="documents")
  assert len(batches) == 2  # 9 windows -> 2 full batches of 4
  np.testing.assert_array_equal(batches[1]["inputs"][0], stream[32:40])
  with pytest.raises(DataError, match="less than one batch"):
    text.evaluation_batches(stream[:20], 8, 4, 1, EOT, "random_windows")
  with pytest.raises(DataError, match="fewer than one window"):
    text.WindowBatches(stream[:5], 8, 4, "random_windows", 0, EOT)


def test_tokenizer_trains_caches_and_round_trips(tmp_path):
  documents = [f"the cat number {i} sat on the mat and looked at bird {i % 7}." for i in range(300)]
  tok = tokenizers.load_or_train("", documents, 310, "unigram", str(tmp_path))
  assert tok.vocab_size == 310 and tok.eot_id == 2
  cached = list(tmp_path.glob("tokenizer-*.model"))
  assert len(cached) == 1
  again = tokenizers.load_or_train("", documents, 310, "unigram", str(tmp_path))
  assert again.model_proto == tok.model_proto
  ids = tok.encode(["the cat sat. Zoë ☃"])[0]
  assert tok.decode(ids) == "the cat sat. Zoë ☃"  # byte fallback: nothing is unknown
  loaded = tokenizers.load_or_train(str(cached[0]), [], 0, "bpe", str(tmp_path / "other"))
  assert loaded.encode(["the mat"]) == tok.encode(["the mat"])
  with pytest.raises(DataError, match="too small"):
    tokenizers.train_tokenizer(documents, 100)
  with pytest.raises(DataError, match="not a SentencePiece model|Cannot read"):
    (tmp_path / "junk.model").write_bytes(b"junk")
    tokenizers.Tokenizer.load(str(tmp_path / "junk.model"))


def test_worker_processes_give_the_same_batches_and_state():
  batches = text.WindowBatches(_stream(), 8, 4, "random_windows", 5, EOT)
  in_process = pipeline.train_iterator(batches)
  with_workers = pipeline.train_iterator(batches, worker_count=2)
  for _ in range(4):
    np.testing.assert_array_equal(next(with_workers)["inputs"], next(in_process)["inputs"])
  state = with_workers.get_state()
  expected = next(in_process)["inputs"]
  resumed = pipeline.train_iterator(batches, worker_count=2)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["inputs"], expected)
