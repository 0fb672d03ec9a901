"""DINOv2 embeddings of tile windows with a keyed Parquet cache (docs/algorithms.md §7).

Heavy dependencies (torch, transformers) are imported inside the functions that need them.
"""

from smt_tools.embeddings.cache import read_embeddings
from smt_tools.embeddings.model import HUB_ALIASES, describe_model, load_model

__all__ = ["HUB_ALIASES", "describe_model", "load_model", "read_embeddings"]
