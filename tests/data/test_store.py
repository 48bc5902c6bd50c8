"""Token stores: prepare (compressed and Parquet shards, workers, restarts, a real kill),
windows across shards, the official train.bin, training on a store, and every bad input."""

import gzip
import json
import os
import pickle
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest
import zstandard

from mosaics_jax import data as data_lib
from mosaics_jax.data import corpus, preparation, store, text, tokenizer as tokenizers
from mosaics_jax.data.corpus import DataError


@pytest.fixture(scope="module")
def documents():
  return corpus.read_documents("package:tinystories/train.txt")[:400]


@pytest.fixture(scope="module")
def tok(documents):
  return tokenizers.train_tokenizer(documents, 320)


@pytest.fixture
def shards(tmp_path, documents):
  """The documents in four files of four formats, two of them compressed."""
  parts = np.array_split(np.arange(len(documents)), 4)
  docs = [[documents[i] for i in part] for part in parts]
  raw = tmp_path / "raw"
  raw.mkdir()
  (raw / "a.txt.gz").write_bytes(gzip.compress("\n".join(docs[0]).encode()))
  (raw / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
      "\n".join(json.dumps({"text": d}) for d in docs[1]).encode()))
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  pq.write_table(pa.table({"text": docs[2]}), raw / "c.parquet", row_group_size=25)
  (raw / "d.txt").write_text("\n".join(docs[3]))
  return raw, [d for part in docs for d in part]


def files(directory):
  return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_prepare_is_the_stream_of_every_shard_and_independent_of_workers(tmp_path, shards, tok):
  raw, docs = shards
  one = preparation.prepare(f"{raw}/*", tmp_path / "one", tok, workers=1, log=lambda _: None)
  two = preparation.prepare(f"{raw}/*", tmp_path / "two", tok, workers=2, log=lambda _: None)
  assert files(tmp_path / "one") == files(tmp_path / "two")  # byte-identical
  np.testing.assert_array_equal(one[:], text.encode_stream(docs, tok))
  manifest = one.manifest
  assert [s["source"].rsplit("/", 1)[1] for s in manifest["shards"]] == [
      "a.txt.gz", "b.jsonl.zst", "c.parquet", "d.txt"]
  assert manifest["dtype"] == "<u2" and one.eot_id == tok.eot_id
  assert sum(s["documents"] for s in manifest["shards"]) == len(docs)
  starts = np.frombuffer((tmp_path / "one" / "shard-00001.docs").read_bytes(), "<i8")
  assert (one[manifest["shards"][1]["offset"]:][starts] == tok.eot_id).all()


def test_the_beam_runner_writes_the_local_runners_bytes_and_resumes(tmp_path, shards, tok):
  """The Beam DirectRunner, with two shards already done: it redoes the other two only, and
  the store is byte-identical to the local runner's; a bad input fails with its name."""
  raw, _ = shards
  local = preparation.prepare(f"{raw}/*", tmp_path / "local", tok, log=lambda _: None)
  preparation.prepare(f"{raw}/[ab]*", tmp_path / "beam", tok, log=lambda _: None)
  (tmp_path / "beam" / "manifest.json").unlink()
  lines = []
  beam = preparation.prepare(f"{raw}/*", tmp_path / "beam", tok, runner="beam",
                             pipeline_options=["--runner=DirectRunner"], log=lines.append)
  assert lines[0] == "prepare: 2 of 4 shards already done; 2 to go"
  assert files(tmp_path / "beam") == files(tmp_path / "local")
  np.testing.assert_array_equal(beam[:], local[:])
  (raw / "latin.txt").write_bytes(b"fine\ncaf\xe9\n")
  with pytest.raises(DataError, match=r"latin.txt:2 is not UTF-8"):
    preparation.prepare(str(raw / "latin.txt"), tmp_path / "bad", tok, runner="beam",
                        log=lambda _: None)
  assert not (tmp_path / "bad" / "manifest.json").exists()


def test_windows_cross_shard_boundaries_as_in_one_array(tmp_path, shards, tok):
  raw, _ = shards
  prepared = preparation.prepare(f"{raw}/*", tmp_path / "s", tok, log=lambda _: None)
  stream = np.asarray(prepared[:])
  boundary = prepared.manifest["shards"][2]["offset"]
  np.testing.assert_array_equal(prepared[boundary - 5:boundary + 7], stream[boundary - 5:boundary + 7])
  np.testing.assert_array_equal(prepared[3:len(stream) - 2], stream[3:-2])  # every shard
  for packing in ("random_windows", "documents"):
    on_store = text.WindowBatches(prepared, 32, 8, packing, 1, tok.eot_id)
    in_memory = text.WindowBatches(stream, 32, 8, packing, 1, tok.eot_id)
    for g in (0, 5, 40):
      assert all(np.array_equal(on_store(g)[k], in_memory(g)[k]) for k in on_store(g))
  # grain workers receive the manifest, not the tokens
  assert len(pickle.dumps(text.WindowBatches(prepared, 32, 8, "documents", 1, 2))) < 5000


def test_a_killed_prepare_redoes_only_its_unfinished_shards(tmp_path, shards, tok):
  raw, _ = shards
  out = tmp_path / "s"
  preparation.prepare(f"{raw}/*", out, tok, log=lambda _: None)
  before = files(out)
  (out / "shard-00002.json").unlink()  # killed while writing shard 2, before the manifest
  (out / "manifest.json").unlink()
  (out / "shard-00002.bin").write_bytes(before["shard-00002.bin"][:100])
  untouched = {n: (out / n).stat().st_mtime_ns for n in ("shard-00000.bin", "shard-00003.bin")}
  lines = []
  preparation.prepare(f"{raw}/*", out, tok, log=lines.append)
  assert lines[0] == "prepare: 3 of 4 shards already done; 1 to go"
  assert files(out) == before
  assert all((out / n).stat().st_mtime_ns == t for n, t in untouched.items())


def test_the_official_train_bin_is_a_store(tmp_path):
  tokens = np.random.default_rng(0).integers(0, 50257, 5000).astype(np.uint16)
  tokens.tofile(tmp_path / "train.bin")
  official = store.TokenStore.from_bin(tmp_path / "train.bin")
  assert len(official) == 5000 and official.eot_id == 50256 and official.vocab_size == 50304
  np.testing.assert_array_equal(official[100:300], tokens[100:300])
  (tmp_path / "odd.bin").write_bytes(b"123")
  with pytest.raises(DataError, match="odd number of bytes"):
    store.TokenStore.from_bin(tmp_path / "odd.bin")


def data_config(train, validation, **overrides):
  config = ml_collections.ConfigDict(dict(
      source="text", train_files=str(train), validation_files=str(validation), format="auto",
      text_field="text", seq_len=32, batch_size=4, packing="random_windows", eval_batches=2,
      num_workers=0, tokenizer=dict(model_file="", vocab_size=320, model_type="unigram")))
  config.update(overrides)
  return config


def test_training_reads_prepared_stores_and_train_bin(tmp_path, shards, tok):
  raw, _ = shards
  preparation.prepare(f"{raw}/[abc]*", tmp_path / "train", tok, log=lambda _: None)
  preparation.prepare(f"{raw}/d.txt", tmp_path / "validation", tok, log=lambda _: None)
  tok.save(tmp_path / "tok.model")
  config = data_config(tmp_path / "train", tmp_path / "validation" / "manifest.json")
  config.tokenizer.model_file = str(tmp_path / "tok.model")
  built = data_lib.build(config, seed=0, workdir=str(tmp_path / "work"))
  assert built.vocab_size == 320 and built.tokenizer.hash == tok.hash
  assert next(built.train_iterator())["inputs"].shape == (4, 32)
  assert not (tmp_path / "work" / "data").exists()  # nothing prepared again

  np.arange(4000, dtype=np.uint16).tofile(tmp_path / "train.bin")
  np.arange(1000, dtype=np.uint16).tofile(tmp_path / "val.bin")
  official = data_lib.build(data_config(tmp_path / "train.bin", tmp_path / "val.bin"), seed=0,
                            workdir=str(tmp_path / "work"))
  assert official.vocab_size == 50304 and official.tokenizer is None
  window = next(official.train_iterator())["inputs"][0]
  np.testing.assert_array_equal(np.diff(window), 1)  # a slice of the file


def test_raw_corpora_are_prepared_once_into_the_workdir(tmp_path, shards):
  raw, _ = shards
  config = data_config(f"{raw}/[abc]*", f"{raw}/d.txt")
  first = data_lib.build(config, seed=0, workdir=str(tmp_path))
  stores = sorted(p.parent.name.split("-")[0] for p in (tmp_path / "data").glob("*/manifest.json"))
  assert stores == ["train", "validation"]
  shard = next((tmp_path / "data").glob("train-*/shard-00000.bin"))
  stamp = shard.stat().st_mtime_ns
  again = data_lib.build(config, seed=0, workdir=str(tmp_path))
  assert shard.stat().st_mtime_ns == stamp  # found by the files' names, sizes and times
  np.testing.assert_array_equal(next(first.train_iterator())["inputs"],
                                next(again.train_iterator())["inputs"])


def test_bad_stores_and_inputs_are_named(tmp_path, shards, tok):
  raw, _ = shards
  out = tmp_path / "s"
  prepared = preparation.prepare(f"{raw}/*", out, tok, log=lambda _: None)
  prepared.verify()
  damaged = bytearray((out / "shard-00002.bin").read_bytes())
  damaged[10] ^= 1
  (out / "shard-00002.bin").write_bytes(bytes(damaged))
  with pytest.raises(DataError, match="shard-00002.bin does not match its checksum"):
    store.TokenStore.open(out).verify()
  manifest = json.loads((out / "manifest.json").read_text())
  (out / "manifest.json").write_text(json.dumps(dict(manifest, vocab_size=70000)))
  with pytest.raises(DataError, match="vocabulary of 70,000 does not fit its dtype uint16"):
    store.TokenStore.open(out)
  (out / "manifest.json").write_text(json.dumps(manifest))
  (out / "shard-00001.bin").write_bytes((out / "shard-00001.bin").read_bytes()[:-2])
  with pytest.raises(DataError, match="shard-00001.bin has .* bytes.*truncated"):
    store.TokenStore.open(out)
  (out / "shard-00001.bin").unlink()
  with pytest.raises(DataError, match="shard-00001.bin of the store is missing"):
    store.TokenStore.open(out)
  with pytest.raises(DataError, match="has no manifest.json"):
    store.TokenStore.open(tmp_path)

  other = tokenizers.train_tokenizer(corpus.read_documents("package:tinystories/validation.txt"),
                                     330)
  with pytest.raises(DataError, match="made with another tokenizer"):
    preparation.prepare(f"{raw}/*", out, other, log=lambda _: None)
  other.save(tmp_path / "other.model")
  fresh = tmp_path / "fresh"
  preparation.prepare(f"{raw}/d.txt", fresh, tok, log=lambda _: None)
  config = data_config(fresh, fresh)
  config.tokenizer.model_file = str(tmp_path / "other.model")
  with pytest.raises(DataError, match="was prepared with tokenizer"):
    data_lib.build(config, seed=0, workdir=str(tmp_path / "w"))

  (raw / "empty.txt").write_text("\n\n")
  with pytest.raises(DataError, match="empty.txt contains no documents"):
    preparation.prepare(str(raw / "empty.txt"), tmp_path / "e", tok, log=lambda _: None)
  assert not list((tmp_path / "e").glob("*.json")) and not list((tmp_path / "e").glob("*.bin"))
  (raw / "latin.txt").write_bytes(b"fine\nalso fine\ncaf\xe9\n")
  with pytest.raises(DataError, match=r"latin.txt:3 is not UTF-8"):
    preparation.prepare(str(raw / "latin.txt"), tmp_path / "l", tok, log=lambda _: None)
  with pytest.raises(DataError, match="give the vocabulary size"):
    preparation.prepare(str(raw / "d.txt"), tmp_path / "v", "sentencepiece:big", log=lambda _: None)


def test_the_prepare_command_trains_its_tokenizer_once_and_fails_clearly(tmp_path, shards):
  raw, _ = shards
  command = [sys.executable, "-m", "mosaics_jax.data.prepare",
             f"--inputs={raw}/a.txt.gz,{raw}/d.txt", f"--output={tmp_path / 's'}",
             "--tokenizer=sentencepiece:320", "--workers=2", "--verify",
             "--whole_document_windows=32,64"]
  done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "tokens in 2 shards, uint16, vocabulary 320, checksums verified" in done.stdout
  assert "whole-document windows of 32" in done.stdout and (tmp_path / "s" / "windows-64" /
                                                            "index.json").exists()
  saved = tokenizers.Tokenizer.load(str(tmp_path / "s" / "tokenizer.model"))
  assert store.TokenStore.open(tmp_path / "s").tokenizer_hash == saved.hash
  bad = subprocess.run(command[:3] + [f"--inputs={raw}/nothing*", f"--output={tmp_path / 'x'}",
                                      "--tokenizer=sentencepiece:320"],
                       capture_output=True, text=True, timeout=300, check=False)
  assert bad.returncode == 1 and "error: No file matches" in bad.stderr
  unprepared = subprocess.run(command[:3] + [f"--output={tmp_path / 'x'}",
                                             "--whole_document_windows=32"],
                              capture_output=True, text=True, timeout=300, check=False)
  assert unprepared.returncode == 1 and "has no manifest.json" in unprepared.stderr
  beam = subprocess.run(command[:4] + [f"--output={tmp_path / 'b'}", "--runner=beam",
                                       f"--tokenizer={tmp_path / 's' / 'tokenizer.model'}",
                                       "--", "--runner=DirectRunner"],
                        capture_output=True, text=True, timeout=300, check=False)
  assert beam.returncode == 0, beam.stderr[-2000:]
  shards_of = lambda d: {p.name: p.read_bytes() for p in sorted(d.glob("shard-*"))}
  assert shards_of(tmp_path / "b") == shards_of(tmp_path / "s")
  stray = subprocess.run(command + ["--", "--runner=DirectRunner"], capture_output=True,
                         text=True, timeout=300, check=False)
  assert stray.returncode == 1 and "only --runner=beam takes" in stray.stderr


def test_prepare_killed_mid_shard_and_rerun_redoes_only_the_unfinished(tmp_path, documents, tok):
  """A real SIGKILL while shard 1 is half written: its input is a pipe that stops after the
  first chunk of documents, so the kill lands at a known place."""
  raw = tmp_path / "raw"
  raw.mkdir()
  (raw / "a.txt").write_text("\n".join(documents[:200]))
  (raw / "c.txt").write_text("\n".join(documents[200:]))
  piped = "\n".join(documents * 3).encode() + b"\n"  # 1,200 documents: more than one chunk
  os.mkfifo(raw / "b.txt")
  tok.save(tmp_path / "tok.model")
  out = tmp_path / "out"
  process = subprocess.Popen(
      [sys.executable, "-m", "mosaics_jax.data.prepare", f"--inputs={raw}/*", f"--output={out}",
       f"--tokenizer={tmp_path / 'tok.model'}", "--format=lines", "--workers=1"],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  with open(raw / "b.txt", "wb", buffering=0) as pipe:  # opens when prepare reaches shard 1
    pipe.write(piped)
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size for p in out.glob("shard-00001.bin.tmp*")):
      assert time.monotonic() < deadline and process.poll() is None, process.stdout.read()
      time.sleep(0.05)
    process.kill()
    process.wait()
  assert (out / "shard-00000.json").exists() and not (out / "shard-00001.json").exists()
  assert not (out / "manifest.json").exists()
  first = (out / "shard-00000.bin").stat().st_mtime_ns
  (raw / "b.txt").unlink()
  (raw / "b.txt").write_bytes(piped)

  lines = []
  preparation.prepare(f"{raw}/*", out, tok, fmt="lines", log=lines.append)
  assert lines[0] == "prepare: 1 of 3 shards already done; 2 to go"
  assert (out / "shard-00000.bin").stat().st_mtime_ns == first
  preparation.prepare(f"{raw}/*", tmp_path / "straight", tok, fmt="lines", log=lambda _: None)
  finished = {name: data for name, data in files(out).items() if ".tmp" not in name}
  assert finished == files(tmp_path / "straight")
