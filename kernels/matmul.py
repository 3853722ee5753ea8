"""Matrix products with fp32 results for any input dtype (cuBLAS accumulates in fp32 either way).

On CUDA, ``torch.mm(..., out_dtype=torch.float32)`` returns the fp32 accumulator of a bf16/fp16
product without rounding it to the input dtype; where a PyTorch build lacks it, the product is
rounded to the input dtype first (a relative error of 2^-8 for bf16) and then widened.
"""

from __future__ import annotations

import torch

_out_dtype_works: bool | None = None


def _cuda_out_dtype(fn, *args, **kwargs) -> torch.Tensor | None:
    global _out_dtype_works
    if _out_dtype_works is False:
        return None
    try:
        result = fn(*args, out_dtype=torch.float32, **kwargs)
    except (TypeError, RuntimeError, NotImplementedError):
        _out_dtype_works = False
        return None
    _out_dtype_works = True
    return result


def matmul_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b as fp32 (2-D operands of one dtype)."""
    if a.dtype == torch.float32:
        return a @ b
    if a.is_cuda:
        result = _cuda_out_dtype(torch.mm, a, b)
        return result if result is not None else (a @ b).float()
    return a.float() @ b.float()


def addmm_fp32_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b for an fp32 ``acc``, without a temporary product where the build allows."""
    if a.dtype == torch.float32:
        acc.addmm_(a, b)
    elif a.is_cuda:
        if _cuda_out_dtype(torch.addmm, acc, a, b, out=acc) is None:
            acc += matmul_fp32(a, b)
    else:
        acc.addmm_(a.float(), b.float())


def matmul_fp32_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """out = a @ b for an fp32 ``out`` (e.g. a reused chunk buffer); the product is not rounded to the
    input dtype where the build allows."""
    if a.dtype == torch.float32:
        return torch.mm(a, b, out=out)
    if a.is_cuda:
        if _cuda_out_dtype(torch.mm, a, b, out=out) is None:
            out.copy_(a @ b)
        return out
    return torch.mm(a.float(), b.float(), out=out)
