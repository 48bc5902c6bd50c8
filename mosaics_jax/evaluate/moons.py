"""Three moons (v1 Figures 3, 4, 5, 10): training, prediction error against context, plots.

``run(config, workdir)`` trains the 1-head and the 3-head network (official recipe: 500 AdamW
steps of 64 sequences of 800 steps, learning rate 1e-2 decaying linearly to 5e-6, the squared
error of predictions clipped at +-0.5), then, for every context length c, predicts the next
``horizon`` positions autoregressively from the first c true ones and measures the mean
absolute deviation from the truth, averaged over ``sequences`` sequences of one training
triple and of the held-out triple. It writes ``moons_error.png`` (error against context, the
periods and their lcm marked), ``moons_matrices.png`` (moduli of W_phi, W_psi, W_z) and
``moons.json``, and returns the summary.
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mosaics_jax.data.moons import TRAIN_PERIODS, VALIDATION_PERIODS, Moons, joint_period
from mosaics_jax.evaluate import command, plotting
from mosaics_jax.models.moons import MoonsNetwork


def clipped_squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """Appendix A's loss: mean of clip(prediction - target, -0.5, 0.5)^2."""
  return jnp.mean(jnp.square(jnp.clip(predictions - targets, -0.5, 0.5)))


def train(model: MoonsNetwork, moons: Moons, config, seed: int):
  """Returns (params, losses). config: the ``train`` section."""
  rng = np.random.default_rng(seed)
  sample = moons.batch(rng, config.batch_size, length=moons.length + 1)
  params = model.init(jax.random.key(seed), sample[:, :-1])["params"]
  schedule = optax.linear_schedule(config.learning_rate, config.final_learning_rate, config.steps)
  optimizer = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=0.0)
  state = optimizer.init(params)

  @jax.jit
  def step(params, state, sequences):
    loss, grads = jax.value_and_grad(lambda p: clipped_squared_error(
        model.apply({"params": p}, sequences[:, :-1]), sequences[:, 1:]))(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for _ in range(config.steps):
    params, state, loss = step(params, state, moons.batch(rng, config.batch_size,
                                                          length=moons.length + 1))
    losses.append(loss)
  return params, [float(loss) for loss in jax.device_get(losses)]


def rollout_errors(model: MoonsNetwork, params, sequences: np.ndarray, contexts,
                   horizon: int) -> np.ndarray:
  """Mean |prediction - truth| over the ``horizon`` positions after each context length c,
  the predictions fed back one at a time.

  The pairs s <= c-2 hold only true positions, so their keys and values are computed once;
  the rollout adds one pair per step (key of position t, value W_psi of the prediction of
  t+1), so each step costs O(T) instead of a full forward pass.
  """
  call = lambda method, *args: model.apply({"params": params}, *args, method=method)

  @jax.jit
  def errors(sequences, contexts):
    keys, values = call(MoonsNetwork.features, sequences)  # (B, T, H, D)
    batch, length, heads, dim = keys.shape

    def one(context):
      true_visible = jnp.arange(length) <= context - 2

      def step(i, carry):
        query_key, new_keys, new_values, predictions = carry
        query = model.bandwidth * query_key
        scores = jnp.concatenate([
            jnp.where(true_visible, jnp.einsum("bhd,bshd->bhs", query, keys), -jnp.inf),
            jnp.where(jnp.arange(horizon) < i, jnp.einsum("bhd,bjhd->bhj", query, new_keys),
                      -jnp.inf)], axis=-1)
        maximum = jnp.max(scores, axis=-1, keepdims=True)
        weights = jnp.exp(scores - jnp.where(jnp.isfinite(maximum), maximum, 0.0))
        weights = weights / jnp.maximum(weights.sum(-1, keepdims=True), 1e-30)
        retrieved = jnp.einsum("bhs,bshd->bhd", weights,
                               jnp.concatenate([values, new_values], axis=1))
        prediction = call(MoonsNetwork.output, retrieved)
        next_key, value = call(MoonsNetwork.encode_step, prediction)
        return (next_key, new_keys.at[:, i].set(query_key), new_values.at[:, i].set(value),
                predictions.at[:, i].set(prediction))

      start = (jax.lax.dynamic_index_in_dim(keys, context - 1, 1, keepdims=False),
               jnp.zeros((batch, horizon, heads, dim)), jnp.zeros((batch, horizon, heads, dim)),
               jnp.zeros((batch, horizon, 6)))
      predictions = jax.lax.fori_loop(0, horizon, step, start)[3]
      truth = jax.lax.dynamic_slice_in_dim(sequences, context, horizon, axis=1)
      return jnp.mean(jnp.abs(predictions - truth))

    return jax.lax.map(one, contexts)

  return np.asarray(errors(jnp.asarray(sequences), jnp.asarray(contexts, jnp.int32)))


def moduli(params) -> dict[str, np.ndarray]:
  """|W| of each complex matrix, as (output, input): rows are heads' dimensions, columns moons."""
  return {name: np.abs(np.asarray(p["real"]) + 1j * np.asarray(p["imag"])).T
          for name, p in params.items()}


def head_selectivity(matrix: np.ndarray) -> float:
  """Mean over rows of the largest modulus' share of the row: 1 when each row reads one moon."""
  return float(np.mean(matrix.max(axis=1) / matrix.sum(axis=1)))


def _window_mean(errors, contexts, lo, hi) -> float:
  contexts = np.asarray(contexts)
  chosen = (contexts >= lo) & (contexts <= hi)
  return float(np.mean(errors[chosen])) if chosen.any() else float("nan")


def plot_errors(path, moons, contexts, curves, horizon) -> None:
  plt = plotting.pyplot()
  figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
  for axis, (label, periods) in zip(axes, (("training triple", curves["train_periods"]),
                                           ("held-out triple", curves["validation_periods"]))):
    for name, errors in curves[label].items():
      axis.plot(contexts, errors, label=name)
    for period in periods:
      axis.axvline(moons.in_steps(period), color="grey", linestyle="--", linewidth=1)
    axis.axvline(moons.in_steps(joint_period(periods)), color="red", linewidth=1.2,
                 label="lcm of the periods")
    axis.set_title(f"{label}: periods {tuple(periods)}")
    axis.set_xlabel("context length (steps)")
    axis.set_ylim(-0.02, 1.0)
    axis.grid(alpha=0.3)
  axes[0].set_ylabel(f"mean |prediction - truth|, next {horizon} steps")
  axes[0].legend()
  plotting.save(figure, path)


def plot_matrices(path, matrices: dict[str, dict[str, np.ndarray]]) -> None:
  names = list(matrices)
  plt = plotting.pyplot()
  figure, axes = plt.subplots(len(names), 3, figsize=(9, 3 * len(names)))
  for row, name in enumerate(names):
    for col, (label, symbol) in enumerate((("phi", r"$|W_\varphi|$"), ("psi", r"$|W_\psi|$"),
                                           ("z", r"$|W_z|$"))):
      axis = axes[row, col]
      image = axis.imshow(matrices[name][label], cmap="viridis")
      axis.set_title(f"{name}: {symbol}")
      axis.set_xlabel("moon (input)")
      axis.set_ylabel("output")
      axis.set_xticks(range(3))
      axis.set_yticks(range(3))
      figure.colorbar(image, ax=axis, fraction=0.046)
  plotting.save(figure, path)


def run(config, workdir: str) -> dict:
  """Train both networks, evaluate them, write plots and numbers in ``workdir`` (local or in a
  bucket)."""
  output = command.Output(workdir)
  moons = Moons(config.moons.length, config.moons.min_periods)
  evaluation = config.evaluate
  train_periods = TRAIN_PERIODS[evaluation.train_triple]
  contexts = list(range(1, moons.length - evaluation.horizon + 1, evaluation.context_stride))
  rng = np.random.default_rng(config.seed + 1)
  sequences = {"training triple": moons.batch(rng, evaluation.sequences, train_periods),
               "held-out triple": moons.batch(rng, evaluation.sequences, VALIDATION_PERIODS)}
  curves = {"train_periods": train_periods, "validation_periods": VALIDATION_PERIODS,
            "training triple": {}, "held-out triple": {}}
  summary, matrices = {}, {}
  for heads in config.heads:
    name = f"{heads} head" + ("s" if heads > 1 else "")
    started = time.time()
    model = MoonsNetwork(num_heads=heads, bandwidth=config.bandwidth)
    params, losses = train(model, moons, config.train, config.seed)
    matrices[name] = moduli(params)
    result = {"parameters": int(sum(p.size for p in jax.tree_util.tree_leaves(params))),
              "final_loss": float(np.mean(losses[-20:])),
              "selectivity": {k: head_selectivity(m) for k, m in matrices[name].items()}}
    for label, seqs in sequences.items():
      errors = rollout_errors(model, params, seqs, contexts, evaluation.horizon)
      curves[label][name] = errors.tolist()
      periods = train_periods if label == "training triple" else VALIDATION_PERIODS
      longest, joint = moons.in_steps(max(periods)), moons.in_steps(joint_period(periods))
      result[label] = {
          "before_longest_period": _window_mean(errors, contexts, 1, longest - 5),
          "between_longest_period_and_lcm": _window_mean(errors, contexts, longest + 10,
                                                         joint - 10),
          "after_lcm": _window_mean(errors, contexts, joint + 10, moons.length)}
    result["seconds"] = time.time() - started
    summary[name] = result
    print(f"[three moons] {name}: {json.dumps(result)}", flush=True)
  plot_errors(output.path("moons_error.png"), moons, contexts, curves, evaluation.horizon)
  plot_matrices(output.path("moons_matrices.png"), matrices)
  output.write_json("moons.json", {"summary": summary, "contexts": contexts, "curves": curves,
                                   "matrices": {n: {k: m.tolist() for k, m in ms.items()}
                                                for n, ms in matrices.items()}})
  return summary
