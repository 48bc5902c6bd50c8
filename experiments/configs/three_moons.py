r"""Three moons (v1 paper, section 3 and appendix A; Figures 3, 4, 5, 10): predictive
disentanglement in a 54-parameter network.

Command:
    python -m mosaics_jax.main --config=experiments/configs/three_moons.py --workdir=/tmp/moons
Argument: ``tiny`` (seconds; what the tests run).

Hardware and runtime: 2 CPU cores, about 20 minutes (two trainings of 500 steps, then 2 x 2
sweeps over 775 context lengths of 25-step rollouts on 512 sequences). Measured 2026-11-22:
8 min 15 s for the 1-head network alone on the cores, 29 min 25 s for both while other jobs
shared them; results in docs/results.md.

Setup (the official ThreeMoons/ code): three moons seen from the sun, 6 features per step;
8 training period triples and one held out, sequences of 800 steps holding at least 3 joint
periods; one contextual memory with 3x3 complex W_phi, W_psi, W_z and beta = 50, either one head
on the 3 complex dimensions or 3 heads of one; AdamW, lr 1e-2 -> 5e-6 linearly over 500 steps,
batch 64, squared error clipped at +-0.5.

Expected result (the paper's Figures 3-5, 10): the 3-head network's prediction error falls as
each moon's period passes and is low once the longest period has been seen, long before the
lcm of the periods; the 1-head network needs the whole joint period (the lcm). On the held-out
periods the same holds. The 3-head matrices are disentangled: each head reads one moon.
Ours (docs/results.md): mean error before the longest period / between it and the lcm / after
the lcm, training triple: 1 head 0.67 / 0.67 / 0.27, 3 heads 0.49 / 0.13 / 0.20; held-out:
1 head 0.54 / 0.54 / 0.26, 3 heads 0.55 / 0.14 / 0.17; head selectivity 0.99-1.00 (3 heads)
against 0.43-0.58 (1 head).
"""

import ml_collections


def get_config(arg: str = ""):
  tiny = arg == "tiny"
  config = ml_collections.ConfigDict()
  config.runner = "three_moons"
  config.seed = 100
  config.heads = (1, 3)
  config.bandwidth = 50.0
  config.moons = ml_collections.ConfigDict(dict(length=120 if tiny else 800, min_periods=3))
  config.train = ml_collections.ConfigDict(dict(
      steps=20 if tiny else 500, batch_size=8 if tiny else 64, learning_rate=1e-2,
      final_learning_rate=5e-6, b1=0.9, b2=0.999))
  config.evaluate = ml_collections.ConfigDict(dict(
      sequences=8 if tiny else 512, horizon=25, context_stride=10 if tiny else 1,
      train_triple=5))  # (0.5, 1, 2.5), the triple the official plots use
  config.lock()
  return config
