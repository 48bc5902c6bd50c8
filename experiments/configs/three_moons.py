r"""Three moons (v1 paper, section 3 and appendix A; Figures 3, 4, 5, 10): predictive
disentanglement in a 54-parameter network.

Command:
    python -m mosaics_jax.main --config=experiments/configs/three_moons.py --workdir=/tmp/moons
Argument: ``tiny`` (seconds; what the tests run).

Hardware and runtime: 2 CPU cores, about 10 minutes (two trainings of 500 steps, then 2 x 2
sweeps over 775 context lengths of 25-step rollouts on 512 sequences); see docs/results.md.

Setup (the official ThreeMoons/ code): three moons seen from the sun, 6 features per step;
8 training period triples and one held out, sequences of 800 steps holding at least 3 joint
periods; one contextual memory with 3x3 complex W_phi, W_psi, W_z and beta = 50, either one head
on the 3 complex dimensions or 3 heads of one; AdamW, lr 1e-2 -> 5e-6 linearly over 500 steps,
batch 64, squared error clipped at +-0.5.

Expected result (the paper's Figures 3-5, 10): the 3-head network's prediction error falls as
each moon's period passes and is low once the longest period has been seen, long before the
lcm of the periods; the 1-head network needs the whole joint period (the lcm). On the held-out
periods the same holds. The 3-head matrices are disentangled: each head reads one moon.
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
