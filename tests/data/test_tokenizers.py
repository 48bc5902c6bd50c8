"""The tokenizers users already have: tiktoken ranks files with the gpt2 and llama3 presets and
Hugging Face tokenizer.json files, each generated here, through the one interface, prepare and
training."""

import base64
import pickle

import numpy as np
import pytest

from mosaics_jax import data as data_lib
from mosaics_jax.data import corpus, preparation, tokenizer as tokenizers
from mosaics_jax.data.corpus import DataError
from tests.data.test_store import data_config

DOCS = corpus.read_documents("package:tinystories/validation.txt")[:60]


def ranks_file(path):
  """A byte-level BPE: the 256 bytes, then 'th', 'the', ' the'."""
  tokens = [bytes([b]) for b in range(256)] + [b"th", b"the", b" the"]
  path.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % i for i, t in enumerate(tokens)))
  return path


def tokenizer_json(path):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=import-outside-toplevel
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(DOCS, trainers.BpeTrainer(
      vocab_size=400, special_tokens=["<|endoftext|>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.save(str(path))
  return path


@pytest.mark.parametrize("preset, eot", [("gpt2", 50256), ("llama3", 260)])
def test_tiktoken_presets_round_trip(tmp_path, preset, eot):
  tok = tokenizers.load(f"tiktoken:{preset}={ranks_file(tmp_path / 'r.tiktoken')}")
  assert tok.kind == "tiktoken" and tok.eot_id == eot
  assert tok.vocab_size == (50257 if preset == "gpt2" else 259 + 256)
  ids = tok.encode(["the cat", "then", "a the"])
  assert ids == [[257, 32, 99, 97, 116], [257, 110], [97, 258]]  # merged as the ranks say
  assert [tok.decode(i) for i in ids] == ["the cat", "then", "a the"]
  assert tok.encode(["<|endoftext|>"])[0] != [eot]  # special tokens in text stay text
  again = pickle.loads(pickle.dumps(tok))  # what prepare's workers receive
  assert again.hash == tok.hash and again.encode(["the"]) == [[257]]


def test_hugging_face_tokenizer_json(tmp_path):
  tok = tokenizers.load(str(tokenizer_json(tmp_path / "tokenizer.json")))
  assert tok.kind == "huggingface" and tok.eot_id == 0 and tok.vocab_size <= 400
  ids = tok.encode(DOCS[:2])
  assert tok.decode(ids[1]) == DOCS[1]
  assert pickle.loads(pickle.dumps(tok)).hash == tok.hash


def test_prepare_and_train_with_tiktoken_and_tokenizer_json(tmp_path):
  (tmp_path / "train.txt").write_text("\n".join(DOCS[:40]))
  (tmp_path / "val.txt").write_text("\n".join(DOCS[40:]))
  for spec in (f"tiktoken:gpt2={ranks_file(tmp_path / 'r.tiktoken')}",
               str(tokenizer_json(tmp_path / "tokenizer.json"))):
    name = "tt" if spec.startswith("tiktoken") else "hf"
    made = preparation.prepare(str(tmp_path / "train.txt"), tmp_path / name, spec,
                               log=lambda _: None)
    tok = tokenizers.load(spec)
    assert made.tokenizer_hash == tok.hash and made.dtype == np.dtype("<u2")
    assert made.manifest["tokenizer"]["kind"] == tok.kind
    np.testing.assert_array_equal(made[:5], [tok.eot_id] + tok.encode(DOCS[:1])[0][:4])
    config = data_config(tmp_path / "train.txt", tmp_path / "val.txt", seq_len=16)
    config.tokenizer.model_file = spec  # raw corpora with a given tokenizer
    built = data_lib.build(config, seed=0, workdir=str(tmp_path / f"work-{name}"))
    assert built.vocab_size == tok.vocab_size and built.tokenizer.hash == tok.hash
    assert next(built.train_iterator())["inputs"].max() < tok.vocab_size


def test_missing_and_bad_tokenizer_files_say_where_they_come_from(tmp_path):
  with pytest.raises(DataError, match="r50k_base.tiktoken"):
    tokenizers.load(f"tiktoken:gpt2={tmp_path / 'missing.tiktoken'}")
  with pytest.raises(DataError, match="Unknown tiktoken preset 'gpt5'"):
    tokenizers.load(f"tiktoken:gpt5={ranks_file(tmp_path / 'r.tiktoken')}")
  with pytest.raises(DataError, match="tiktoken:gpt2=PATH"):
    tokenizers.load("tiktoken:gpt2")
  (tmp_path / "bad.tiktoken").write_text("not a ranks file\n")
  with pytest.raises(DataError, match="Line 1 of the tiktoken ranks file"):
    tokenizers.load(f"tiktoken:gpt2={tmp_path / 'bad.tiktoken'}")
  with pytest.raises(DataError, match="Hugging Face model repository"):
    tokenizers.load(str(tmp_path / "tokenizer.json"))
  (tmp_path / "x.json").write_text("{}")
  with pytest.raises(DataError, match="Not a Hugging Face tokenizer.json"):
    tokenizers.load(str(tmp_path / "x.json"))


def test_a_vocabulary_sentencepiece_cannot_train_says_which_way_to_go():
  with pytest.raises(DataError, match="raise config.data.tokenizer.vocab_size"):
    tokenizers.train_tokenizer(DOCS, 300)  # fewer ids than the corpus has characters
  with pytest.raises(DataError, match="lower config.data.tokenizer.vocab_size"):
    tokenizers.train_tokenizer(DOCS[:5], 5000)
