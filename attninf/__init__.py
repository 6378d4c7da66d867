"""attninf: pick the pretraining data a large model learns most from, by the
AttentionInfluence method (arXiv 2505.07293): mask a small model's retrieval
heads and score each document by how much its loss rises.

Importing this package is cheap: torch, transformers, triton and dask are
imported inside the functions that need them.
"""

__version__ = "0.1.0"

from .errors import AttninfError  # noqa: E402

__all__ = ["AttninfError", "__version__"]
