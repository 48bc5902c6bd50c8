"""Whole-document windows: the greedy packing, its index on a store (equal to the in-memory
one), batches that start at document starts and split none, and the errors."""

import pickle

import numpy as np
import pytest

from mosaics_jax import data as data_lib
from mosaics_jax.data import packing, preparation, store, text
from mosaics_jax.data.corpus import DataError
from tests.data.test_store import data_config, documents, shards, tok  # noqa: F401 (fixtures)

EOT = 0


def test_pack_takes_whole_documents_while_they_fit_and_truncates_a_long_one():
  # documents (with their leading EOT) of 3, 4, 10, 2 and 2 tokens
  starts = np.array([0, 3, 7, 17, 19])
  np.testing.assert_array_equal(packing.pack(starts, 21, seq_len=8),
                                [[0, 7], [7, 15], [17, 21]])
  np.testing.assert_array_equal(packing.pack(starts, 21, seq_len=3), [
      [0, 3], [3, 6], [7, 10], [17, 19], [19, 21]])


def _stream(lengths, seed=0):
  rng = np.random.default_rng(seed)
  return np.concatenate([np.r_[EOT, rng.integers(1, 50, n - 1)] for n in lengths]).astype(np.int32)


def test_every_document_is_in_one_window_from_its_start():
  lengths = np.random.default_rng(1).integers(2, 30, 300)
  lengths[[5, 77]] = 60  # longer than any window
  stream = _stream(lengths)
  index = packing.WholeDocuments.of_array(stream, EOT, seq_len=16)
  batches = text.WindowBatches(stream, 16, 8, "whole_documents", 3, EOT, documents=index)
  epoch = [batches.window(i) for i in range(len(index))]
  starts = sorted(batches.documents.window(i)[0] for i in range(len(index)))
  assert len(set(starts)) == len(index)  # one epoch is a permutation of the windows
  seen = []
  for window in epoch:
    assert window[0] == EOT and len(window) == 17
    content = window[window >= 0]
    assert (window[len(content):] == -1).all()  # padding only at the end
    cuts = np.flatnonzero(content == EOT)
    seen += [len(d) for d in np.split(content, cuts)[1:]]
  # each document once, whole (the next EOT, a piece of 1, its last target) or cut to 17
  assert sorted(n for n in seen if n > 1) == sorted(min(n, 17) for n in lengths)

  batch = batches(0)
  padded = batch["targets"] < 0
  assert padded.any() and (batch["inputs"][padded] == EOT).all()
  assert (batch["inputs"][:, 0] == EOT).all()  # every window starts a document
  for segments, pad in zip(batch["segment_ids"], padded):  # no real token reads padding
    assert not set(segments[pad]) & set(segments[~pad])


def test_the_store_index_reads_as_the_array_index_and_pickles_small(tmp_path, shards, tok):  # noqa: F811
  raw, _ = shards
  prepared = preparation.prepare(f"{raw}/*", tmp_path / "s", tok, log=lambda _: None)
  with pytest.raises(DataError, match="no whole-document index for seq_len 32.*"
                                      "--whole_document_windows=32"):
    packing.WholeDocuments.open(prepared, 32)
  on_store = packing.build(prepared, 32)
  stream = np.asarray(prepared[:])
  in_memory = packing.WholeDocuments.of_array(stream, tok.eot_id, 32)
  assert len(on_store) == len(in_memory) > 4 * 50
  assert all(on_store.window(i) == in_memory.window(i) for i in range(len(on_store)))
  first_of_shard = prepared.manifest["shards"][2]["offset"]
  assert first_of_shard in {on_store.window(i)[0] for i in range(len(on_store))}  # none crosses
  batches = text.WindowBatches(prepared, 32, 8, "whole_documents", 1, tok.eot_id,
                               documents=on_store)
  assert len(pickle.dumps(batches)) < 5000
  copy = pickle.loads(pickle.dumps(batches))
  assert all(np.array_equal(copy(3)[k], batches(3)[k]) for k in batches(3))

  (tmp_path / "s" / "shard-00001.json").unlink()  # the store remade with other shards
  preparation.prepare(f"{raw}/[abd]*", tmp_path / "s", tok, log=lambda _: None)
  with pytest.raises(DataError, match="built for other shards"):
    packing.WholeDocuments.open(store.TokenStore.open(tmp_path / "s"), 32)


def test_raw_corpora_get_their_index_and_user_stores_must_have_one(tmp_path, shards):  # noqa: F811
  raw, _ = shards
  config = data_config(f"{raw}/[abc]*", f"{raw}/d.txt", packing="whole_documents")
  built = data_lib.build(config, seed=0, workdir=str(tmp_path / "w"))
  assert list((tmp_path / "w" / "data").glob("train-*/windows-32/index.json"))
  batch = next(built.train_iterator())
  assert (batch["inputs"][:, 0] == built.tokenizer.eot_id).all()
  assert set(batch) == {"inputs", "targets", "segment_ids"}
  assert (built.evaluation[0]["inputs"][:, 0] == built.tokenizer.eot_id).all()  # validation too

  store_dir = next((tmp_path / "w" / "data").glob("validation-*"))
  config = data_config(store_dir, store_dir, packing="whole_documents", seq_len=64)
  config.tokenizer.model_file = str(next((tmp_path / "w" / "data").glob("tokenizer-*")))
  with pytest.raises(DataError, match="prepare --output=.*--whole_document_windows=64"):
    data_lib.build(config, seed=0, workdir=str(tmp_path / "other"))
