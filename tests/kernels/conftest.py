"""Kernel tests run the Triton kernels in the interpreter when no GPU is present.

TRITON_INTERPRET must be set before `triton.jit` decorates the kernels, so this runs before the
kernel module is imported by any test here.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
