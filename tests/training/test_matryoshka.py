"""Matryoshka loss: the weighted sum of InfoNCE terms at truncated, re-normalised dimensions.

The reference is written out from the definition: the global oracle of test_distributed_loss on the
truncated, re-normalised embeddings, one term per dimension, weighted and summed. Every
implementation is checked against it forward and backward on odd shapes (fp32; fp16 through the
chunked path and Triton's interpreter), then through GradCache and a Lightning step. The cross-rank
case is in test_distributed_loss (``test_gathered_matryoshka_matches_global_oracle``).
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from mme5.data.collate import Collator
from mme5.errors import ConfigError
from mme5.model.encoder import Encoder, LoraSettings
from mme5.training.gradcache import chunked_reference_step, grad_cache_step, split_rows
from mme5.training.losses import ContrastiveLoss, LossSettings, matryoshka_terms
from mme5.training.module import EmbeddingModule, EncoderSettings, ScheduleSettings
from tests.training.test_distributed_loss import K, oracle
from tests.training.test_module import loader, make_examples

TAU = 0.05


def batch(b: int, d: int, dtype: torch.dtype, seed: int = 0):
    """q [b, d], positives [b, d], negatives [b*K, d] (unit rows, then rounded to ``dtype``) and ids."""
    g = torch.Generator().manual_seed(seed)
    q, pos, neg = (F.normalize(torch.randn(n, d, generator=g), dim=-1) for n in (b, b, b * K))
    ids = torch.arange(b * (1 + K)) + 100
    neg[1] = pos[2]  # a false negative of query 0 (same content as query 2's positive)
    ids[b + 1] = ids[2]
    return q.to(dtype), pos.to(dtype), neg.to(dtype), ids


def reference(q, pos, neg, ids, dims, weights, hn, sym, masked, tau):
    """sum_d w_d * InfoNCE(normalize(x[:, :d])) plus the full-dimension term (fp32 oracle)."""
    full = q.shape[1]
    terms = matryoshka_terms(dims, weights, full)
    total = torch.zeros(())
    for d, w in terms:
        cut = (lambda x: x.float()) if d is None else (lambda x, d=d: F.normalize(x.float()[:, :d], dim=-1))
        total = total + w * oracle(cut(q), cut(pos), cut(neg), ids, hn, sym, masked, tau=tau)
    return total


CASES = [
    # (B, D, dims, weights, hard negatives, symmetric, masked)
    (7, 37, [5, 19], [0.5, 2.0], "shared", True, True),
    (5, 29, [3, 11, 29], None, "own", False, True),  # the full dimension listed: one term, weight 1
    (6, 23, [17], [0.25], "own", True, False),
    (9, 31, [1, 8], [1.0, 0.3], "shared", False, False),
]
TOL = {torch.float32: (1e-5, 2e-4), torch.float16: (3e-3, 2e-2)}


def check(impl: str, dtype: torch.dtype, case) -> None:
    b, d, dims, weights, hn, sym, masked = case
    q, pos, neg, ids = batch(b, d, dtype, seed=b * d)
    leaves = [t.clone().requires_grad_(True) for t in (q, pos, neg)]
    fn = ContrastiveLoss(
        temperature=TAU,
        learnable_temperature=True,
        symmetric=sym,
        hard_negatives=hn,
        impl=impl,  # type: ignore[arg-type]
        mask_duplicates=masked,
        matryoshka_dims=dims,
        matryoshka_weights=weights,
    )
    got, stats = fn(leaves[0], torch.cat(leaves[1:]), K, ids)
    got.backward()
    ref = [t.float().clone().requires_grad_(True) for t in (q, pos, neg)]
    log_t = torch.tensor(TAU).log().requires_grad_(True)
    want = reference(*ref, ids, dims, weights, hn, sym, masked, log_t.exp())
    want.backward()
    loss_tol, grad_tol = TOL[dtype]
    torch.testing.assert_close(got.float(), want.detach(), rtol=loss_tol, atol=loss_tol)
    torch.testing.assert_close(stats["loss"], want.detach(), rtol=loss_tol, atol=loss_tol)
    for a, w in zip(leaves, ref, strict=True):
        assert a.grad is not None and w.grad is not None
        scale = w.grad.abs().max().item()
        torch.testing.assert_close(a.grad.float(), w.grad, rtol=grad_tol, atol=grad_tol * scale)
    assert fn.log_temperature.grad is not None and log_t.grad is not None
    torch.testing.assert_close(
        fn.log_temperature.grad, log_t.grad.reshape(1), rtol=grad_tol, atol=grad_tol * abs(log_t.grad.item())
    )
    n_terms = len(matryoshka_terms(dims, weights, d))
    assert sorted(k for k in stats if k.startswith("loss_dim")) == sorted(
        f"loss_dim{x if x is not None else d}" for x, _ in matryoshka_terms(dims, weights, d)
    )
    assert n_terms == len([k for k in stats if k.startswith("loss_dim")])


@pytest.mark.parametrize("impl", ["reference", "chunked"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}-{c[4]}")
def test_matches_sum_of_per_dimension_losses_fp32(impl, case):
    check(impl, torch.float32, case)


@pytest.mark.parametrize("case", CASES[:2], ids=lambda c: f"{c[0]}x{c[1]}-{c[4]}")
def test_matches_sum_of_per_dimension_losses_fp16_chunked(case):
    check("chunked", torch.float16, case)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_matches_sum_of_per_dimension_losses_triton(dtype):
    """The fused kernels (Triton's interpreter on the CPU) under the same reference."""
    from mme5.kernels import config

    if not (torch.cuda.is_available() or config.INTERPRETER):
        pytest.skip("triton was imported before TRITON_INTERPRET was set")
    check("triton", dtype, CASES[0])


def test_per_dimension_stats_are_the_unweighted_terms():
    q, pos, neg, ids = batch(5, 21, torch.float32)
    fn = ContrastiveLoss(temperature=TAU, matryoshka_dims=[4, 9], matryoshka_weights=[3.0, 0.5])
    loss, stats = fn(q, torch.cat([pos, neg]), K, ids)
    plain = ContrastiveLoss(temperature=TAU)
    for d in (4, 9):
        cut = [F.normalize(t[:, :d], dim=-1) for t in (q, pos, neg)]
        want, _ = plain(cut[0], torch.cat(cut[1:]), K, ids)
        torch.testing.assert_close(stats[f"loss_dim{d}"], want)
    want_full, full_stats = plain(q, torch.cat([pos, neg]), K, ids)
    torch.testing.assert_close(stats["loss_dim21"], want_full)
    torch.testing.assert_close(stats["accuracy"], full_stats["accuracy"])  # accuracy at the full dimension
    torch.testing.assert_close(loss, want_full + 3.0 * stats["loss_dim4"] + 0.5 * stats["loss_dim9"])


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="matryoshka_weights has 1 entries for 2"):
        ContrastiveLoss(matryoshka_dims=[4, 8], matryoshka_weights=[1.0])
    with pytest.raises(ConfigError, match=r"needs loss\.matryoshka_dims"):
        ContrastiveLoss(matryoshka_weights=[1.0])
    with pytest.raises(ConfigError, match="positive integers"):
        ContrastiveLoss(matryoshka_dims=[0, 8])
    with pytest.raises(ConfigError, match="repeated"):
        ContrastiveLoss(matryoshka_dims=[8, 8])
    with pytest.raises(ConfigError, match=">= 0"):
        ContrastiveLoss(matryoshka_dims=[8], matryoshka_weights=[-1.0])
    q, pos, neg, ids = batch(3, 10, torch.float32)
    with pytest.raises(ConfigError, match="16, larger than the embedding dimension 10"):
        ContrastiveLoss(matryoshka_dims=[4, 16])(q, torch.cat([pos, neg]), K, ids)


@pytest.fixture(scope="module")
def lora_encoder() -> Encoder:
    torch.manual_seed(0)
    enc = Encoder(
        "tiny-mllama", max_length=32, lora=LoraSettings(rank=4, alpha=8, dropout=0.3, init="gaussian")
    )
    return enc.train()


@pytest.mark.parametrize("chunk,hard_negatives", [(2, "own"), (3, "shared")])
def test_grad_cache_equals_full_graph(lora_encoder, chunk, hard_negatives):
    """GradCache caches d(Matryoshka loss)/d(representations): the same gradients as the whole graph."""
    enc = lora_encoder
    b = Collator("tiny-mllama", max_length=32)(make_examples(5, negatives=2))
    loss = ContrastiveLoss(
        hard_negatives=hard_negatives,
        symmetric=True,
        learnable_temperature=True,
        matryoshka_dims=[7, 33],
        matryoshka_weights=[0.5, 1.5],
    )
    qs = split_rows(b["query"], chunk, enc.select_rows)
    cs = split_rows(b["candidates"], chunk, enc.select_rows)

    def loss_fn(q, c):
        return loss(q, c, b["num_negatives"], b["candidate_ids"])

    def grads() -> dict[str, torch.Tensor]:
        return {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}

    torch.manual_seed(5)
    want, _ = chunked_reference_step(enc, loss_fn, qs, cs)
    enc.zero_grad(set_to_none=True)
    loss.zero_grad(set_to_none=True)
    want.backward()
    ref, ref_t = grads(), loss.log_temperature.grad.clone()  # type: ignore[union-attr]
    enc.zero_grad(set_to_none=True)
    loss.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    step = grad_cache_step(enc, loss_fn, qs, cs, loss_params=[loss.log_temperature])
    got = grads()
    enc.zero_grad(set_to_none=True)
    torch.testing.assert_close(step.loss, want.detach(), rtol=1e-5, atol=1e-6)
    assert got.keys() == ref.keys() and ref
    for name, w in ref.items():
        assert (got[name] - w).norm() <= 1e-5 * w.norm() + 1e-9, name
    torch.testing.assert_close(loss.log_temperature.grad, ref_t, rtol=1e-4, atol=1e-6)
    assert {"loss_dim7", "loss_dim33", "loss_dim64"} <= set(step.stats)


def test_module_trains_with_matryoshka_settings_and_grad_cache():
    """``model.loss.matryoshka_dims`` reaches the loss through the module (the config plumbing)."""
    torch.manual_seed(0)
    module = EmbeddingModule(
        encoder=EncoderSettings(model="tiny-mllama", max_length=32, lora=LoraSettings(rank=4, alpha=8)),
        loss=LossSettings(hard_negatives="own", matryoshka_dims=[16, 32], matryoshka_weights=[1.0, 0.5]),
        schedule=ScheduleSettings(warmup=0),
        grad_cache_chunk=3,
    )
    assert module.loss.matryoshka_dims == [16, 32]
    assert module.hparams["loss"]["matryoshka_dims"] == [16, 32]  # type: ignore[index]
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader("tiny-mllama", make_examples(4, negatives=1), batch_size=4))
    assert trainer.global_step == 1
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert {"train/loss_dim16", "train/loss_dim32", "train/loss_dim64"} <= set(trainer.callback_metrics)
