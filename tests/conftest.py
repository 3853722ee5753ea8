"""Suite-wide set-up: without a GPU, Triton kernels run in Triton's interpreter.

TRITON_INTERPRET must be set before any `triton.jit` decorator runs, i.e. before the first test
module imports `mme5.kernels` (many do, through the loss), so it is set here at the root.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
