"""Print every model preset with its parameter count: ``python -m mosaics_jax.models``.

Shapes come from ``jax.eval_shape``, so even the 9.9B-parameter preset costs no memory.
"""

from absl import app

from mosaics_jax import models


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; this command takes none")
  print(f"{'preset':32s} {'kind':12s} {'layers':>6s} {'width':>6s} {'heads':>5s} "
        f"{'context':>7s} {'parameters':>15s}")
  for name, config in models.PRESETS.items():
    kind = (f"mosaic v{config.version}" if isinstance(config, models.MosaicConfig)
            else "transformer")
    count = models.count_params(models.abstract_params(models.build_model(config)))
    print(f"{name:32s} {kind:12s} {config.num_layers:6d} {config.embed_dim:6d} "
          f"{config.num_heads:5d} {config.context_length:7d} {count:15,d}")


if __name__ == "__main__":
  app.run(main)
