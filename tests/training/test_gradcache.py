"""GradCache gives the gradients of an ordinary step: chunks of 1, 3, B and the whole batch, dropout on."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mme5.data.collate import Collator
from mme5.model.encoder import Encoder, LoraSettings
from mme5.training.gradcache import RngState, chunked_reference_step, grad_cache_step, split_rows
from mme5.training.losses import ContrastiveLoss, LossSettings
from mme5.training.module import EmbeddingModule, EncoderSettings, OptimizerSettings, ScheduleSettings
from tests.training.test_module import loader, make_examples

B, K = 5, 2


@pytest.fixture(scope="module")
def lora_encoder() -> Encoder:
    torch.manual_seed(0)
    enc = Encoder(
        "tiny-mllama", max_length=32, lora=LoraSettings(rank=4, alpha=8, dropout=0.3, init="gaussian")
    )
    return enc.train()


@pytest.fixture(scope="module")
def batch():
    return Collator("tiny-mllama", max_length=32)(make_examples(B, negatives=K))


def grads_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def assert_grads_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], tol: float) -> None:
    """Per tensor: ||got - want|| <= tol * ||want|| (fp32 summation order differs between the paths)."""
    assert got.keys() == want.keys() and want
    for name, w in want.items():
        err = (got[name] - w).float().norm()
        assert err <= tol * w.float().norm() + 1e-9, (name, float(err), float(w.norm()))


@pytest.mark.parametrize(
    "family", ["tiny-mllama", "tiny-llava", "tiny-llava-next", "tiny-qwen2-vl", "tiny-qwen3-vl"]
)
def test_split_rows_matches_whole_batch(family):
    """Chunked encoding equals whole-batch encoding, also where only the images present are stacked."""
    enc = Encoder(family, max_length=32).eval()
    inputs = Collator(family, max_length=32)(make_examples(6, negatives=1))["candidates"]
    whole = enc(inputs)
    for chunk in (1, 4, 5):
        parts = split_rows(inputs, chunk, enc.select_rows)
        assert len(parts) == -(-whole.shape[0] // chunk)
        torch.testing.assert_close(torch.cat([enc(p) for p in parts]), whole, rtol=1e-4, atol=1e-5)


def test_split_rows_refuses_a_chunk_below_one():
    with pytest.raises(ValueError, match="grad_cache_chunk"):
        split_rows({"input_ids": torch.zeros(4, 3, dtype=torch.long)}, 0, lambda inputs, rows: inputs)


def test_rng_replay_reproduces_dropout():
    state = RngState()
    a = torch.nn.functional.dropout(torch.ones(100), 0.5)
    with state.replay():
        b = torch.nn.functional.dropout(torch.ones(100), 0.5)
    c = torch.nn.functional.dropout(torch.ones(100), 0.5)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "chunk,hard_negatives,symmetric,keep_last",
    [
        (1, "own", True, True),
        (3, "own", True, True),
        (B, "own", True, True),
        (B * (1 + K), "own", True, True),
        (3, "shared", False, True),
        (3, "own", True, False),
    ],
    ids=["1-own-sym", "3-own-sym", "B-own-sym", "all-own-sym", "3-shared", "3-own-sym-replay-last"],
)
def test_grad_cache_equals_full_graph_with_dropout(
    lora_encoder, batch, chunk, hard_negatives, symmetric, keep_last
):
    enc = lora_encoder
    loss = ContrastiveLoss(hard_negatives=hard_negatives, symmetric=symmetric, learnable_temperature=True)
    qs = split_rows(batch["query"], chunk, enc.select_rows)
    cs = split_rows(batch["candidates"], chunk, enc.select_rows)

    def loss_fn(q, c):
        return loss(q, c, batch["num_negatives"], batch["candidate_ids"])

    torch.manual_seed(123)
    want, _ = chunked_reference_step(enc, loss_fn, qs, cs)
    enc.zero_grad(set_to_none=True)
    loss.zero_grad(set_to_none=True)
    want.backward()
    ref, ref_t = grads_of(enc), loss.log_temperature.grad.clone()
    enc.zero_grad(set_to_none=True)
    loss.zero_grad(set_to_none=True)

    torch.manual_seed(123)
    step = grad_cache_step(enc, loss_fn, qs, cs, loss_params=[loss.log_temperature], keep_last=keep_last)
    got = grads_of(enc)
    enc.zero_grad(set_to_none=True)
    torch.testing.assert_close(step.loss, want.detach(), rtol=1e-5, atol=1e-6)
    assert_grads_close(got, ref, 1e-5)
    torch.testing.assert_close(loss.log_temperature.grad, ref_t, rtol=1e-4, atol=1e-6)

    # the dropout masks matter: another seed for the second pass gives other gradients
    if chunk == 3 and keep_last and hard_negatives == "own":
        torch.manual_seed(7)
        other, _ = chunked_reference_step(enc, loss_fn, qs, cs)
        other.backward()
        differs = any(
            not torch.allclose(p.grad, ref[n], rtol=1e-3, atol=1e-6)
            for n, p in enc.named_parameters()
            if p.grad is not None
        )
        enc.zero_grad(set_to_none=True)
        assert differs


class GradRecorder(L.Callback):
    """Keeps the gradients the optimiser is about to use (after accumulation, before clipping)."""

    def __init__(self):
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads.append(grads_of(pl_module))


def fit_grads(
    chunk: int | None, precision: str, dropout: float, accelerator: str = "cpu"
) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    module = EmbeddingModule(
        encoder=EncoderSettings(
            model="tiny-mllama",
            max_length=32,
            lora=LoraSettings(rank=4, alpha=8, dropout=dropout, init="gaussian"),
        ),
        loss=LossSettings(hard_negatives="own", learnable_temperature=True),
        schedule=ScheduleSettings(warmup=0),
        grad_cache_chunk=chunk,
    )
    rec = GradRecorder()
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=1,
        accumulate_grad_batches=2,
        gradient_clip_val=0.5,
        precision=precision,
        callbacks=[rec],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    torch.manual_seed(1)
    trainer.fit(module, loader("tiny-mllama", make_examples(8, negatives=1), batch_size=4))
    assert len(rec.grads) == 1
    return rec.grads


@pytest.mark.parametrize("precision,tol", [("32-true", 1e-5), ("bf16-mixed", 1e-2)])
def test_module_grad_cache_matches_plain_step_with_accumulation(precision, tol):
    """Through the Trainer: 2 accumulated batches, clipping, (bf16) autocast; chunk 3 vs no GradCache.

    Dropout is off here because the plain step encodes all rows in one forward (other dropout masks
    than 3-row chunks); the dropout case is covered above against the same micro-batching. Under
    bf16 autocast the chunked GEMMs round differently, so the bound is on the relative error norm.
    """
    want = fit_grads(None, precision, dropout=0.0)[0]
    got = fit_grads(3, precision, dropout=0.0)[0]
    assert_grads_close(got, want, tol)


def test_module_grad_cache_whole_batch_chunk_matches_plain_step_with_dropout():
    """With one chunk per side, the GradCache step draws the plain step's dropout masks exactly."""
    want = fit_grads(None, "32-true", dropout=0.3)[0]
    got = fit_grads(8, "32-true", dropout=0.3)[0]
    assert_grads_close(got, want, 1e-5)


def test_grad_cache_step_runs_every_backward_through_the_callers(lora_encoder, batch):
    """Every chunk's gradient goes through ``backward``, as a training loop's loss scaling and division
    by the accumulated batches do: scaling each backward by 1/4 gives a quarter of the gradients."""
    enc = lora_encoder
    loss = ContrastiveLoss(hard_negatives="own", symmetric=True, learnable_temperature=True)
    qs = split_rows(batch["query"], 3, enc.select_rows)
    cs = split_rows(batch["candidates"], 3, enc.select_rows)

    def loss_fn(q, c):
        return loss(q, c, batch["num_negatives"], batch["candidate_ids"])

    runs = []
    for backward in (None, lambda t: (t * 0.25).backward()):
        torch.manual_seed(5)
        grad_cache_step(
            enc,
            loss_fn,
            qs,
            cs,
            loss_params=[loss.log_temperature],
            **({} if backward is None else {"backward": backward}),
        )
        runs.append((grads_of(enc), loss.log_temperature.grad.clone()))
        enc.zero_grad(set_to_none=True)
        loss.zero_grad(set_to_none=True)
    (full, full_t), (quarter, quarter_t) = runs
    assert_grads_close(quarter, {n: g * 0.25 for n, g in full.items()}, 1e-6)
    torch.testing.assert_close(quarter_t, full_t * 0.25)


def lr_module(chunk: int | None) -> EmbeddingModule:
    """Adam with eps 1: the update then depends on the gradient's scale, so that clipping shows."""
    torch.manual_seed(0)
    return EmbeddingModule(
        encoder=EncoderSettings(
            model="tiny-mllama",
            max_length=32,
            lora=LoraSettings(rank=4, alpha=8, dropout=0.0, init="gaussian"),
        ),
        loss=LossSettings(hard_negatives="own", learnable_temperature=True),
        optimizer=OptimizerSettings(lr=1e-1, eps=1.0),
        schedule=ScheduleSettings(warmup=2),
        grad_cache_chunk=chunk,
    )


def windows_trainer(**kw) -> L.Trainer:
    """Two accumulated batches per optimiser step."""
    base = {
        "accelerator": "cpu",
        "devices": 1,
        "accumulate_grad_batches": 2,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**base, **kw})


def trainable(module: EmbeddingModule) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def test_module_grad_cache_clips_accumulates_and_schedules_as_the_automatic_loop():
    """Three optimiser steps of two accumulated batches (across an epoch end), clipping from the trainer:
    GradCache (manual optimisation) ends with the parameters, step count, schedule and logged metrics
    of the plain automatic loop, and the clipping binds (without it the parameters differ)."""
    runs = {}
    for chunk, clip in ((None, 1e-3), (3, 1e-3), (3, None)):
        module = lr_module(chunk)
        trainer = windows_trainer(max_steps=3, gradient_clip_val=clip, log_every_n_steps=1)
        trainer.fit(module, loader("tiny-mllama", make_examples(8, negatives=1), batch_size=2))
        assert trainer.global_step == 3
        assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 3
        assert {"train/loss", "train/grad_norm"} <= trainer.logged_metrics.keys()
        runs[chunk, clip] = (trainable(module), trainer.optimizers[0].param_groups[0]["lr"])
    (want, want_lr), (got, got_lr), (unclipped, _) = runs[None, 1e-3], runs[3, 1e-3], runs[3, None]
    assert got_lr == want_lr
    for name, w in want.items():
        torch.testing.assert_close(got[name], w, rtol=0, atol=1e-6, msg=name)
    assert any(not torch.allclose(unclipped[n], w, rtol=0, atol=1e-4) for n, w in want.items())


def test_module_grad_cache_resumes_exactly(tmp_path):
    """A GradCache fit resumed from its checkpoint at the end of epoch 0 (after 2 of 4 optimiser steps)
    ends as the uninterrupted fit: same parameters, optimiser state, schedule and step count."""
    data = loader("tiny-mllama", make_examples(8, negatives=1), batch_size=2)  # 2 optimiser steps an epoch
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    straight = lr_module(3)
    t = windows_trainer(max_steps=4, gradient_clip_val=1e-3, callbacks=[ckpt], enable_checkpointing=True)
    t.fit(straight, data)
    resumed = lr_module(3)
    again = windows_trainer(max_steps=4, gradient_clip_val=1e-3)
    again.fit(resumed, data, ckpt_path=tmp_path / "epoch=0-step=2.ckpt")
    assert again.global_step == t.global_step == 4
    assert again.lr_scheduler_configs[0].scheduler.last_epoch == 4
    want = trainable(straight)
    got = trainable(resumed)
    assert want.keys() == got.keys()
    for name, w in want.items():
        torch.testing.assert_close(got[name], w, rtol=0, atol=1e-6, msg=name)
    steps = [s["step"] for s in again.optimizers[0].state_dict()["state"].values()]
    assert steps and all(float(s) == 4 for s in steps)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_module_grad_cache_matches_plain_step_with_fp16_loss_scaling():
    """fp16 autocast with the gradient scaler (CUDA only): each GradCache backward is scaled and the
    optimiser step unscales, so the gradients the optimiser sees are the plain step's."""
    want = fit_grads(None, "16-mixed", dropout=0.0, accelerator="cuda")[0]
    got = fit_grads(3, "16-mixed", dropout=0.0, accelerator="cuda")[0]
    assert_grads_close(got, want, 1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-4), ("bfloat16", 1e-2)])
def test_grad_cache_on_cuda_replays_cuda_dropout(dtype, tol):
    """CUDA dropout masks come from the device generator: RngState must replay it (loss impl auto)."""
    torch.manual_seed(0)
    enc = (
        Encoder(
            "tiny-mllama",
            max_length=32,
            dtype=dtype,
            lora=LoraSettings(rank=4, alpha=8, dropout=0.3, init="gaussian"),
        )
        .cuda()
        .train()
    )
    loss = ContrastiveLoss(hard_negatives="own", symmetric=True, learnable_temperature=True).cuda()
    batch = Collator("tiny-mllama", max_length=32)(make_examples(B, negatives=K))
    ids = batch["candidate_ids"].cuda()

    def loss_fn(q, c):
        return loss(q, c, batch["num_negatives"], ids)

    for chunk in (1, 3, B):
        qs, cs = (
            split_rows(batch["query"], chunk, enc.select_rows),
            split_rows(batch["candidates"], chunk, enc.select_rows),
        )
        torch.cuda.manual_seed(5)
        want, _ = chunked_reference_step(enc, loss_fn, qs, cs)
        want.backward()
        ref = grads_of(enc)
        enc.zero_grad(set_to_none=True)
        torch.cuda.manual_seed(5)
        grad_cache_step(
            enc,
            loss_fn,
            qs,
            cs,
            loss_params=[loss.log_temperature],
            device=torch.device("cuda", torch.cuda.current_device()),
        )
        got = grads_of(enc)
        enc.zero_grad(set_to_none=True)
        assert_grads_close(got, ref, tol)
