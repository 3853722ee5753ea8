"""Fused contrastive-loss kernels: one InfoNCE contract, three implementations.

``infonce`` is the entry point; ``reference`` materialises the logits (the oracle), ``chunked`` is a
pure-PyTorch row-chunked twin that never holds a B x N tensor, and ``triton`` runs fused GPU kernels.
"""

from .api import IMPLS, infonce

__all__ = ["IMPLS", "infonce"]
