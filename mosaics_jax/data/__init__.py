"""Data for training and evaluation.

Every source returns a ``Data`` (``data/pipeline.py``): a factory of endless, checkpointable
iterators over this process's training batches (one fresh iterator per model trained, from any
global batch), a fixed list of evaluation batches, and the vocabulary. ``config.source``
names the source: text (``data/text_data.py``: token stores, raw corpora), RegBench automata,
RULER-style tasks, many-shot classification episodes.
"""

from mosaics_jax.data.corpus import DataError
from mosaics_jax.data.icl_classification import icl_classification_data
from mosaics_jax.data.pipeline import Data
from mosaics_jax.data.regbench import regbench_data
from mosaics_jax.data.ruler import ruler_data
from mosaics_jax.data.text_data import documents_data, text_data

SOURCES = {"text": text_data, "regbench": regbench_data,
           "icl_classification": icl_classification_data, "ruler": ruler_data}


def build(config, **kwargs) -> Data:
  """The data of an experiment; ``config.source`` names the source."""
  if config.source not in SOURCES:
    raise DataError(f"Unknown data source {config.source!r}; choose one of {sorted(SOURCES)}.")
  return SOURCES[config.source](config, **kwargs)


__all__ = ["Data", "DataError", "SOURCES", "build", "documents_data", "regbench_data", "text_data"]
