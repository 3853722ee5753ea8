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
re-encoded), so peak memory grows with the chunk size, not the batch. The caller owns the last chunk's backward (:class:`CachedStep` returns it as a scalar
"surrogate" whose gradient equals the cached one), so that a training loop can run it as its own
backward: that is where DDP synchronises gradients, scales fp16 losses and divides by the number of
accumulated batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
            if self.cuda is not None:
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
    """What :func:`grad_cache_step` returns."""

    loss: Tensor
    """The loss (detached, as the loss module returned it)."""
    stats: dict[str, Tensor]
    """The loss module's statistics."""
    surrogate: Tensor
    """A scalar whose backward adds the last chunk's cached gradient (plus the loss parameters' and the
    ``touch`` parameters' gradients) to ``.grad``; the caller runs it as the step's final backward."""


def grad_cache_step(
    encode: Callable[[Inputs], Tensor],
    loss_fn: Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]],
    query_chunks: Sequence[Inputs],
    candidate_chunks: Sequence[Inputs],
    loss_params: Sequence[Tensor] = (),
    grad_scale: float = 1.0,
    touch: Sequence[Tensor] = (),
    device: torch.device | None = None,
    keep_last: bool = True,
    set_gradient_sync: Callable[[bool], None] | None = None,
) -> CachedStep:
    """One GradCache step; backpropagates every chunk but the last, returns the last as a surrogate.

    Args:
        encode: model inputs -> representations ``[n, D]`` (the encoder, called in its current mode).
        loss_fn: ``(q [B, D], c [N, D]) -> (loss, stats)``; may gather across ranks.
        query_chunks / candidate_chunks: the inputs split into chunks (:func:`split_rows`).
        loss_params: parameters of the loss itself (e.g. a learnable temperature); their gradient is
            folded into the surrogate.
        grad_scale: factor on the gradients backpropagated here, to match what the caller's loop does
            to the surrogate (fp16 loss scale / accumulated batches).
        touch: parameters to put in the surrogate's graph with a zero gradient when the earlier chunks
            gave them a ``.grad``, so that DDP's reducer sees (and averages) those gradients even if the
            last chunk does not use them (e.g. vision weights and a text-only last chunk).
        device: where the RNG state matters (CUDA device of the encoder), or None for CPU only.
        keep_last: encode the last chunk with autograd in the first pass and keep its graph (one
            forward less per step, one more chunk of activations held); False re-encodes it too.
        set_gradient_sync: switches the encoder's gradient reduction across ranks (FSDP2's
            ``set_requires_gradient_sync``): off for the chunks backpropagated here, on again for the
            caller's final backward, which then reduces the accumulated gradient once.
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
    cached = {"q": list(torch.split(grad_q, [t.shape[0] for t in reps["q"]])),
              "c": list(torch.split(grad_c, [t.shape[0] for t in reps["c"]]))}
    order = {"q": 0, "c": 0}
    surrogate: Tensor | None = None
    if set_gradient_sync is not None:
        set_gradient_sync(False)
    try:
        for i, ((side, inputs), state) in enumerate(zip(chunks, states)):
            grad = cached[side][order[side]]
            order[side] += 1
            if kept is not None and i == len(chunks) - 1:
                out = kept
            else:
                with state.replay():
                    out = encode(inputs)
            if i < len(chunks) - 1:
                torch.autograd.backward(out, grad_tensors=(grad * grad_scale).to(out.dtype))
            else:
                surrogate = (out * grad.to(out.dtype)).sum()
    finally:
        if set_gradient_sync is not None:
            set_gradient_sync(True)
    assert surrogate is not None
    for p, g in zip(params, param_grads):
        if g is not None:
            surrogate = surrogate + (p * g.to(p.dtype)).sum()
    if sharded:
        again, _ = loss_fn(q.detach(), c.detach())
        surrogate = surrogate + (again - again.detach())
    for p in touch:
        if p.grad is None:
            continue
        surrogate = surrogate + p.reshape(-1)[:1].sum() * 0.0
    return CachedStep(loss=loss.detach(), stats=stats, surrogate=surrogate)


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
