r"""The data path: prepare throughput, training-read throughput, and start-up cost against
corpus size.

    python benchmarks/data.py --record

* **prepare**: the shipped TinyStories training text, ``--copies`` times over, in each of
  ``--shards`` input files,
  prepared (``data/preparation.py``, a SentencePiece vocabulary of 2048) with 1 and 2
  workers: tokens/s, and tokens/s per worker.
* **read**: this host's slice of training batches from that store through the grain pipeline
  with 0 and 2 workers, at one v5p-128 host's share of the v2 small layout (64 rows of 4097
  tokens a step: 1024 x 4096 over 16 hosts), in tokens/s, beside what that host consumes
  (docs/scaling.md: at most 29.7k tokens/s per chip, 4 chips a host).
* **startup**: in a fresh process, opening a store of N tokens (N = 1M real tokens; 100M, 1B
  and 10^12 in sparse shards of 1B tokens, which the file system stores without writing them),
  building the batcher and reading 5 batches, both packings: seconds and peak RSS, which must
  not grow with N.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import recording  # benchmarks/recording.py, beside this script

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HOST_ROWS, SEQ_LEN = 64, 4096  # one v5p-128 host's rows of the v2 small layout
HOST_CONSUMES = 4 * 29.7e3  # tokens/s: 4 chips at the compiled step-time floor

STARTUP = r"""
import json, resource, sys, time
started = time.time()
from mosaics_jax.data import store, text
opened = store.TokenStore.open(sys.argv[1])
rows = {}
for packing in ("random_windows", "documents"):
  batches = text.WindowBatches(opened, 4096, 64, packing, 0, opened.eot_id, 3, 16)
  for g in range(5):
    batches(g)
print(json.dumps({"seconds": time.time() - started,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def sparse_store(directory: pathlib.Path, tokens: int, shard_tokens: int = 10**9) -> None:
  """A store of ``tokens`` zeros in sparse shards (no disk written) with a real manifest."""
  from mosaics_jax.data import store  # pylint: disable=import-outside-toplevel
  directory.mkdir(parents=True)
  shards, offset, index = [], 0, 0
  while offset < tokens:
    count = min(shard_tokens, tokens - offset)
    name = store.shard_name(index)
    with open(directory / f"{name}.bin", "wb") as f:
      f.truncate(count * 2)
    shards.append({"name": name, "offset": offset, "tokens": count, "documents": 0,
                   "sha256": "", "source": "sparse"})
    offset, index = offset + count, index + 1
  manifest = {"format": store.FORMAT, "dtype": "<u2", "eot_id": 2, "vocab_size": 2048,
              "tokens": tokens, "tokenizer": {"kind": "none", "hash": ""}, "shards": shards}
  (directory / store.MANIFEST).write_text(json.dumps(manifest))


def measure_prepare(work: pathlib.Path, shards: int, copies: int) -> tuple[list[dict],
                                                                         pathlib.Path]:
  from mosaics_jax.data import corpus, preparation  # pylint: disable=import-outside-toplevel
  from mosaics_jax.data import tokenizer as tokenizers  # pylint: disable=import-outside-toplevel
  raw = work / "raw"
  raw.mkdir()
  text = (corpus.RESOURCES / "tinystories" / "train.txt").read_text()
  for i in range(shards):
    (raw / f"part-{i:03d}.txt").write_text("\n".join([text] * copies))
  tok = tokenizers.train_tokenizer(corpus.read_documents(str(raw / "part-000.txt")), 2048)
  rows = []
  for workers in (1, 2):
    started = time.time()
    prepared = preparation.prepare(f"{raw}/*.txt", work / f"store-{workers}", tok,
                                   workers=workers, log=lambda _: None)
    seconds = time.time() - started
    rows.append({"part": "prepare", "setting": f"{workers} worker(s), {shards} shards",
                 "tokens": len(prepared), "seconds": seconds,
                 "tokens_per_second": len(prepared) / seconds,
                 "per_worker": len(prepared) / seconds / workers})
  return rows, work / "store-1"


def measure_read(store_dir: pathlib.Path, steps: int) -> list[dict]:
  from mosaics_jax.data import pipeline, store, text  # pylint: disable=import-outside-toplevel
  opened = store.TokenStore.open(store_dir)
  batches = text.WindowBatches(opened, SEQ_LEN, HOST_ROWS * 16, "random_windows", 0,
                               opened.eot_id, 3, 16)
  rows = []
  for workers in (0, 2):
    iterator = pipeline.train_iterator(batches, workers)
    next(iterator)  # workers started
    started = time.time()
    for _ in range(steps):
      next(iterator)
    seconds = time.time() - started
    rate = steps * HOST_ROWS * (SEQ_LEN + 1) / seconds
    rows.append({"part": "read", "setting": f"{workers} grain workers, {HOST_ROWS} x "
                 f"{SEQ_LEN + 1} a step", "tokens": steps * HOST_ROWS * (SEQ_LEN + 1),
                 "seconds": seconds, "tokens_per_second": rate,
                 "per_worker": rate / HOST_CONSUMES})
    del iterator
  return rows


def measure_startup(work: pathlib.Path, prepared: pathlib.Path) -> list[dict]:
  from mosaics_jax.data import store  # pylint: disable=import-outside-toplevel
  rows = []
  for label, tokens in (("prepared", len(store.TokenStore.open(prepared))),
                        ("sparse", 10**8), ("sparse", 10**9), ("sparse", 10**12)):
    directory = prepared if label == "prepared" else work / f"sparse-{tokens}"
    if label == "sparse":
      sparse_store(directory, tokens)
    out = subprocess.run([sys.executable, "-c", STARTUP, str(directory)], capture_output=True,
                         text=True, check=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    found = json.loads(out.stdout.splitlines()[-1])
    rows.append({"part": "startup", "setting": f"open + 10 batches, {label} store", "tokens": tokens,
                 "seconds": found["seconds"], "tokens_per_second": 0.0,
                 "per_worker": found["peak_rss_mb"]})
  return rows


def table(rows: list[dict]) -> str:
  lines = ["| part | setting | tokens | seconds | tokens/s | per worker / of host need / peak RSS |",
           "| --- | --- | ---: | ---: | ---: | ---: |"]
  for row in rows:
    last = {"prepare": f"{row['per_worker']:,.0f} tokens/s",
            "read": f"{row['per_worker']:.1f}x",
            "startup": f"{row['per_worker']:,.0f} MB"}[row["part"]]
    rate = f"{row['tokens_per_second']:,.0f}" if row["tokens_per_second"] else "-"
    lines.append(f"| {row['part']} | {row['setting']} | {row['tokens']:,} | "
                 f"{row['seconds']:.2f} | {rate} | {last} |")
  return "\n".join(lines)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--shards", type=int, default=8, help="input files for prepare")
  parser.add_argument("--copies", type=int, default=20, help="copies of the text per file")
  parser.add_argument("--steps", type=int, default=20, help="batches read per setting")
  recording.add_flags(parser)
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
    work = pathlib.Path(tmp)
    rows, prepared = measure_prepare(work, args.shards, args.copies)
    rows += measure_read(prepared, args.steps)
    rows += measure_startup(work, prepared)
  recording.report(rows, table(rows), args, "Data path", "data.py",
                   argv if argv is not None else sys.argv[1:], recording.device())
  return rows


if __name__ == "__main__":
  main()
