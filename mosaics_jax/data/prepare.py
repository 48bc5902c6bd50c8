r"""Tokenize a corpus once into a token store, shard by shard (``data/preparation.py``).

    python -m mosaics_jax.data.prepare --inputs='/data/stories/*.jsonl.gz' \
        --output=gs://BUCKET/stories-sp32k --tokenizer=sentencepiece:32000 --workers=16

On a Beam cluster, the same command with ``--runner=beam`` and Beam's own options after ``--``:

    python -m mosaics_jax.data.prepare --inputs='gs://BUCKET/raw/*.jsonl.gz' \
        --output=gs://BUCKET/stories-sp32k --tokenizer=gs://BUCKET/sp32k.model --runner=beam \
        -- --runner=DataflowRunner --project=PROJECT --region=REGION \
        --temp_location=gs://BUCKET/tmp --extra_package=dist/mosaics_jax-0.1.0-py3-none-any.whl

(the wheel from ``pip wheel --no-deps . -w dist``, so Dataflow's workers have the tokenizers).

Then train on it with ``--config.data.train_files=gs://BUCKET/stories-sp32k`` (and
``validation_files``). A killed prepare, run again, redoes only its unfinished shards.
``--whole_document_windows=4096`` also builds the index ``packing="whole_documents"`` reads
(``data/packing.py``); given with ``--output`` alone, it indexes an existing store. Exits 1
with the problem and the fix on bad input.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from mosaics_jax.data import corpus, packing, preparation, store
from mosaics_jax.data.corpus import DataError


def main(argv) -> None:
  values = flags.FLAGS
  if len(argv) > 1 and values.runner != "beam":
    raise app.UsageError(f"unexpected arguments {argv[1:]}; every option is a --flag (only "
                         "--runner=beam takes Beam's pipeline options, after --)")
  try:
    lengths = [int(n) for n in values.whole_document_windows]
  except ValueError as error:
    raise app.UsageError(f"--whole_document_windows takes seq_len integers: {error}") from error
  index_only = not values.inputs and lengths
  try:
    if index_only:
      prepared = store.TokenStore.open(values.output)
    elif not (values.inputs and values.tokenizer):
      raise app.UsageError("give --inputs and --tokenizer (or only --whole_document_windows, "
                           "to index an existing store)")
    else:
      prepared = preparation.prepare(",".join(values.inputs), values.output, values.tokenizer,
                                     fmt=values.format, text_field=values.text_field,
                                     workers=values.workers, runner=values.runner,
                                     pipeline_options=argv[1:])
    if values.verify:
      prepared.verify()
    windows = [len(packing.build(prepared, n)) for n in lengths]
  except DataError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)
  print(f"{values.output}: {len(prepared):,} tokens in {len(prepared.manifest['shards'])} "
        f"shards, {prepared.dtype.name}, vocabulary {prepared.vocab_size:,}"
        + (", checksums verified" if values.verify else "")
        + "".join(f"; {count:,} whole-document windows of {n}" for n, count in
                  zip(lengths, windows)))

if __name__ == "__main__":
  flags.DEFINE_list("inputs", None, "Input files: comma-separated globs, local or in a bucket.")
  flags.DEFINE_string("output", None, "The store directory to write (local or a bucket).")
  flags.DEFINE_string("tokenizer", None,
                      "A SentencePiece .model, tiktoken:gpt2=RANKS (or llama3), a Hugging Face "
                      "tokenizer.json, or sentencepiece:VOCAB to train one.")
  flags.DEFINE_enum("format", "auto", list(corpus.FORMATS), "Input format (auto: by extension).")
  flags.DEFINE_string("text_field", "text", "The document field of JSONL and Parquet inputs.")
  flags.DEFINE_enum("runner", "local", list(preparation.RUNNERS),
                    "local: a pool of --workers processes; beam: an Apache Beam pipeline, its "
                    "options after -- (the DirectRunner without them).")
  flags.DEFINE_integer("workers", os.cpu_count() or 1,
                       "Local runner: processes, one input file each at a time.")
  flags.DEFINE_bool("verify", False, "Also check every shard's SHA-256 (reads the whole store).")
  flags.DEFINE_list("whole_document_windows", [],
                    "seq_len values to index the store for packing='whole_documents'.")
  flags.mark_flags_as_required(["output"])
  app.run(main)
