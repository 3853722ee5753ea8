"""Fused contrastive-loss kernels: one InfoNCE contract, three implementations.

``infonce`` is the entry point; ``reference`` materialises the logits (the oracle), ``chunked`` is a
pure-PyTorch row-chunked twin that never holds a B x N tensor, and ``triton`` runs fused GPU kernels.
How the fast paths run is an explicit ``InfoNCEConfig`` (``infonce(..., config=...)``).
"""

from .api import IMPLS, infonce
from .config import InfoNCEConfig, OnePassConfig, TileConfig, default_config

__all__ = ["IMPLS", "InfoNCEConfig", "OnePassConfig", "TileConfig", "default_config", "infonce"]
