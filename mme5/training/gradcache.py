"""GradCache: contrastive steps whose negative pool does not cost activation memory.

A cached step runs in three phases (Gao et al., "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup"):

1. encode every chunk of queries and candidates without autograd, remembering the RNG state
   (CPU and the current CUDA device) before each chunk; the last chunk is encoded with autograd and
   its graph kept, so it needs no second forward;
2. compute the loss on the detached representations (through the same loss module, cross-rank
   gathering included) and take its gradient w.r.t. the representations (and the loss module's own
   parameters, e.g. a learnable temperature);
3. re-encode each other chunk with autograd under its replayed RNG state (same dropout masks) and
   backpropagate the cached gradient into the encoder: ``backward(reps, cached_grad)``.

At most two chunks' activations are alive at a time (the kept last chunk and the one being
re-encoded), so peak memory grows with the chunk size, not the batch. Every backward pass goes through
the caller's ``backward`` (a training loop's, e.g. Lightning's ``manual_backward``: fp16 loss scaling,
division by the number of accumulated batches), the replayed chunks' inside the caller's ``no_sync``
context, so that gradients are reduced across ranks once, in the last chunk's backward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Inputs = dict[str, Tensor]


class RngState:
    """The CPU RNG state and, when ``device`` is CUDA, that device's RNG state, captured at creation."""

    def __init__(self, device: torch.device | None = None):
        self.cpu = torch.get_rng_state()
        self.cuda_device = device if device is not None and device.type == "cuda" else None
        self.cuda = torch.cuda.get_rng_state(self.cuda_device) if self.cuda_device is not None else None

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the body with the captured state; the RNG state outside is left as it was."""
        devices = [self.cuda_device] if self.cuda_device is not None else []
        with torch.random.fork_rng(devices=devices, device_type="cuda" if devices else "cpu"):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None and self.cuda_device is not None:
                torch.cuda.set_rng_state(self.cuda, self.cuda_device)
            yield


def split_rows(inputs: Inputs, chunk: int, select_rows: Callable[[Inputs, slice], Inputs]) -> list[Inputs]:
    """Split collated model inputs into row chunks of at most ``chunk`` rows.

    ``select_rows`` is the backbone adapter's (:meth:`mme5.model.encoder.Encoder.select_rows`): it knows which
    tensors are per row and which per image (LLaVA's stacked images, Qwen2-VL's flattened patches).
    """
    if chunk < 1:
        raise ValueError(f"grad_cache_chunk must be >= 1, got {chunk}")
    n = inputs["input_ids"].shape[0]
    if n <= chunk:
        return [inputs]
    return [select_rows(inputs, slice(s, min(s + chunk, n))) for s in range(0, n, chunk)]


@dataclass
class CachedStep:
    """What :func:`grad_cache_step` returns (its gradients are in the parameters' ``.grad``)."""

    loss: Tensor
    """The loss (detached, as the loss module returned it)."""
    stats: dict[str, Tensor]
    """The loss module's statistics."""


def _backward(loss: Tensor) -> None:
    loss.backward()


def grad_cache_step(
    encode: Callable[[Inputs], Tensor],
    loss_fn: Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]],
    query_chunks: Sequence[Inputs],
    candidate_chunks: Sequence[Inputs],
    loss_params: Sequence[Tensor] = (),
    backward: Callable[[Tensor], None] = _backward,
    no_sync: Callable[[], AbstractContextManager[Any]] = nullcontext,
    sync: bool = True,
    touch: Sequence[Tensor] = (),
    device: torch.device | None = None,
    keep_last: bool = True,
) -> CachedStep:
    """One GradCache step: adds the gradient of the loss over all chunks to the parameters' ``.grad``.

    Args:
        encode: model inputs -> representations ``[n, D]`` (the encoder, called in its current mode).
        loss_fn: ``(q [B, D], c [N, D]) -> (loss, stats)``; may gather across ranks.
        query_chunks / candidate_chunks: the inputs split into chunks (:func:`split_rows`).
        loss_params: parameters of the loss itself (e.g. a learnable temperature); their gradient joins
            the last chunk's backward.
        backward: runs the backward pass of a scalar (by default ``Tensor.backward``); every chunk's
            gradient goes through it, as a scalar whose gradient is the cached one.
        no_sync: a context in which backward passes do not reduce gradients across ranks; the
            replayed chunks run in it, and so does the last one unless ``sync``.
        sync: reduce in the last chunk's backward (False while accumulating batches).
        touch: parameters to put in the last backward's graph with a zero gradient when the earlier
            chunks gave them a ``.grad``, so that DDP's reducer sees (and averages) those gradients even
            if the last chunk does not use them (e.g. vision weights and a text-only last chunk).
        device: where the RNG state matters (CUDA device of the encoder), or None for CPU only.
        keep_last: encode the last chunk with autograd in the first pass and keep its graph (one
            forward less per step, one more chunk of activations held); False re-encodes it too.
    """
    chunks = [("q", x) for x in query_chunks] + [("c", x) for x in candidate_chunks]
    states: list[RngState] = []
    reps: dict[str, list[Tensor]] = {"q": [], "c": []}
    kept: Tensor | None = None
    for i, (side, inputs) in enumerate(chunks):
        states.append(RngState(device))
        if keep_last and i == len(chunks) - 1:
            kept = encode(inputs)
            reps[side].append(kept.detach())
        else:
            with torch.no_grad():
                reps[side].append(encode(inputs))
    q = torch.cat(reps["q"]).detach().requires_grad_(True)
    c = torch.cat(reps["c"]).detach().requires_grad_(True)
    loss, stats = loss_fn(q, c)
    params = [p for p in loss_params if p.requires_grad]
    # FSDP2 swaps a sharded module's parameters for gathered ones inside its forward, so the loss graph
    # does not reach the sharded ones: their gradient comes from a second loss evaluation instead
    sharded = any(hasattr(p, "full_tensor") for p in params)
    grads = torch.autograd.grad(loss, [q, c] + ([] if sharded else params), allow_unused=True)
    grad_q, grad_c, param_grads = grads[0], grads[1], grads[2:]
    cached = {
        "q": list(torch.split(grad_q, [t.shape[0] for t in reps["q"]])),
        "c": list(torch.split(grad_c, [t.shape[0] for t in reps["c"]])),
    }
    last_side = chunks[-1][0]
    with no_sync():
        for (_, inputs), state, grad in zip(
            chunks[:-1], states[:-1], _in_order(chunks[:-1], cached), strict=True
        ):
            with state.replay():
                out = encode(inputs)
            backward((out * grad.to(out.dtype)).sum())
    if kept is None:
        with states[-1].replay():
            kept = encode(chunks[-1][1])
    last = (kept * cached[last_side][-1].to(kept.dtype)).sum()
    if sharded:
        again, _ = loss_fn(q.detach(), c.detach())
        last = last + (again - again.detach())
    else:
        for p, g in zip(params, param_grads, strict=True):
            if g is not None:
                last = last + (p * g.to(p.dtype)).sum()
    for p in touch:
        if p.grad is not None:
            last = last + p.reshape(-1)[:1].sum() * 0.0
    with nullcontext() if sync else no_sync():
        backward(last)
    return CachedStep(loss=loss.detach(), stats=stats)


def _in_order(chunks: Sequence[tuple[str, Inputs]], cached: dict[str, list[Tensor]]) -> Iterator[Tensor]:
    """The cached gradient of each chunk, in the order of ``chunks``."""
    seen = {"q": 0, "c": 0}
    for side, _ in chunks:
        yield cached[side][seen[side]]
        seen[side] += 1


def chunked_reference_step(
    encode: Callable[[Inputs], Tensor],
    loss_fn: Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Any]]],
    query_chunks: Sequence[Inputs],
    candidate_chunks: Sequence[Inputs],
) -> tuple[Tensor, dict[str, Any]]:
    """The same forward micro-batching as :func:`grad_cache_step`, but with the whole graph kept.

    The oracle for GradCache tests: it draws the same dropout masks (same chunk order and shapes)
    and returns the loss for an ordinary backward.
    """
    q = torch.cat([encode(x) for x in query_chunks])
    c = torch.cat([encode(x) for x in candidate_chunks])
    return loss_fn(q, c)
