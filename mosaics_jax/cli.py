"""What the command-line entry points share."""

from absl import app, flags, logging


def quiet_logging() -> None:
  """Warnings only, unless --verbosity is given: orbax logs every save and restore at INFO."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def mesh(shape: list[str]):
  """The mesh of a ``--mesh=DATA,FSDP,TENSOR`` flag, or None (one device) when it is empty."""
  if not shape:
    return None
  from mosaics_jax.train import sharding  # pylint: disable=import-outside-toplevel
  try:
    data, fsdp, tensor = (int(x) for x in shape)
  except ValueError as error:
    raise app.UsageError(f"--mesh={','.join(shape)}: give three integers DATA,FSDP,TENSOR"
                         f" whose product is the device count, e.g. 1,8,1") from error
  return sharding.make_mesh({"data": data, "fsdp": fsdp, "tensor": tensor})
