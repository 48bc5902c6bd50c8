"""Tokenizers behind one small interface: ``encode`` texts to id lists, ``decode`` ids,
``vocab_size``, ``eot_id`` (the token before every document), ``hash`` (of the model's bytes),
``kind``.

* SentencePiece (``Tokenizer``): a ``.model`` file, or trained from the corpus (cached in the
  workdir, or saved with a prepared store). Its end-of-text token is ``</s>`` (id 2); byte
  fallback is on, so any UTF-8 text encodes without unknown tokens.
* tiktoken (``TiktokenTokenizer``, ``tiktoken:PRESET=RANKS_FILE``): a local ranks file with a
  preset's pattern and special tokens. ``gpt2``: ``<|endoftext|>`` = 50256 (the official
  BabiStories recipe's vocabulary, 50,304 after rounding; the ranks are tiktoken's
  ``r50k_base.tiktoken``). ``llama3``: the 128,000 ranks of Llama 3's ``tokenizer.model``, then
  256 special tokens, ``<|begin_of_text|>`` = 128000 and ``<|end_of_text|>`` = 128001.
* Hugging Face (``HuggingFaceTokenizer``): a ``tokenizer.json`` through the ``tokenizers``
  package; end of text is the first of ``<|endoftext|>``, ``<|end_of_text|>``, ``</s>``,
  ``<eos>`` it has.

``load(spec)`` takes any of them. Nothing is downloaded: files are local or in a bucket.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from typing import Sequence

import numpy as np
import sentencepiece as spm

from mosaics_jax import storage
from mosaics_jax.data.corpus import DataError

MODEL_TYPES = ("unigram", "bpe")


def _known_ids(ids, vocab_size: int) -> list[int]:
  """``ids`` as a flat list without the ones outside the vocabulary (the model's padded rows,
  ignored targets), which every decoder would reject."""
  return [int(i) for i in np.asarray(ids).reshape(-1) if 0 <= int(i) < vocab_size]


class Tokenizer:
  """A thin wrapper: ``encode`` texts to id lists, ``decode`` ids, ``eot_id``, ``vocab_size``."""

  kind = "sentencepiece"

  def __init__(self, model_proto: bytes):
    self.model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.hash = hashlib.sha256(model_proto).hexdigest()[:16]

  def __getstate__(self):  # workers rebuild the processor from the model's bytes
    return {"model_proto": self.model_proto}

  def __setstate__(self, state):
    self.__init__(state["model_proto"])

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
    return self._sp.decode(_known_ids(ids, self.vocab_size))

  def save(self, path) -> None:
    storage.write_bytes(path, self.model_proto)


def _read(path: str, what: str) -> bytes:
  try:
    return storage.path(path).read_bytes()
  except (OSError, FileNotFoundError) as error:
    raise DataError(f"Cannot read the {what} {path!r} ({error}); {WHERE[what]}") from error


WHERE = {
    "tiktoken ranks file": "GPT-2's is tiktoken's r50k_base.tiktoken (openaipublic.blob.core."
                           "windows.net/encodings/r50k_base.tiktoken), Llama 3's the "
                           "tokenizer.model of Meta's release; download it once, then pass its "
                           "path.",
    "tokenizer.json": "it comes with a Hugging Face model repository (tokenizer.json); download "
                      "it once, then pass its path.",
}

TIKTOKEN_PRESETS = {
    # GPT-2's pattern (tiktoken's r50k_base); <|endoftext|> at its fixed id.
    "gpt2": dict(pattern=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
                 special=lambda base: {"<|endoftext|>": 50256}, eot="<|endoftext|>"),
    # Llama 3: 256 special tokens after the ranks.
    "llama3": dict(
        pattern=r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
        special=lambda base: {name: base + i for i, name in enumerate(
            ["<|begin_of_text|>", "<|end_of_text|>"] +
            [f"<|reserved_special_token_{i}|>" for i in range(254)])},
        eot="<|end_of_text|>"),
}


class TiktokenTokenizer:
  """A tiktoken BPE from a local ranks file (``base64-token rank`` lines) and a preset."""

  kind = "tiktoken"

  def __init__(self, preset: str, ranks: bytes):
    try:
      import tiktoken  # pylint: disable=import-outside-toplevel
    except ImportError as error:
      raise DataError("tiktoken tokenizers need the tiktoken package: pip install "
                      "'mosaics_jax[tokenizers]'.") from error
    if preset not in TIKTOKEN_PRESETS:
      raise DataError(f"Unknown tiktoken preset {preset!r}; choose one of "
                      f"{sorted(TIKTOKEN_PRESETS)} (tiktoken:gpt2=PATH).")
    self.preset, self.ranks = preset, ranks
    mergeable = {}
    for number, line in enumerate(ranks.splitlines(), 1):
      if line.strip():
        try:
          token, rank = line.split()
          mergeable[base64.b64decode(token)] = int(rank)
        except ValueError as error:
          raise DataError(f"Line {number} of the tiktoken ranks file is not 'BASE64 RANK' "
                          f"({error}); is it a .tiktoken file?") from error
    settings = TIKTOKEN_PRESETS[preset]
    special = settings["special"](len(mergeable))
    self._encoding = tiktoken.Encoding(f"mosaics_jax_{preset}", pat_str=settings["pattern"],
                                       mergeable_ranks=mergeable, special_tokens=special)
    self.eot_id = special[settings["eot"]]
    self.vocab_size = self._encoding.n_vocab
    self.hash = hashlib.sha256(preset.encode() + b"\0" + ranks).hexdigest()[:16]

  @classmethod
  def load(cls, spec: str) -> "TiktokenTokenizer":
    preset, _, path = spec[len("tiktoken:"):].partition("=")
    if not path:
      raise DataError(f"{spec!r}: give the preset and the ranks file, tiktoken:gpt2=PATH.")
    return cls(preset, _read(path, "tiktoken ranks file"))

  def __getstate__(self):
    return {"preset": self.preset, "ranks": self.ranks}

  def __setstate__(self, state):
    self.__init__(state["preset"], state["ranks"])

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    return self._encoding.encode_ordinary_batch(list(texts))

  def decode(self, ids) -> str:
    return self._encoding.decode(_known_ids(ids, self.vocab_size))


class HuggingFaceTokenizer:
  """A Hugging Face ``tokenizer.json`` (the ``tokenizers`` package)."""

  kind = "huggingface"
  END_OF_TEXT = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")

  def __init__(self, definition: bytes):
    try:
      import tokenizers  # pylint: disable=import-outside-toplevel
    except ImportError as error:
      raise DataError("tokenizer.json files need the tokenizers package: pip install "
                      "'mosaics_jax[tokenizers]'.") from error
    self.definition = definition
    try:
      self._tokenizer = tokenizers.Tokenizer.from_str(definition.decode())
    except Exception as error:  # the package raises plain Exceptions for bad files
      raise DataError(f"Not a Hugging Face tokenizer.json ({error}).") from error
    found = [self._tokenizer.token_to_id(t) for t in self.END_OF_TEXT]
    found = [i for i in found if i is not None]
    if not found:
      raise DataError(f"The tokenizer.json has no end-of-text token (none of "
                      f"{self.END_OF_TEXT}); add one as a special token.")
    self.eot_id = found[0]
    self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
    self.hash = hashlib.sha256(definition).hexdigest()[:16]

  def __getstate__(self):
    return {"definition": self.definition}

  def __setstate__(self, state):
    self.__init__(state["definition"])

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids) -> str:
    return self._tokenizer.decode(_known_ids(ids, self.vocab_size))


def load(spec: str):
  """A tokenizer from a spec: ``tiktoken:PRESET=RANKS``, a ``tokenizer.json``, or a
  SentencePiece ``.model`` file."""
  spec = spec.strip()
  if spec.startswith("tiktoken:"):
    return TiktokenTokenizer.load(spec)
  if spec.endswith(".json"):
    return HuggingFaceTokenizer(_read(spec, "tokenizer.json"))
  return Tokenizer.load(spec)


def train_tokenizer(documents: Sequence[str], vocab_size: int, model_type: str = "unigram",
                    max_sentences: int = 300_000, num_threads: int = 1) -> Tokenizer:
  """Train a SentencePiece model on the documents (the first ``max_sentences``). One thread
  (the default) gives the same model on every host; the prepare command, which trains once
  and saves the model with its store, uses all cores."""
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
        max_sentence_length=1 << 16, num_threads=num_threads,
        minloglevel=2)
  except RuntimeError as error:
    # Too large for the corpus's text, or too small for its characters: SentencePiece says
    # which ("too high" / "smaller than required_chars").
    fix = "raise" if "smaller than required" in str(error) else "lower"
    raise DataError(f"SentencePiece could not train a {vocab_size}-token vocabulary on this "
                    f"corpus ({error}); {fix} config.data.tokenizer.vocab_size.") from error
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
  """The given tokenizer (any ``load`` spec), or one trained on ``documents`` and cached in
  ``cache_dir``."""
  if model_file:
    return load(model_file)
  key = fingerprint(documents, vocab_size=vocab_size, model_type=model_type)
  path = storage.path(cache_dir) / f"tokenizer-{key}.model"
  if path.exists():
    return Tokenizer.load(path)
  tokenizer = train_tokenizer(documents, vocab_size, model_type)
  tokenizer.save(path)  # written whole: concurrent processes never read half a file
  return tokenizer
