"""ContrastiveLoss in one process: the definition, the kernel contract, accuracy, masking and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mme5.errors import ConfigError
from mme5.training.losses import ContrastiveLoss, LossSettings
from tests.training.test_distributed_loss import CASES, TAU, K, global_batch, oracle


def test_single_process_matches_oracle_and_kernel_symmetric():
    """Without a process group the module is the kernel's own contract on the global batch."""
    from mme5.kernels import infonce

    sizes = [5]
    q, pos, neg, ids = global_batch(sizes)
    c = torch.cat([pos, neg])
    for hn, sym, masked in CASES:
        fn = ContrastiveLoss(
            temperature=TAU, symmetric=sym, hard_negatives=hn, impl="reference", mask_duplicates=masked
        )
        got, stats = fn(q, c, K, ids)
        torch.testing.assert_close(got, oracle(q, pos, neg, ids, hn, sym, masked), rtol=1e-5, atol=1e-5)
        if hn == "shared":
            direct = infonce(
                q,
                c,
                torch.arange(5),
                TAU,
                symmetric=sym,
                candidate_ids=ids if masked else None,
                impl="reference",
            )
            torch.testing.assert_close(got, direct, rtol=1e-5, atol=1e-5)
        assert 0.0 <= stats["accuracy"].item() <= 1.0


def test_accuracy_counts_top1_with_duplicates_masked():
    q, pos = torch.eye(4), torch.eye(4)
    neg = torch.zeros(4, 4)
    neg[0, 1] = 1.1  # scores above query 1's positive, but has the positive's content id: a false negative
    neg[1, 2] = 1.1  # scores above query 2's positive with another id: a real miss
    ids = torch.tensor([0, 1, 2, 3, 1, 99, 98, 97])
    _, stats = ContrastiveLoss(hard_negatives="shared")(q, torch.cat([pos, neg]), 1, ids)
    assert stats["accuracy"].item() == 0.75
    _, stats = ContrastiveLoss(hard_negatives="shared", mask_duplicates=False)(
        q, torch.cat([pos, neg]), 1, ids
    )
    assert stats["accuracy"].item() == 0.5
    _, stats = ContrastiveLoss(hard_negatives="own")(q, torch.cat([pos, neg]), 1, ids)
    assert stats["accuracy"].item() == 1.0  # own: those negatives belong to queries 0 and 1, not to 1 and 2


def test_bad_shapes_and_settings_name_the_problem():
    with pytest.raises(ValueError, match="candidates"):
        ContrastiveLoss()(torch.randn(3, 4), torch.randn(7, 4), num_negatives=2)
    with pytest.raises(ConfigError, match="hard_negatives"):
        ContrastiveLoss(hard_negatives="mine")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="temperature"):
        ContrastiveLoss(temperature=0.0)


@pytest.mark.parametrize("impl", ["reference", "chunked"])
@pytest.mark.parametrize("hard_negatives", ["shared", "own"])
def test_gradients_match_oracle_with_learnable_temperature(impl, hard_negatives):
    q, pos, neg, ids = global_batch([7])
    leaves = [t.clone().requires_grad_(True) for t in (q, pos, neg)]
    fn = ContrastiveLoss(
        temperature=TAU, learnable_temperature=True, symmetric=True, hard_negatives=hard_negatives, impl=impl
    )
    loss, _ = fn(leaves[0], torch.cat(leaves[1:]), K, ids)
    loss.backward()
    ref = [t.clone().requires_grad_(True) for t in (q, pos, neg)]
    log_t = torch.tensor(TAU).log().requires_grad_(True)
    oracle(*ref, ids, hard_negatives, True, True, tau=log_t.exp()).backward()
    for got, want in zip(leaves, ref, strict=False):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-6)
        assert torch.isfinite(got.grad).all()
    torch.testing.assert_close(fn.log_temperature.grad, log_t.grad.reshape(1), rtol=1e-4, atol=1e-6)


def test_no_hard_negatives_and_settings_round_trip():
    q = F.normalize(torch.randn(4, 8), dim=-1)
    c = F.normalize(torch.randn(4, 8), dim=-1)
    for hn in ("shared", "own"):
        loss, stats = ContrastiveLoss.from_settings(LossSettings(hard_negatives=hn))(q, c, 0, None)
        want = F.cross_entropy(q @ c.T / 0.02, torch.arange(4))
        torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)
        assert stats["candidates"].item() == 4


def test_temperature_is_fixed_unless_learnable():
    fixed = ContrastiveLoss(temperature=0.05)
    assert not list(fixed.parameters()) and fixed.temperature.item() == pytest.approx(0.05)
    learn = ContrastiveLoss(temperature=0.05, learnable_temperature=True)
    assert [n for n, _ in learn.named_parameters()] == ["log_temperature"]


def test_checkpoint_with_a_scalar_log_temperature_still_loads():
    learn = ContrastiveLoss(temperature=0.05, learnable_temperature=True)
    learn.load_state_dict({"log_temperature": torch.tensor(0.1).log()})
    assert learn.log_temperature.shape == (1,) and learn.temperature.item() == pytest.approx(0.1)
