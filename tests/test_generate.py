"""Generation: the cache gives the logits of full recomputation; sampling and beam search."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mosaics_jax import generate, models
from tests.models.test_models import ARCHITECTURES

REPO = pathlib.Path(__file__).resolve().parents[1]
T = 24
TOKENS = jax.random.randint(jax.random.key(1), (2, T), 0, 64)


def _build(name):
  model = models.build_model(ARCHITECTURES[name])
  return name, model, models.init_params(model, jax.random.key(0))


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def built(request):
  return _build(request.param)


@pytest.fixture(scope="module", params=["mosaic_v1_gpt2_small", "mosaic_v2_gpt2_small",
                                        "llama_gpt2_small_long_short"])
def decoder(request):
  """The memory kinds (leaky / gated keys, ring and full caches) for the loop-level tests."""
  return _build(request.param)


def _step(model):
  return jax.jit(lambda p, c, t, s: model.apply({"params": p, "cache": c}, t, s, decode=True,
                                                mutable=["cache"]))


def test_cached_decoding_gives_the_logits_of_recomputation(built):
  """A prompt of 7 tokens, then one token at a time (the short-term window of 6 wraps)."""
  _, model, params = built
  full = jax.jit(model.apply)({"params": params}, TOKENS)
  cache, step, outs = generate.init_cache(model, 2, T), _step(model), []
  for lo, hi in [(0, 7)] + [(i, i + 1) for i in range(7, T)]:
    logits, variables = step(params, cache, TOKENS[:, lo:hi], None)
    cache = variables["cache"]
    outs.append(logits)
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=2e-5)


def test_decoding_past_the_cache_is_an_error_naming_the_length():
  """Before, position p went to slot p mod size: the oldest pairs were silently dropped (v2:
  its full long-term cache; the check is the models' shared ``cache.start_chunk``)."""
  _, model, params = _build("mosaic_v2_gpt2_small")
  cache, step = generate.init_cache(model, 2, 8), _step(model)
  _, variables = step(params, cache, TOKENS[:, :8], None)  # exactly full: fine
  with pytest.raises(Exception, match=r"Decoding to 9 tokens, past the 8 .*max_length=9"):
    logits, _ = step(params, variables["cache"], TOKENS[:, 8:9], None)
    jax.block_until_ready(logits)


def test_left_padded_batch_equals_each_prompt_alone(built):
  _, model, params = built
  prompts = [TOKENS[0, :9].tolist(), TOKENS[1, :4].tolist()]
  tokens, segments = generate.left_pad(prompts)
  batched, _ = _step(model)(params, generate.init_cache(model, 2, 12), tokens, segments)
  for row, prompt in enumerate(prompts):
    alone = jax.jit(model.apply)({"params": params}, jnp.asarray([prompt]))
    np.testing.assert_allclose(batched[row, -len(prompt):], alone[0], atol=2e-5)


def test_sampling_with_and_without_cache_agree(decoder):
  _, model, params = decoder
  prompts = [TOKENS[0, :5].tolist(), TOKENS[1, :3].tolist()]
  for kwargs in (dict(temperature=0.0), dict(temperature=1.0, top_k=10, top_p=0.9)):
    cached = generate.sample(model, params, prompts, max_new_tokens=6, rng=jax.random.key(4),
                             **kwargs)
    recomputed = generate.sample(model, params, prompts, max_new_tokens=6,
                                 rng=jax.random.key(4), use_cache=False, **kwargs)
    assert cached == recomputed and all(len(c) == 6 for c in cached)


def test_sampling_filters():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  keys = jax.random.split(jax.random.key(0), 400)
  draw = lambda **kw: {int(generate.sample_logits(logits, k, **kw)[0]) for k in keys}
  assert draw(temperature=0.0) == {0}
  assert draw(top_k=2) == {0, 1}
  assert draw(top_p=0.75) == {0, 1}  # 0.5 + 0.3 reaches 0.75
  assert draw(top_p=0.5) == {0}
  assert draw() == {0, 1, 2, 3}


def test_beam_search(decoder):
  _, model, params = decoder
  prompts = [TOKENS[0, :5].tolist(), TOKENS[1, :3].tolist()]
  greedy = generate.sample(model, params, prompts, max_new_tokens=5, rng=jax.random.key(0),
                           temperature=0.0)
  one = generate.beam_search(model, params, prompts, beam_size=1, max_new_tokens=5)
  assert [beams[0][0] for beams in one] == greedy
  ranked = generate.beam_search(model, params, prompts, beam_size=3, max_new_tokens=5)
  apply = jax.jit(model.apply)
  for prompt, beams in zip(prompts, ranked):
    scores = [score for _, score in beams]
    assert scores == sorted(scores, reverse=True) and len({tuple(t) for t, _ in beams}) == 3
    for tokens, score in beams:  # the score is the sequence's log-probability
      sequence = jnp.asarray([prompt + tokens])
      log_probs = jax.nn.log_softmax(apply({"params": params}, sequence)[0], axis=-1)
      total = sum(float(log_probs[len(prompt) - 1 + i, t]) for i, t in enumerate(tokens))
      assert abs(total - score) < 1e-3
  assert ranked[0][0][1] >= one[0][0][1] - 1e-5  # a wider beam never finds worse


def test_beam_search_stops_at_eos(decoder):
  _, model, params = decoder
  prompt = [TOKENS[0, :5].tolist()]
  free = generate.beam_search(model, params, prompt, beam_size=2, max_new_tokens=6)
  eos = free[0][0][0][1]  # the best beam's second token
  stopped = generate.beam_search(model, params, prompt, beam_size=2, max_new_tokens=6,
                                 eos_id=eos)
  for tokens, _ in stopped[0]:
    assert eos not in tokens[:-1]
  assert any(tokens[-1] == eos and len(tokens) <= 2 for tokens, _ in stopped[0])


@pytest.mark.slow
def test_command_line_on_a_trained_workdir(tmp_path):
  from experiments.configs import quickstart
  from mosaics_jax.train import trainer

  config = quickstart.get_config("tiny")
  with config.unlocked():
    config.train.models, config.train.num_steps = "mosaic", 6
  trainer.train_and_evaluate(config, str(tmp_path), mode="train")
  base = [sys.executable, "-m", "mosaics_jax.generate", f"--workdir={tmp_path}", "--model=mosaic",
          "--prompt=Once upon a time", "--prompt=The dog", "--max_new_tokens=8"]
  sampled = subprocess.run(base, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert sampled.returncode == 0, sampled.stderr
  assert sampled.stdout.count("Once upon a time") == 1 and "The dog" in sampled.stdout
  beams = subprocess.run(base + ["--beam_size=2"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
  assert beams.returncode == 0, beams.stderr
  assert beams.stdout.count("# ") == 2 and beams.stdout.count("Once upon a time") == 3
  missing = subprocess.run(base[:4] + ["--model=gpt"], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
  assert missing.returncode != 0 and "No model 'gpt'" in missing.stderr


def test_fixed_width_batches_decode_as_generate_sample():
  model = models.build_model(models.model_config(
      "mosaic_v2_small", num_layers=1, embed_dim=32, num_heads=2, vocab_size=64,
      ffn_hidden_dim=64, short_term_window=4, long_term_skip_train=(1, 4),
      long_term_skip_eval=1, context_length=32))
  params = models.init_params(model, jax.random.key(0))
  prompts = [[2, 5, 9, 11, 3], [2, 7], [2, 8, 8, 8, 8, 8, 1]]
  expected = generate.sample(model, params, prompts, max_new_tokens=4, rng=jax.random.key(1),
                             temperature=0.0)
  # Two batches of two (the last one filled with a copy), padded beyond the longest prompt.
  cache = generate.init_cache(model, 2, 16)
  assert generate.greedy_in_batches(model, params, prompts, width=12, steps=4, batch_size=2,
                                    cache=cache) == expected


def test_until_token():
  assert generate.until_token([5, 6, 2, 7, 2], stop=2) == [5, 6]
  assert generate.until_token([5, 6], stop=2) == [5, 6]


@pytest.mark.parametrize("mesh_shape", [(2, 4, 1), (1, 2, 4)])
def test_sampling_and_beam_search_on_a_mesh_equal_one_device(mesh_shape):
  """Parameters sharded by the training rules, prompts and cache split like a batch."""
  from mosaics_jax.train import sharding  # pylint: disable=import-outside-toplevel
  _, model, params = _build("mosaic_v2_gpt2_small")
  mesh = sharding.make_mesh(dict(zip(("data", "fsdp", "tensor"), mesh_shape)))
  on_mesh = jax.device_put(params, sharding.logical_to_shardings(
      models.logical_axes(model), params, mesh))
  cache = generate.init_cache(model, 8, 16, mesh)
  rows = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(cache)
          if getattr(path[-1], "key", "") == "keys"]
  assert rows and all(leaf.sharding.spec[0] is not None for leaf in rows)  # split by rows
  prompts = [TOKENS[0, :5].tolist(), TOKENS[1, :3].tolist()]
  greedy = dict(max_new_tokens=6, rng=jax.random.key(0), temperature=0.0)
  assert (generate.sample(model, on_mesh, prompts, mesh=mesh, **greedy) ==
          generate.sample(model, params, prompts, **greedy))
  beams = dict(beam_size=2, max_new_tokens=4)
  mine, alone = (generate.beam_search(model, on_mesh, prompts, mesh=mesh, **beams),
                 generate.beam_search(model, params, prompts, **beams))
  assert [[tokens for tokens, _ in ranked] for ranked in mine] == [
      [tokens for tokens, _ in ranked] for ranked in alone]
