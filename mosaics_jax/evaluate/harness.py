r"""The standard LM benchmarks through EleutherAI's lm-evaluation-harness, on a trained run.

    pip install -e '.[eval]'
    python -m mosaics_jax.evaluate.harness --model mosaics_jax \
        --model_args run=/tmp/quickstart:mosaic,mesh_fsdp=-1 --tasks hellaswag,arc_easy \
        --batch_size 16 --output_path /tmp/harness

This is lm_eval's own command line (every flag of ``lm_eval run``) with the model
``mosaics_jax`` registered: lm_eval 0.4 looks models up in its own package only, so a bare
``lm_eval --model mosaics_jax`` cannot find it. From Python, import this module and call
``lm_eval.simple_evaluate(model="mosaics_jax", model_args="run=...", tasks=[...])``.

``--model_args`` (comma-separated, as lm_eval parses them):
  run=WORKDIR:MODEL        the trained model and its experiment's tokenizer (local or bucket)
  mesh_data, mesh_fsdp, mesh_tensor
                           the mesh, as in training (one may be -1: the rest of the devices);
                           all 1 (the default): one device
  max_length               the longest sequence scored or generated; default the training
                           context (``context_length``): memories have no hard limit, but a
                           baseline with learned positions has
  max_gen_toks             new tokens when a task gives none (default 256)
  without_long_term=1      a Memory Mosaic v2 with its long-term memory removed after
                           training (v2 Table 2's third row; ``evaluate/extrapolation.py``)

Scoring right-pads each batch to a power of two (one program per width, at most log2 of
``max_length`` of them); queries only read earlier positions, so padding changes nothing.
Texts longer than ``max_length`` keep their last tokens (``loglikelihood``) or are scored in
disjoint windows (``loglikelihood_rolling``), as lm_eval's Hugging Face model does.
Generation uses the decoding cache (``generate.py``), greedy unless a task asks to sample.
docs/results.md gives the command for v2's 13 persistent-knowledge tasks.
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

try:
  from lm_eval.api import model as lm_model
  from lm_eval.api import registry
  from lm_eval import utils as lm_utils
except ImportError as error:  # an optional extra
  raise ImportError("The lm-evaluation-harness bridge needs lm_eval: pip install -e '.[eval]' "
                    "(or pip install lm_eval).") from error

from mosaics_jax import cli, generate
from mosaics_jax.evaluate import extrapolation
from mosaics_jax.train import checkpoint, sharding

NAME = "mosaics_jax"


def _widths(max_length: int) -> list[int]:
  """The padded widths one scoring program is compiled for: powers of two, then max_length."""
  widths, width = [], 8
  while width < max_length:
    widths.append(width)
    width *= 2
  return widths + [max_length]


@functools.partial(jax.jit, static_argnames=("model",))
def _token_scores(model, params, tokens, targets):
  """(log-probability of each target, whether it is the most likely token), both (B, W)."""
  logits = model.apply({"params": params}, tokens).astype(jnp.float32)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return picked, jnp.argmax(logits, axis=-1) == targets


@registry.register_model(NAME)
class MosaicsLM(lm_model.TemplateLM):
  """A mosaics_jax run as an lm_eval model: loglikelihood, rolling loglikelihood and
  generate_until, batched, on a mesh."""

  def __init__(self, run: str, mesh_data: int = 1, mesh_fsdp: int = 1, mesh_tensor: int = 1,
               batch_size: int | str = 8, max_length: int = 0, max_gen_toks: int = 256,
               without_long_term: bool | str = False, **unused):
    super().__init__()
    for name in unused:  # lm_eval passes device and max_batch_size to every model
      if name not in ("device", "max_batch_size"):
        raise ValueError(f"--model_args {name}=...: unknown; this model takes run, mesh_data, "
                         "mesh_fsdp, mesh_tensor, batch_size, max_length, max_gen_toks, "
                         "without_long_term.")
    try:
      self.batch_size = int(batch_size)
    except ValueError as error:
      raise ValueError(f"--batch_size {batch_size}: give an integer (no 'auto' here).") from error
    shape = [str(mesh_data), str(mesh_fsdp), str(mesh_tensor)]
    self.mesh = None if shape == ["1", "1", "1"] else cli.mesh(shape)
    _, _, loaded = checkpoint.load_run_flag(run, reading="the benchmark texts", mesh=self.mesh)
    self.model, self.params, self.tokenizer = loaded.model, loaded.params, loaded.tokenizer
    if str(without_long_term).lower() in ("1", "true"):
      self.model, self.params = extrapolation.without_long_term(self.model, self.params)
    self.max_length = int(max_length) or self.model.config.context_length
    self.max_gen_toks = int(max_gen_toks)
    self.run = run

  @property
  def eot_token_id(self) -> int:
    return self.tokenizer.eot_id

  @property
  def tokenizer_name(self) -> str:
    return f"{NAME}:{self.run}"

  def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
    return self.tokenizer.encode([string])[0]

  def tok_decode(self, tokens) -> str:
    return self.tokenizer.decode(list(tokens))

  def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
    """(sum of the continuation's log-probabilities, whether greedy decoding gives it) per
    (key, context tokens, continuation tokens), in batches of similar length."""
    rows = []
    for _, context, continuation in requests:
      if len(continuation) > self.max_length:
        raise ValueError(f"A continuation of {len(continuation)} tokens is longer than "
                         f"max_length={self.max_length}: raise it in --model_args.")
      whole = (list(context) + list(continuation))[-(self.max_length + 1):]
      rows.append((whole, len(continuation)))
    results = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    for start in range(0, len(order), self.batch_size):
      batch = order[start:start + self.batch_size]
      width = next(w for w in _widths(self.max_length) if w >= len(rows[batch[0]][0]) - 1)
      tokens = np.zeros((self.batch_size, width), np.int32)
      targets = np.zeros((self.batch_size, width), np.int32)
      for row, index in enumerate(batch):
        whole = rows[index][0]
        tokens[row, :len(whole) - 1] = whole[:-1]
        targets[row, :len(whole) - 1] = whole[1:]
      placed = sharding.rows_on(self.mesh, tokens, targets)
      log_probs, greedy = jax.device_get(_token_scores(self.model, self.params, *placed))
      for row, index in enumerate(batch):
        whole, count = rows[index]
        span = slice(len(whole) - 1 - count, len(whole) - 1)
        results[index] = (float(log_probs[row, span].sum()), bool(greedy[row, span].all()))
    for (key, _, _), result in zip(requests, results):
      if key is not None:  # a rolling window is cached with its whole text, not alone
        self.cache_hook.add_partial("loglikelihood", key, result)
    return results

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    """The log-probability of each whole text after the end-of-text token, predicted in
    disjoint spans of ``max_length`` tokens, each read in a window of up to that many
    (lm_eval's rolling windows)."""
    windows, owner = [], []
    for index, (text,) in enumerate(request.args for request in requests):
      for context, continuation in map(lm_utils.make_disjoint_window,
                                       lm_utils.get_rolling_token_windows(
                                           self.tok_encode(text), self.eot_token_id,
                                           self.max_length, 1)):
        windows.append((None, context, continuation))
        owner.append(index)
    totals = np.zeros(len(requests))
    for index, (log_prob, _) in zip(owner, self._loglikelihood_tokens(windows)):
      totals[index] += log_prob
    for request, total in zip(requests, totals):
      self.cache_hook.add_partial("loglikelihood_rolling", request.args, float(total))
    return totals.tolist()

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    """Continuations up to the first stop string, end of text or ``max_gen_toks``, greedy or
    sampled as each request's ``gen_kwargs`` ask, from the decoding cache."""
    groups: dict[tuple, list[int]] = {}
    settings = []
    for index, (_, gen_kwargs) in enumerate(request.args for request in requests):
      kwargs = dict(gen_kwargs)
      until = kwargs.pop("until", None) or []
      until = [until] if isinstance(until, str) else list(until)
      steps = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
      temperature = float(kwargs.pop("temperature", 0.0)) if kwargs.pop("do_sample", False) \
          else 0.0
      settings.append(until)
      groups.setdefault((steps, temperature), []).append(index)
    out = [""] * len(requests)
    for (steps, temperature), indices in groups.items():
      keep = max(self.max_length - steps, 1)
      prompts = [self.tok_encode(requests[i].args[0])[-keep:] or [self.eot_token_id]
                 for i in indices]
      width = max(len(p) for p in prompts)
      if temperature > 0:
        continued = []
        for start in range(0, len(prompts), self.batch_size):
          continued += generate.sample(
              self.model, self.params, prompts[start:start + self.batch_size],
              max_new_tokens=steps, rng=jax.random.key(start), temperature=temperature,
              mesh=self.mesh)
      else:
        continued = generate.greedy_in_batches(self.model, self.params, prompts, width=width,
                                               steps=steps, batch_size=self.batch_size,
                                               mesh=self.mesh)
      for index, tokens in zip(indices, continued):
        text = self.tok_decode(generate.until_token(tokens, self.eot_token_id))
        for stop in settings[index]:
          text = text.split(stop)[0]
        out[index] = text
        self.cache_hook.add_partial("generate_until", requests[index].args, text)
    return out


def main() -> None:
  from lm_eval import __main__ as lm_eval_main  # pylint: disable=import-outside-toplevel
  lm_eval_main.cli_evaluate()


if __name__ == "__main__":
  sys.exit(main())
