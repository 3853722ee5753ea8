"""Memory contract: chunked and triton neither save nor allocate a B x N tensor.

Two witnesses on CPU: `saved_tensors_hooks` sees every tensor autograd keeps, and a
`TorchDispatchMode` sees every tensor each ATen op returns (so every allocation) during forward and
backward. The reference is run through the same tracker to show that it does see B x N tensors.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from mme5.kernels.chunked import infonce_chunked
from mme5.kernels.inputs import check_inputs
from mme5.kernels.reference import infonce_reference
from tests.helpers.infonce_cases import make_case

B, N, D = 200, 190, 16  # B*N = 38000 elements, (B + N) * D = 6240; inputs are fp32


class LargestAllocation(TorchDispatchMode):
    """Records the size in bytes of the largest tensor any op produces (the interpreter moves raw
    byte storages around, so bytes, not elements, are what can be compared)."""

    def __init__(self):
        super().__init__()
        self.largest = 0
        self.op = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.numel() * t.element_size() > self.largest:
                self.largest, self.op = t.numel() * t.element_size(), str(func)
        return out


def measure(fn, symmetric=True):
    case = make_case(B, N, D, torch.float32, dup_ids=True, extra=3)
    q = case["q"].requires_grad_()
    c = case["c"].requires_grad_()
    t = case["temperature"].requires_grad_()
    x = check_inputs(q, c, case["labels"], t, symmetric, case["candidate_ids"], case["extra_logits"])
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    tracker = LargestAllocation()
    with tracker:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = fn(x)
        held = [g for g in getattr(loss.grad_fn, "grads", None) or () if g is not None]
        loss.backward()
    return saved, tracker, held


@pytest.fixture
def triton_small():
    """infonce_triton with 64-wide tiles; ``one_pass=False`` forces the recompute kernels."""
    from mme5.kernels import config, triton_infonce

    if not config.INTERPRETER:
        pytest.skip(
            "the CPU allocation witness needs the Triton interpreter (CUDA memory is checked in the GPU test)"
        )
    tiles = config.TileConfig(
        block_m=64, block_n=64, block_k=64, num_warps=4, num_stages=1, min_chunk_rows=64
    )
    return lambda x, one_pass=True: triton_infonce.infonce_triton(
        x, config.InfoNCEConfig(one_pass=one_pass, tiles=tiles)
    )


def check_contract(saved, tracker, held=()):
    saved = saved + [t.numel() for t in held]
    assert saved, "the hook saw nothing: the witness is broken"
    assert max(saved) < B * N, f"autograd saved a tensor of {max(saved)} elements"
    assert sum(saved) <= 3 * (B + N) * D, f"autograd saved {sum(saved)} elements, more than O((B + N) D)"
    assert tracker.largest < 4 * B * N, (
        f"{tracker.op} allocated {tracker.largest} bytes (B x N fp32: {4 * B * N})"
    )


def test_reference_is_seen_materialising_b_by_n():
    saved, tracker, _ = measure(infonce_reference)
    assert max(saved) >= B * N and tracker.largest >= 4 * B * N


@pytest.mark.parametrize("symmetric", [True, False], ids=["recompute", "one-pass"])
def test_chunked_keeps_no_b_by_n_tensor(symmetric):
    saved, tracker, held = measure(lambda x: infonce_chunked(x), symmetric)
    assert held or symmetric, "the one-pass path keeps its gradients on the autograd node"
    check_contract(saved, tracker, held)


@pytest.mark.parametrize("path", ["recompute-symmetric", "one-pass", "recompute-row"])
def test_triton_keeps_no_b_by_n_tensor(triton_small, path):
    symmetric = path == "recompute-symmetric"
    one_pass = path != "recompute-row"
    saved, tracker, held = measure(lambda x: triton_small(x, one_pass=one_pass), symmetric)
    assert bool(held) == (path == "one-pass"), (
        "only the one-pass path keeps its gradients on the autograd node"
    )
    check_contract(saved, tracker, held)
