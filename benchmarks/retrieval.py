r"""The retrieval op alone, forward + backward: our fused path against causal attention.

    python benchmarks/retrieval.py --lengths=512,2048,8192,32768 --heads=12 --head_dim=64 \
        --record                                   # on a GPU: bf16, cuDNN where it applies
    python benchmarks/retrieval.py --tiny          # a CPU smoke run (what the tests run)

For each context length and memory kind, up to five implementations on the same (B, T, H, D)
queries, keys and values, each jitted as ``value_and_grad`` of ``sum(out * cotangent)``:

* ``ours``: ``kernels.retrieval.retrieve`` with its automatic choice (cuDNN flash attention on
  a GPU in bf16/fp16, XLA elsewhere), for the memory kind:
  ``contextual`` (v1 and v2's long-term memory: pairs s <= t - 1), ``short_term`` (v2: the
  last ``--window`` pairs) and ``long_term`` (v2: pairs s <= t - m, m = ``--skip``); and
  ``persistent``, v1's slot read (``kernels.slots.read_slots``: keys and values are
  ``--slots`` learned slots per head; cuDNN on a GPU, recomputed probabilities elsewhere);
* ``attention``: ``jax.nn.dot_product_attention(is_causal=True)``, ordinary causal attention on
  the same shapes (what a transformer pays), automatic implementation;
* ``xla``, ``blockwise``: ``retrieve`` (or ``read_slots``) forced onto one path, to compare
  what the automatic choice could take;
* ``reference``: the explicit T x T einsum of ``retrieve_reference`` (skipped above
  ``--max_reference_length``: its memory grows as T^2); for ``persistent``, the einsums of
  ``read_slots_reference``, which keep the T x N probabilities.

Times are the best of ``--repeats`` after a compiling run. TFLOP/s counts the causal half of
the score and value matmuls: forward 2 * 2 * B * H * D * T^2 / 2, backward 2.5 times that (the
five matmuls of flash attention's backward, the scores' recomputation included), so a fused
kernel and the reference are credited the same work; ``persistent`` has N slots in place of
the T / 2 visible pairs. ``max error`` is the largest difference from the reference output where the
reference ran. ``--json`` writes the rows; ``--record`` appends them to docs/benchmarks.md
with the device, jax version, date and command.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp

from mosaics_jax.kernels import retrieval, slots

import recording  # benchmarks/recording.py, beside this script

KINDS = ("contextual", "short_term", "long_term", "persistent")
IMPLEMENTATIONS = ("ours", "attention", "reference", "xla", "blockwise")
FORCED = ("xla", "blockwise")  # one retrieval (or slot-read) path by name


def _reader(implementation: str, kind: str, args):
  """(q, k, v) -> (B, T, H, D) for one implementation and memory kind; for ``persistent``,
  k and v are (1, H, N, D) slots."""
  if kind == "persistent":
    if implementation == "reference":
      return slots.read_slots_reference
    forced = implementation if implementation in FORCED else None
    return lambda q, k, v: slots.read_slots(q, k, v, implementation=forced)
  skip = {"contextual": 1, "short_term": 1, "long_term": args.skip}[kind]
  window = args.window if kind == "short_term" else None
  if implementation == "attention":
    return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, scale=1.0, is_causal=True)
  if implementation == "reference":
    return lambda q, k, v: retrieval.retrieve_reference(q, k, v, skip=skip, window=window)
  forced = implementation if implementation in FORCED else None
  return lambda q, k, v: retrieval.retrieve(q, k, v, skip=skip, window=window,
                                            implementation=forced)


def _timed(function, *inputs, repeats: int) -> tuple[float, jax.Array]:
  """Best time of ``repeats`` runs after a compiling one, and the output of the last."""
  out = jax.block_until_ready(function(*inputs))
  best = float("inf")
  for _ in range(repeats):
    started = time.perf_counter()
    out = jax.block_until_ready(function(*inputs))
    best = min(best, time.perf_counter() - started)
  return best, out


def measure(length: int, kind: str, args, with_attention: bool = True) -> list[dict]:
  """Rows of one length and memory kind (causal attention, the same for every kind, only
  ``with_attention``)."""
  shape = (args.batch, length, args.heads, args.head_dim)
  dtype = jnp.dtype(args.dtype or ("bfloat16" if jax.default_backend() != "cpu" else "float32"))
  keys_rng = jax.random.split(jax.random.key(length), 4)
  # Unit keys with a bandwidth of 8 in the queries, as the models feed the op.
  q, k, v, cotangent = (jax.random.normal(r, shape, jnp.float32) for r in keys_rng)
  k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
  q = 8.0 * q / jnp.linalg.norm(q, axis=-1, keepdims=True)
  q, k, v = (x.astype(dtype) for x in (q, k, v))
  pairs = length / 2  # read per query on average
  if kind == "persistent":  # float32 slot parameters, as the model holds them
    slot_shape = (1, args.heads, args.slots, args.head_dim)
    k, v = (jax.random.normal(r, slot_shape) for r in jax.random.split(keys_rng[1]))
    pairs = args.slots
  flops = 3.5 * 2 * 2 * args.batch * args.heads * args.head_dim * length * pairs
  rows, reference_out = [], None
  for implementation in args.implementations:
    if ((implementation == "reference" and length > args.max_reference_length) or
        (implementation == "attention" and not with_attention)):
      continue
    read = _reader(implementation, kind, args)
    step = jax.jit(jax.value_and_grad(
        lambda q, k, v, read=read: jnp.sum(read(q, k, v).astype(jnp.float32) * cotangent),
        argnums=(0, 1, 2)))
    seconds, _ = _timed(step, q, k, v, repeats=args.repeats)
    out = jax.jit(read)(q, k, v).astype(jnp.float32)
    if implementation == "reference":
      reference_out = out
    rows.append(dict(kind="causal" if implementation == "attention" else kind,
                     implementation=implementation, length=length,
                     batch=args.batch, heads=args.heads, head_dim=args.head_dim,
                     dtype=dtype.name, ms=1000 * seconds, tflops=flops / seconds / 1e12,
                     output=out))
  for row in rows:
    output = row.pop("output")
    comparable = reference_out is not None and row["implementation"] != "attention"
    row["max_error"] = float(jnp.max(jnp.abs(output - reference_out))) if comparable else None
  return rows


def table(rows: list[dict]) -> str:
  lines = ["| kind | implementation | T | B x H x D | dtype | fwd+bwd (ms) | TFLOP/s | "
           "vs attention | max error |", "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: |"]
  attention = {r["length"]: r["ms"] for r in rows if r["implementation"] == "attention"}
  for r in rows:
    ratio = f"{r['ms'] / attention[r['length']]:.2f}x" if r["length"] in attention else "-"
    error = f"{r['max_error']:.1e}" if r["max_error"] is not None else "-"
    lines.append(f"| {r['kind']} | {r['implementation']} | {r['length']} | {r['batch']} x "
                 f"{r['heads']} x {r['head_dim']} | {r['dtype']} | {r['ms']:.2f} | "
                 f"{r['tflops']:.2f} | {ratio} | {error} |")
  return "\n".join(lines)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--lengths", default="", help="default 512,2048,8192,32768 (tiny: 64,128)")
  parser.add_argument("--kinds", default=",".join(KINDS))
  parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--heads", type=int, default=12)
  parser.add_argument("--head_dim", type=int, default=64)
  parser.add_argument("--window", type=int, default=256, help="short-term memory's h")
  parser.add_argument("--skip", type=int, default=64, help="long-term memory's m")
  parser.add_argument("--slots", type=int, default=2688, help="persistent memory's N")
  parser.add_argument("--dtype", default="", help="default: bfloat16 on accelerators, else f32")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--max_reference_length", type=int, default=8192)
  parser.add_argument("--tiny", action="store_true", help="CPU-sized: T 64 and 128, 2 heads")
  recording.add_flags(parser)
  argv = sys.argv[1:] if argv is None else argv
  args = parser.parse_args(argv)
  if args.tiny:
    args.heads, args.head_dim, args.repeats, args.window, args.skip = 2, 16, 2, 16, 8
    args.slots = 96
  args.lengths = args.lengths or ("64,128" if args.tiny else "512,2048,8192,32768")
  args.implementations = [i.strip() for i in args.implementations.split(",") if i.strip()]
  kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
  unknown = sorted(set(args.implementations) - set(IMPLEMENTATIONS)) + sorted(set(kinds) -
                                                                             set(KINDS))
  if unknown:
    parser.error(f"unknown {unknown}: implementations are {IMPLEMENTATIONS}, kinds {KINDS}")
  rows = [row for length in (int(x) for x in args.lengths.split(",")) for kind in kinds
          for row in measure(length, kind, args, with_attention=kind == kinds[0])]
  recording.report(rows, table(rows), args, "Retrieval op", "retrieval.py", argv,
                   recording.device())
  return rows


if __name__ == "__main__":
  main()
