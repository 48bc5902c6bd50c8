"""Evaluations beyond the validation loss, one file each.

* ``story_prompts``: the 24 prompts of Eldan & Li continued by trained models, side by side.
* ``moons``: the three-moons networks: training, error against context, matrices (a runner).
* ``regbench``: accuracy and TVD against exact next-token distributions (an evaluator).
* ``depth_curves``: training and validation curves of a depth sweep (v1 Figures 7, 13).
* ``position_loss``: loss against position on out-of-distribution text (v1 Figure 8).
* ``attention_maps``: the last token's weights over positions; leaky coefficient vs peak width
  (v1 Figures 14-16).
* ``extrapolation``: loss at 1x-8x the training length, with and without v2's long-term memory.
* ``ruler``: RULER-style new-knowledge tasks at 1x-8x the training context (v2 Table 3).
* ``icl_classification``: many-shot classification accuracy against shots, semantic and
  anonymous labels (v2 Figures 3-5).

``EVALUATORS`` are called by the trainer after the validation loss, for each model named in
``config.train.evaluators``: ``evaluator(model, params, data, config) -> dict of metrics``.
"""

import importlib

# name -> module with ``evaluate``; imported when used, so that ``python -m
# mosaics_jax.evaluate.NAME`` does not import its own module twice.
EVALUATORS = {"regbench": "mosaics_jax.evaluate.regbench"}


def evaluator(name: str):
  """The evaluator function registered as ``name``."""
  return importlib.import_module(EVALUATORS[name]).evaluate
