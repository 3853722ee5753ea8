"""Fused contrastive-loss kernels."""
