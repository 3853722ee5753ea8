"""Kernel tests run the Triton kernels in the interpreter when no GPU is present (see tests/conftest.py)."""
