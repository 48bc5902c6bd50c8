"""SentencePiece tokenizers: trained from the corpus (cached in the workdir) or loaded.

The end-of-text token that separates documents is SentencePiece's ``</s>`` (id 2). Byte
fallback is on, so any UTF-8 text encodes without unknown tokens.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Sequence

import numpy as np
import sentencepiece as spm

from mosaics_jax import storage
from mosaics_jax.data.corpus import DataError

MODEL_TYPES = ("unigram", "bpe")


class Tokenizer:
  """A thin wrapper: ``encode`` texts to id lists, ``decode`` ids, ``eot_id``, ``vocab_size``."""

  def __init__(self, model_proto: bytes):
    self.model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

  @classmethod
  def load(cls, path: str) -> "Tokenizer":
    try:
      return cls(storage.path(path).read_bytes())
    except OSError as error:
      raise DataError(f"Cannot read tokenizer model {path!r}: {error}.") from error
    except RuntimeError as error:  # sentencepiece: not a model proto
      raise DataError(f"{path!r} is not a SentencePiece model ({error}).") from error

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def eot_id(self) -> int:
    return self._sp.eos_id()

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    return self._sp.encode(list(texts))

  def decode(self, ids) -> str:
    ids = [int(i) for i in np.asarray(ids).reshape(-1) if 0 <= int(i) < self.vocab_size]
    return self._sp.decode(ids)

  def save(self, path) -> None:
    storage.write_bytes(path, self.model_proto)


def train_tokenizer(documents: Sequence[str], vocab_size: int, model_type: str = "unigram",
                    max_sentences: int = 300_000) -> Tokenizer:
  """Train a SentencePiece model on the documents (the first ``max_sentences``)."""
  if model_type not in MODEL_TYPES:
    raise DataError(f"Unknown tokenizer type {model_type!r}; choose one of {MODEL_TYPES}.")
  if vocab_size < 300:
    raise DataError(f"Tokenizer vocab_size={vocab_size} is too small: byte fallback alone "
                    "needs 259 ids; use at least 300.")
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(documents[:max_sentences]), model_writer=model,
        vocab_size=vocab_size, model_type=model_type, byte_fallback=True,
        character_coverage=0.9995, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        max_sentence_length=1 << 16, num_threads=1,  # deterministic: same on every host
        minloglevel=2)
  except RuntimeError as error:
    raise DataError(f"SentencePiece could not train a {vocab_size}-token vocabulary on this "
                    f"corpus ({error}); lower config.data.tokenizer.vocab_size.") from error
  return Tokenizer(model.getvalue())


def fingerprint(documents: Sequence[str], **settings) -> str:
  """A hash of the training documents and settings: the cache key of a trained tokenizer."""
  digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
  for document in documents:
    digest.update(document.encode("utf-8", "replace"))
    digest.update(b"\0")
  return digest.hexdigest()[:16]


def load_or_train(model_file: str, documents: Sequence[str], vocab_size: int, model_type: str,
                  cache_dir) -> Tokenizer:
  """The given model file, or one trained on ``documents`` and cached in ``cache_dir``."""
  if model_file:
    return Tokenizer.load(model_file)
  key = fingerprint(documents, vocab_size=vocab_size, model_type=model_type)
  path = storage.path(cache_dir) / f"tokenizer-{key}.model"
  if path.exists():
    return Tokenizer.load(path)
  tokenizer = train_tokenizer(documents, vocab_size, model_type)
  tokenizer.save(path)  # written whole: concurrent processes never read half a file
  return tokenizer
