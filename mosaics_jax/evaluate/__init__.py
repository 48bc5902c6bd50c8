"""Evaluations beyond the validation loss, one file each.

* ``story_prompts``: the 24 prompts of Eldan & Li continued by trained models, side by side.
* ``moons``: the three-moons networks: training, error against context, matrices (a runner).
* ``regbench``: accuracy and TVD against exact next-token distributions (an evaluator).

``EVALUATORS`` are called by the trainer after the validation loss, for each model named in
``config.train.evaluators``: ``evaluator(model, params, data, config) -> dict of metrics``.
"""

from mosaics_jax.evaluate import regbench

EVALUATORS = {"regbench": regbench.evaluate}
