r"""Generation speed with and without the decoding cache.

    python benchmarks/generate.py --models=mosaic_v1_gpt2_small,llama_gpt2_small \
        --contexts=512,4096 --new_tokens=32 --record
    python benchmarks/generate.py --tiny          # a CPU smoke run (what the tests run)

For each model and context length C: a random prompt of C tokens, then ``--new_tokens`` tokens
sampled one at a time (random parameters: speed does not depend on them). With the cache the
prompt is processed once (prefill, timed alone) and each new token costs one position: the
decode rate is ``new_tokens`` over the time of drawing them from the filled cache. Without the
cache every new token recomputes the whole sequence, a cost per token that does not depend on
how many are drawn, so ``--recompute_tokens`` (default: new_tokens) may be fewer. Each time is
the best of ``--repeats`` runs; compilation is excluded (each program runs once before it is
timed). Prints a table; ``--json`` and ``--record`` (docs/benchmarks.md) as in
train_throughput.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import jax
import numpy as np

from mosaics_jax import generate, models

import recording  # benchmarks/recording.py, beside this script

TINY = dict(num_layers=2, embed_dim=64, num_heads=4, vocab_size=512, persistent_slots=64,
            ffn_hidden_dim=128, mlp_hidden_dim=128, short_term_window=16,
            long_term_skip_train=(4, 16), long_term_skip_eval=4)


def _model(preset: str, args, length: int):
  config = models.model_config(preset)
  fields = {f.name for f in dataclasses.fields(config)}
  overrides = {k: v for k, v in TINY.items() if k in fields} if args.tiny else {}
  overrides.update({f: 0.0 for f in fields if f.endswith("dropout")})
  overrides["context_length"] = max(length, config.context_length)
  if args.dtype:
    overrides["dtype"] = args.dtype
  model = models.build_model(models.model_config(preset, **overrides))
  return model, models.init_params(model, jax.random.key(0))


def _timed(function, *args, repeats: int = 1, **kwargs) -> float:
  """Best of ``repeats`` timed runs, after one untimed run that compiles."""
  jax.block_until_ready(function(*args, **kwargs))
  times = []
  for _ in range(repeats):
    started = time.time()
    jax.block_until_ready(function(*args, **kwargs))
    times.append(time.time() - started)
  return min(times)


def measure(preset: str, context: int, args) -> dict:
  steps = args.new_tokens
  model, params = _model(preset, args, context + steps + 1)
  vocab = model.config.vocab_size
  tokens = np.random.default_rng(0).integers(0, vocab, (args.batch, context), dtype=np.int32)
  segments = np.ones_like(tokens)
  rng = jax.random.key(0)
  options = dict(model=model, temperature=1.0, top_k=0, top_p=1.0)

  cache = generate.init_cache(model, args.batch, context + steps)
  prefill = _timed(generate.prefill, model, params, cache, tokens, segments,
                   repeats=args.repeats)
  _, filled = generate.prefill(model, params, cache, tokens, segments)
  # ``steps`` positions from the filled cache: the prompt's last token again, then the draws.
  decode = _timed(generate.sample_with_cache, params=params, cache=filled,
                  tokens=tokens[:, -1:], segments=segments[:, -1:], rng=rng, steps=steps,
                  repeats=args.repeats, **options)
  decode_rate = steps * args.batch / decode
  recompute_steps = args.recompute_tokens or steps
  recompute = _timed(generate.sample_recomputing, params=params, tokens=tokens,
                     segments=segments, rng=rng, steps=recompute_steps, repeats=args.repeats,
                     **options)
  no_cache_rate = recompute_steps * args.batch / recompute
  return dict(model=preset, context=context, batch=args.batch, new_tokens=steps,
              prefill_seconds=prefill, cached_tokens_per_second=decode_rate,
              uncached_tokens_per_second=no_cache_rate, speedup=decode_rate / no_cache_rate)


def table(rows: list[dict]) -> str:
  lines = ["| model | context | batch | prefill (ms) | tokens/s with cache | tokens/s without | "
           "speed-up |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for r in rows:
    lines.append(f"| {r['model']} | {r['context']} | {r['batch']} | "
                 f"{1e3 * r['prefill_seconds']:,.1f} | {r['cached_tokens_per_second']:,.1f} | "
                 f"{r['uncached_tokens_per_second']:,.2f} | {r['speedup']:.1f}x |")
  return "\n".join(lines)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default="mosaic_v1_gpt2_small,mosaic_v2_gpt2_small,"
                      "llama_gpt2_small")
  parser.add_argument("--contexts", default="512,4096")
  parser.add_argument("--new_tokens", type=int, default=32)
  parser.add_argument("--recompute_tokens", type=int, default=0,
                      help="tokens drawn without the cache (0: --new_tokens)")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best counts")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--dtype", default="")
  parser.add_argument("--tiny", action="store_true", help="CPU-sized models, contexts 64,128")
  recording.add_flags(parser)
  argv = sys.argv[1:] if argv is None else argv
  args = parser.parse_args(argv)
  contexts = [int(c) for c in args.contexts.split(",")]
  if args.tiny:
    contexts, args.new_tokens = [64, 128], min(args.new_tokens, 8)
  rows = [measure(preset.strip(), context, args)
          for preset in args.models.split(",") if preset.strip() for context in contexts]
  recording.report(rows, table(rows), args, "Generation", "generate.py", argv,
                   recording.device())
  return rows


if __name__ == "__main__":
  main()
