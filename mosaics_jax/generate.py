r"""Generating text with any model of the library: sampling and beam search, batched.

With the cache (the default), the prompt is processed once and every new token costs one
position: memories keep their pairs, key states and pending values between steps
(``layers/cache.py``), attention keeps its keys and values. Without it (``use_cache=False``),
every step recomputes the whole sequence on a fixed-size buffer: the reference the cache is
tested against (``tests/test_generate.py``). Prompts of different lengths are left-padded; the
padding is a segment of its own, so no memory reads it.

From the command line, on a trained workdir:

    python -m mosaics_jax.generate --workdir=/tmp/quickstart --model=mosaic \
        --prompt="Once upon a time" --max_new_tokens=64 --temperature=0.8 --top_k=40
    python -m mosaics_jax.generate --workdir=/tmp/quickstart --model=transformer \
        --prompt="The little dog" --beam_size=4
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from mosaics_jax.models import stack
from mosaics_jax.train import sharding


def sample_logits(logits: jax.Array, rng: jax.Array, *, temperature: float = 1.0,
                  top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """One token per row of (B, V) logits. temperature 0: greedy; top_k 0 / top_p 1: off."""
  if temperature <= 0.0:
    return jnp.argmax(logits, axis=-1)
  logits = logits.astype(jnp.float32) / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
    # Keep the smallest prefix whose probability reaches top_p (always the first token).
    drop_sorted = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs >= top_p
    drop = jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(
        drop_sorted)
    logits = jnp.where(drop, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1)


def left_pad(prompts: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
  """(tokens, segment_ids) with prompts right-aligned; padding is segment 0, prompts 1."""
  if not prompts or min(len(p) for p in prompts) < 1:
    raise ValueError("Every prompt needs at least one token (e.g. the end-of-text token).")
  length = max(len(p) for p in prompts)
  tokens = np.zeros((len(prompts), length), np.int32)
  segments = np.zeros((len(prompts), length), np.int32)
  for row, prompt in enumerate(prompts):
    tokens[row, length - len(prompt):] = prompt
    segments[row, length - len(prompt):] = 1
  return tokens, segments


def _empty_cache(model, batch_size: int, max_length: int):
  tokens = jnp.zeros((batch_size, max_length), jnp.int32)
  return model.init(jax.random.key(0), tokens, decode=True)["cache"]


def init_cache(model, batch_size: int, max_length: int, mesh=None):
  """An empty decoding cache for ``batch_size`` sequences of up to ``max_length`` tokens;
  with ``mesh``, born split over it like a batch (``cache_shardings``)."""
  make = lambda: _empty_cache(model, batch_size, max_length)
  if mesh is None:
    return jax.jit(make)()
  shardings = cache_shardings(abstract_cache(model, batch_size, max_length), mesh)
  return jax.jit(make, out_shardings=shardings)()


def abstract_cache(model, batch_size: int, max_length: int):
  """Shapes and dtypes of ``init_cache``, allocating nothing (``jax.eval_shape``)."""
  return jax.eval_shape(lambda: _empty_cache(model, batch_size, max_length))


_SHARED_BY_ROWS = ("index", "capacity", "positions")  # cache entries without a row axis


def _row_axis(path) -> int:
  """Where a cache entry keeps its rows: after the layer axis of a scanned stack."""
  return 1 if getattr(path[0], "key", "") == stack.SCANNED else 0


def cache_shardings(cache, mesh):
  """NamedShardings for a cache on ``mesh``: rows (sequences) split like a batch where the
  batch axes divide them; the step counter and slot positions, shared by all rows, replicated."""
  def pick(path, leaf):
    if getattr(path[-1], "key", "") in _SHARED_BY_ROWS or not leaf.ndim:
      return NamedSharding(mesh, PartitionSpec())
    rows = sharding.rows_sharding(mesh, leaf.shape[_row_axis(path)])
    return NamedSharding(mesh, PartitionSpec(*(None,) * _row_axis(path), *rows.spec))

  return jax.tree_util.tree_map_with_path(pick, cache)


def decode_chunk(model, params, cache, tokens, segments):
  """One chunk (a prompt, or one token per row) through ``model`` with its cache:
  (logits at the chunk's last position, the updated cache)."""
  logits, variables = model.apply({"params": params, "cache": cache}, tokens, segments,
                                  decode=True, mutable=["cache"])
  return logits[:, -1], variables["cache"]


@functools.partial(jax.jit, static_argnames=("model",))
def prefill(model, params, cache, tokens, segments):
  """Fill ``cache`` with (left-padded) prompts: (logits at the last position, cache)."""
  return decode_chunk(model, params, cache, tokens, segments)


@functools.partial(jax.jit, static_argnames=("model", "steps", "temperature", "top_k", "top_p"))
def sample_with_cache(model, params, cache, tokens, segments, rng, *, steps, temperature, top_k,
                      top_p):
  """The jitted loop behind ``sample``: prefill the (left-padded) prompts, then one position per
  new token. Returns (B, steps) tokens."""
  logits, cache = decode_chunk(model, params, cache, tokens, segments)
  pick = functools.partial(sample_logits, temperature=temperature, top_k=top_k, top_p=top_p)
  out = jnp.zeros((tokens.shape[0], steps), jnp.int32).at[:, 0].set(
      pick(logits, jax.random.fold_in(rng, 0)))

  def step(i, carry):
    cache, out = carry
    previous = jax.lax.dynamic_slice_in_dim(out, i - 1, 1, 1)
    logits, cache = decode_chunk(model, params, cache, previous,
                                 jnp.ones((tokens.shape[0], 1), jnp.int32))
    return cache, out.at[:, i].set(pick(logits, jax.random.fold_in(rng, i)))

  return jax.lax.fori_loop(1, steps, step, (cache, out))[1]


@functools.partial(jax.jit, static_argnames=("model", "steps", "temperature", "top_k", "top_p"))
def sample_recomputing(model, params, tokens, segments, rng, *, steps, temperature, top_k,
                       top_p):
  """``sample_with_cache`` without a cache: every new token reruns the whole sequence."""
  width = tokens.shape[1]
  buffer = jnp.concatenate([tokens, jnp.zeros((tokens.shape[0], steps), jnp.int32)], axis=1)
  segments = jnp.concatenate([segments, jnp.ones((tokens.shape[0], steps), jnp.int32)], axis=1)

  def step(i, buffer):
    logits = model.apply({"params": params}, buffer, segments)[:, width + i - 1]
    token = sample_logits(logits, jax.random.fold_in(rng, i), temperature=temperature,
                          top_k=top_k, top_p=top_p)
    return buffer.at[:, width + i].set(token.astype(jnp.int32))

  return jax.lax.fori_loop(0, steps, step, buffer)[:, width:]


def fixed_shape_batches(prompts: Sequence[Sequence[int]], batch_size: int, width: int):
  """Batches of ``batch_size`` prompts left-padded to ``width``, all of one shape so that one
  compiled program serves every batch (the last batch repeats its last prompt): yields
  (tokens, segments, the prompt index of each row, how many rows are real)."""
  for start in range(0, len(prompts), batch_size):
    index = np.arange(start, start + batch_size).clip(max=len(prompts) - 1)
    tokens, segments = left_pad([prompts[i] for i in index])
    pad = ((0, 0), (width - tokens.shape[1], 0))
    yield (np.pad(tokens, pad), np.pad(segments, pad), index,
           min(batch_size, len(prompts) - start))


def greedy_in_batches(model, params, prompts: Sequence[Sequence[int]], *, width: int, steps: int,
                      batch_size: int, cache=None, mesh=None) -> list[list[int]]:
  """Greedy continuations of ``steps`` tokens, in ``fixed_shape_batches`` of prompts padded to
  ``width``, from ``cache`` (an empty ``init_cache(model, batch_size, width + steps, mesh)``;
  made here when None): many prompts, one compiled decoding program. ``mesh`` as in
  ``sample``."""
  if cache is None:
    cache = init_cache(model, batch_size, width + steps, mesh)
  out = []
  for tokens, segments, _, count in fixed_shape_batches(prompts, batch_size, width):
    tokens, segments = sharding.rows_on(mesh, tokens, segments)
    continued = sample_with_cache(model, params, cache, tokens, segments, jax.random.key(0),
                                  steps=steps, temperature=0.0, top_k=0, top_p=1.0)
    out += np.asarray(jax.device_get(continued))[:count].tolist()
  return out


def until_token(tokens: Sequence[int], stop: int) -> list[int]:
  """A continuation up to (without) its first ``stop`` token, e.g. the end of text."""
  tokens = list(tokens)
  return tokens[:tokens.index(stop)] if stop in tokens else tokens


def sample(model, params, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
           rng: jax.Array, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           use_cache: bool = True, mesh=None) -> list[list[int]]:
  """Continue each prompt by ``max_new_tokens`` sampled tokens. With ``mesh`` (``params``
  sharded on it, e.g. by ``checkpoint.load_run(..., mesh=mesh)``), the prompts and the
  decoding cache are split over it like a batch, and the steps run there."""
  tokens, segments = sharding.rows_on(mesh, *left_pad(prompts))
  kwargs = dict(steps=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
  if use_cache:
    cache = init_cache(model, len(prompts), tokens.shape[1] + max_new_tokens, mesh)
    out = sample_with_cache(model, params, cache, tokens, segments, rng, **kwargs)
  else:
    out = sample_recomputing(model, params, tokens, segments, rng, **kwargs)
  return np.asarray(jax.device_get(out)).tolist()


def _reorder(cache, rows: jax.Array):
  """Select cache rows (beams); the step counter and slot positions are shared by all rows."""
  def pick(path, leaf):
    if getattr(path[-1], "key", "") in _SHARED_BY_ROWS:
      return leaf
    return jnp.take(leaf, rows, axis=_row_axis(path))
  return jax.tree_util.tree_map_with_path(pick, cache)


@functools.partial(jax.jit, static_argnames=("model", "beams", "steps", "eos_id"))
def _beam_search(model, params, cache, tokens, segments, *, beams, steps, eos_id):
  batch = tokens.shape[0] // beams
  logits, cache = decode_chunk(model, params, cache, tokens, segments)
  # Only the first copy of each prompt is live at the start.
  scores = jnp.tile(jnp.asarray([0.0] + [-jnp.inf] * (beams - 1)), batch)
  out = jnp.zeros((batch * beams, steps), jnp.int32)
  lengths = jnp.zeros((batch * beams,), jnp.int32)
  finished = jnp.zeros((batch * beams,), bool)

  def step(i, carry):
    logits, cache, scores, out, lengths, finished = carry
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    vocab = log_probs.shape[-1]
    if eos_id is not None:  # a finished beam only extends with EOS, at no cost
      frozen = jnp.full((vocab,), -jnp.inf).at[eos_id].set(0.0)
      log_probs = jnp.where(finished[:, None], frozen, log_probs)
    candidates = (scores[:, None] + log_probs).reshape(batch, beams * vocab)
    best, index = jax.lax.top_k(candidates, beams)
    rows = (jnp.arange(batch)[:, None] * beams + index // vocab).reshape(-1)
    token = (index % vocab).reshape(-1).astype(jnp.int32)
    out = out[rows].at[:, i].set(token)
    lengths = lengths[rows] + (~finished[rows]).astype(jnp.int32)
    finished = finished[rows] | (token == eos_id if eos_id is not None else False)
    cache = _reorder(cache, rows)
    logits, cache = decode_chunk(model, params, cache, token[:, None],
                                 jnp.ones((token.shape[0], 1), jnp.int32))
    return logits, cache, best.reshape(-1), out, lengths, finished

  carry = (logits, cache, scores, out, lengths, finished)
  _, _, scores, out, lengths, _ = jax.lax.fori_loop(0, steps, step, carry)
  return scores, out, lengths


def beam_search(model, params, prompts: Sequence[Sequence[int]], *, beam_size: int,
                max_new_tokens: int, eos_id: int | None = None, length_penalty: float = 0.0,
                mesh=None) -> list[list[tuple[list[int], float]]]:
  """The ``beam_size`` best continuations of each prompt, best first, as (tokens, score).

  Score: total log-probability / length ** ``length_penalty``; a beam that emits ``eos_id``
  stops there (its tokens end with it). ``mesh`` as in ``sample``."""
  tokens, segments = sharding.rows_on(mesh,
                                      *left_pad([p for p in prompts for _ in range(beam_size)]))
  cache = init_cache(model, tokens.shape[0], tokens.shape[1] + max_new_tokens, mesh)
  scores, out, lengths = jax.device_get(_beam_search(
      model, params, cache, tokens, segments, beams=beam_size, steps=max_new_tokens,
      eos_id=eos_id))
  results = []
  for b in range(len(prompts)):
    rows = range(b * beam_size, (b + 1) * beam_size)
    ranked = sorted(((out[r, :lengths[r]].tolist(),
                      float(scores[r]) / max(int(lengths[r]), 1) ** length_penalty)
                     for r in rows), key=lambda item: -item[1])
    results.append(ranked)
  return results


# ---------------------------------------------------------------------------------------------
# Command line.


def main(argv) -> None:
  del argv
  from absl import flags  # pylint: disable=import-outside-toplevel

  from mosaics_jax import cli  # pylint: disable=import-outside-toplevel

  from mosaics_jax.train import checkpoint  # pylint: disable=import-outside-toplevel

  cli.quiet_logging()
  values = flags.FLAGS
  mesh = cli.mesh(values.mesh)
  run = checkpoint.load_run(values.workdir, values.model, mesh=mesh)
  prompts = [[run.tokenizer.eot_id] + ids for ids in run.tokenizer.encode(values.prompt)]
  if values.beam_size:
    ranked = beam_search(run.model, run.params, prompts, beam_size=values.beam_size,
                         max_new_tokens=values.max_new_tokens, eos_id=run.tokenizer.eot_id,
                         mesh=mesh)
    for prompt, beams in zip(values.prompt, ranked):
      print(f"# {prompt}")
      for tokens, score in beams:
        print(f"{score:9.3f}  {prompt}{run.tokenizer.decode(tokens)}")
    return
  continuations = sample(run.model, run.params, prompts, max_new_tokens=values.max_new_tokens,
                         rng=jax.random.key(values.seed), temperature=values.temperature,
                         top_k=values.top_k, top_p=values.top_p, use_cache=not values.no_cache,
                         mesh=mesh)
  for prompt, tokens in zip(values.prompt, continuations):
    print(f"{prompt}{run.tokenizer.decode(tokens)}\n")


if __name__ == "__main__":
  from absl import app, flags

  flags.DEFINE_string("workdir", None, "A workdir written by mosaics_jax.main.")
  flags.DEFINE_string("model", None, "Which model of the experiment (a name in config.models).")
  flags.DEFINE_multi_string("prompt", ["Once upon a time"], "Prompt(s); repeat the flag.")
  flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate.")
  flags.DEFINE_float("temperature", 0.8, "0: greedy.")
  flags.DEFINE_integer("top_k", 40, "0: off.")
  flags.DEFINE_float("top_p", 1.0, "1: off.")
  flags.DEFINE_integer("beam_size", 0, "> 0: beam search instead of sampling.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_bool("no_cache", False, "Recompute the whole sequence at every step.")
  flags.DEFINE_list("mesh", [], "DATA,FSDP,TENSOR: parameters and rows sharded over a mesh of "
                    "the devices, as in training (-1: the rest); empty: one device.")
  flags.mark_flags_as_required(["workdir", "model"])
  app.run(main)
