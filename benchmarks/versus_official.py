r"""Side by side with the official PyTorch code: one v1 training step (forward and backward of
the mean cross-entropy) of the official Library model and of ours, at the same shapes and the
same weights.

    python benchmarks/versus_official.py --official=/path/to/MemoryMosaics \
        --torch_python=/path/to/torch-venv/bin/python \
        --shapes=gpt2:1x512,small:4x1024,small:4x2048,small:1x4096 --record

``--official`` is a checkout of facebookresearch/MemoryMosaics; its naive model
(``Library/memory_mosaics/models/memory_mosaics.py``, the oracle of tests/parity) is imported
from there, never copied. PyTorch is not a dependency of mosaics_jax: ``--torch_python`` names
an interpreter that has it (``pip install 'mosaics_jax[torch]'`` puts it beside ours; the
default is this interpreter).

Each measurement is its own process, so its peak resident memory (``ru_maxrss``) is its own;
the official and our runs alternate ``--repeats`` times and the table keeps the median of each.
The official model builds its weights (seed 0), runs under ``torch.compile`` (its training
script's default; ``--eager`` adds a column without it) and writes them, with its first loss;
ours loads them with ``mosaics_jax.convert`` and must give the same loss (relative 1e-4), so
both sides compute the same function. Dropout is off on both sides and everything is float32.
A step's time is the median of ``--steps`` steps after ``--warmup`` (compilation excluded on
both sides). Beside the measured peak, our column gives XLA's compiled temporaries
(``memory_analysis``).

``--only_ours`` times ours alone, from our own initialisation, at shapes the official code
cannot hold (its T x T buffers); ``--loss_chunk`` sets our ``loss_chunk`` (the output layer and
loss in chunks of that many tokens).

Models: ``gpt2`` is the paper's GPT2-small-like Memory Mosaic (12 layers, d 768, 12 heads,
2688 slots); ``small`` has 4 layers, d 256, 4 heads, 896 slots (3.5 d). Both use the GPT-2
vocabulary (``--vocab``, 50304).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types

import numpy as np

MODELS = {"gpt2": dict(layers=12, width=768, heads=12, slots=2688),
          "small": dict(layers=4, width=256, heads=4, slots=896),
          "tiny": dict(layers=2, width=64, heads=4, slots=64)}  # seconds, for the tests
LOSS_RTOL = 1e-4


def parse_shapes(text: str) -> list[tuple[str, int, int]]:
  """'gpt2:1x512,small:4x1024' -> [('gpt2', 1, 512), ('small', 4, 1024)]."""
  shapes = []
  for entry in filter(None, (e.strip() for e in text.split(","))):
    try:
      model, size = entry.split(":")
      batch, seq_len = (int(n) for n in size.split("x"))
    except ValueError:
      raise SystemExit(f"--shapes entry {entry!r}: write MODEL:BATCHxLENGTH, e.g. small:4x1024.")
    if model not in MODELS:
      raise SystemExit(f"--shapes entry {entry!r}: unknown model {model!r}; choose "
                       f"{' or '.join(MODELS)}.")
    shapes.append((model, batch, seq_len))
  return shapes


def tokens(batch: int, seq_len: int, vocab: int) -> np.ndarray:
  """The same (batch, seq_len + 1) tokens on both sides."""
  return np.random.default_rng(0).integers(0, vocab, (batch, seq_len + 1), dtype=np.int64)


def peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def _timed(step, warmup: int, steps: int) -> tuple[float, float]:
  """(seconds of the first call, median seconds of ``steps`` calls after ``warmup``)."""
  started = time.perf_counter()
  step()
  first = time.perf_counter() - started
  for _ in range(warmup):
    step()
  times = []
  for _ in range(steps):
    started = time.perf_counter()
    step()
    times.append(time.perf_counter() - started)
  return first, statistics.median(times)


# ---------------------------------------------------------------------------------------------
# The two sides; each runs in a process of its own (``--worker``).


def _official_module(checkout: str):
  """Library/memory_mosaics/models/memory_mosaics.py as a module, without the package's
  ``__init__`` (which imports the CUDA-only variant)."""
  models_dir = os.path.join(checkout, "Library", "memory_mosaics", "models")
  if not os.path.exists(os.path.join(models_dir, "memory_mosaics.py")):
    raise SystemExit(f"--official={checkout!r} is not a MemoryMosaics checkout: "
                     f"{models_dir}/memory_mosaics.py is missing.")
  package = types.ModuleType("official_models")
  package.__path__ = [models_dir]
  sys.modules["official_models"] = package
  return importlib.import_module("official_models.memory_mosaics")


def run_official(args) -> dict:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise SystemExit(f"{sys.executable} has no PyTorch: pass --torch_python=an interpreter "
                     "that has it (pip install 'mosaics_jax[torch]').")
  module = _official_module(args.official)
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count())
  size = MODELS[args.model]
  model = module.StackAssoMem(
      vocab_size=args.vocab, n_head=size["heads"], n_embd=size["width"], n_layer=size["layers"],
      block_size=args.seq_len, ic_dropout=0.0, hd_dropout=0.0, pmem_size=size["slots"],
      config=types.SimpleNamespace(skip_tokens=0))
  model.train()
  if args.weights and not os.path.exists(args.weights):  # the first run of a shape writes them
    np.savez(args.weights, **{name: value.detach().numpy()
                              for name, value in model.state_dict().items()})
  data = torch.from_numpy(tokens(args.batch, args.seq_len, args.vocab))
  inputs, targets = data[:, :-1].contiguous(), data[:, 1:].contiguous()
  forward = torch.compile(model) if args.worker == "official" else model
  losses = []

  def step():
    model.zero_grad(set_to_none=True)
    _, loss = forward(inputs, targets)
    loss.backward()
    losses.append(float(loss.detach()))

  first, seconds = _timed(step, args.warmup, args.steps)
  return dict(seconds=seconds, first_seconds=first, loss=losses[0], peak_rss_gib=peak_rss_gib(),
              versions=f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def run_ours(args) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  from mosaics_jax import convert, losses, models  # pylint: disable=import-outside-toplevel

  if os.path.exists(args.weights):
    model, params = convert.load_official(args.weights)
  else:  # --only_ours: our own initialisation at the same shape
    size = MODELS[args.model]
    model = models.MosaicLM(models.MosaicConfig(
        version=1, vocab_size=args.vocab, num_layers=size["layers"], embed_dim=size["width"],
        num_heads=size["heads"], persistent_slots=size["slots"]))
    params = models.init_params(model, jax.random.key(0))
  config = dataclasses.replace(
      model.config, context_length=args.seq_len, dtype="float32", context_dropout=0.0,
      persistent_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0,
      retrieval_implementation=args.retrieval or None,
      persistent_implementation=args.slot_read or None, loss_chunk=args.loss_chunk)
  model = type(model)(config)
  data = tokens(args.batch, args.seq_len, args.vocab).astype(np.int32)
  inputs, targets = jax.device_put(data[:, :-1]), jax.device_put(data[:, 1:])

  def loss_fn(params):
    return losses.mean_loss(model.apply({"params": params}, inputs, targets=targets), targets)

  step_fn = jax.jit(jax.value_and_grad(loss_fn))
  compiled = step_fn.lower(params).compile()
  analysis = compiled.memory_analysis()
  results = []

  def step():
    results.append(jax.block_until_ready(compiled(params)))

  first, seconds = _timed(step, args.warmup, args.steps)
  return dict(seconds=seconds, first_seconds=first, loss=float(results[0][0]),
              peak_rss_gib=peak_rss_gib(),
              temp_gib=analysis.temp_size_in_bytes / 2 ** 30 if analysis else None,
              versions=f"jax {jax.__version__}, {jax.devices()[0].device_kind}")


# ---------------------------------------------------------------------------------------------
# The driver: alternating processes, the table.


def _worker(kind: str, model: str, batch: int, seq_len: int, weights: str, args) -> dict:
  python = args.torch_python if kind.startswith("official") else sys.executable
  command = [python, os.path.abspath(__file__), f"--worker={kind}", f"--model={model}",
             f"--batch={batch}", f"--seq_len={seq_len}", f"--weights={weights}",
             f"--official={args.official}", f"--vocab={args.vocab}", f"--steps={args.steps}",
             f"--warmup={args.warmup}", f"--retrieval={args.retrieval}",
             f"--slot_read={args.slot_read}", f"--loss_chunk={args.loss_chunk}"]
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    raise SystemExit(f"The {kind} run at {model} {batch}x{seq_len} failed "
                     f"(exit {done.returncode}):\n{done.stderr[-3000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def measure(model: str, batch: int, seq_len: int, args) -> dict:
  kinds = ["ours"] if args.only_ours else ["official", "ours"] + (["official_eager"] * args.eager)
  runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
  with tempfile.TemporaryDirectory() as directory:
    weights = os.path.join(directory, "official.npz")
    for _ in range(args.repeats):
      for kind in kinds:  # official first: it writes the weights ours loads
        runs[kind].append(_worker(kind, model, batch, seq_len, weights, args))
  ours = runs["ours"][0]
  official = runs["official"][0] if "official" in runs else None
  row = dict(model=model, batch=batch, seq_len=seq_len, loss=ours["loss"], loss_gap=None,
             versions=ours["versions"], official_seconds=None, official_peak_rss_gib=None)
  if official:
    row.update(loss_gap=abs(ours["loss"] - official["loss"]) / abs(official["loss"]),
               versions=f"{official['versions']}; {ours['versions']}")
  for kind, results in runs.items():
    row[f"{kind}_seconds"] = statistics.median(r["seconds"] for r in results)
    row[f"{kind}_peak_rss_gib"] = statistics.median(r["peak_rss_gib"] for r in results)
  row["ours_temp_gib"] = ours["temp_gib"]
  row["speedup"] = row["official_seconds"] / row["ours_seconds"] if official else None
  return row


def table(rows: list[dict], eager: bool) -> str:
  head = ("| model, batch x T | official, torch.compile (s) | " + ("official, eager (s) | " if eager
          else "") + "ours (s) | speedup | peak RSS official / ours (GiB) | "
          "ours: XLA temporaries (GiB) | loss (relative gap) |")
  lines = [head, "| --- |" + " ---: |" * (head.count("|") - 2)]
  cell = lambda value, form: "-" if value is None else format(value, form)
  for r in rows:
    eager_cell = f" {cell(r.get('official_eager_seconds'), '.2f')} |" if eager else ""
    gap = "not compared" if r["loss_gap"] is None else f"{r['loss_gap']:.1e}"
    lines.append(f"| {r['model']}, {r['batch']} x {r['seq_len']} | "
                 f"{cell(r['official_seconds'], '.2f')} |{eager_cell} {r['ours_seconds']:.2f} | "
                 f"{cell(r['speedup'], '.2f')}{'x' * (r['speedup'] is not None)} | {cell(r['official_peak_rss_gib'], '.2f')} / "
                 f"{r['ours_peak_rss_gib']:.2f} | {cell(r['ours_temp_gib'], '.2f')} | "
                 f"{r['loss']:.4f} ({gap}) |")
  return "\n".join(lines)


def parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--official", required=True, help="a facebookresearch/MemoryMosaics checkout")
  parser.add_argument("--torch_python", default=sys.executable,
                      help="an interpreter with PyTorch, for the official side")
  parser.add_argument("--shapes", default="gpt2:1x512,small:4x1024,small:4x2048,small:1x4096")
  parser.add_argument("--vocab", type=int, default=50304)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--eager", action="store_true", help="also time the official code eagerly")
  parser.add_argument("--retrieval", default="", help="our retrieval_implementation (automatic)")
  parser.add_argument("--slot_read", default="", help="our persistent_implementation (automatic)")
  parser.add_argument("--loss_chunk", type=int, default=0,
                      help="our loss_chunk: tokens per chunk of the output layer (0: all at once)")
  parser.add_argument("--only_ours", action="store_true",
                      help="time ours alone (shapes where the official code does not fit)")
  parser.add_argument("--worker", default="", choices=("", "official", "official_eager", "ours"),
                      help=argparse.SUPPRESS)
  parser.add_argument("--model", default="", help=argparse.SUPPRESS)
  parser.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--seq_len", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--weights", default="", help=argparse.SUPPRESS)
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import recording  # pylint: disable=import-outside-toplevel  # benchmarks/, beside this script
  recording.add_flags(parser)
  return parser.parse_args(argv), recording


def main(argv=None) -> list[dict]:
  argv = sys.argv[1:] if argv is None else argv
  args, recording = parse(argv)
  if args.worker:
    run = run_ours if args.worker == "ours" else run_official
    print(json.dumps(run(args)))
    return []
  rows = []
  for model, batch, seq_len in parse_shapes(args.shapes):
    rows.append(measure(model, batch, seq_len, args))
    print(table(rows[-1:], args.eager), flush=True)
  bad = [r for r in rows if r["loss_gap"] is not None and r["loss_gap"] > LOSS_RTOL]
  heading = f"Versus the official code ({rows[0]['versions']})" if rows else "Versus the official code"
  recording.report(rows, table(rows, args.eager), args, heading, "versus_official.py", argv,
                   "this host's CPU")
  if bad:
    raise SystemExit(f"Our loss differs from the official code's by more than {LOSS_RTOL} at "
                     f"{[(r['model'], r['batch'], r['seq_len']) for r in bad]}: the two sides "
                     "do not compute the same function, so the times are not comparable.")
  return rows


if __name__ == "__main__":
  main()
