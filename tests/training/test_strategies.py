"""What each strategy gets from mme5.training.strategies (the sharded runs themselves are in
test_ddp_equivalence.py and tests/cli/test_fsdp2.py; Lightning's FSDP and DeepSpeed need CUDA to run)."""

import importlib.util
from types import SimpleNamespace

import pytest
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy, StrategyRegistry

from mme5.errors import ConfigError
from mme5.training.module import EmbeddingModule, EncoderSettings
from mme5.training.strategies import BlockwiseFSDPStrategy, FSDP2Strategy, check_grad_cache_support


def _configured(strategy) -> EmbeddingModule:
    module = EmbeddingModule(encoder=EncoderSettings(model="tiny-llava", max_length=16))
    module._trainer = SimpleNamespace(strategy=strategy)
    module.configure_model()
    return module


def test_fsdp_gets_lockstep_and_one_unit_per_transformer_block():
    strategy = StrategyRegistry.get("fsdp")
    assert type(strategy) is BlockwiseFSDPStrategy
    module = _configured(strategy)
    assert module.encoder.lockstep
    assert "auto_wrap_policy" not in strategy.kwargs  # the module leaves the strategy's settings alone
    policy = strategy.wrap_policy(module)
    assert {cls.__name__ for cls in policy._module_classes} == {
        "CLIPEncoderLayer",
        "CLIPVisionEmbeddings",
        "LlamaDecoderLayer",
    }
    units = module.encoder.sharding_units()
    assert units and all(type(u) in policy._module_classes for u in units)


def test_fsdp_cpu_offload_keeps_its_offload_and_gets_the_block_policy():
    strategy = StrategyRegistry.get("fsdp_cpu_offload")
    assert type(strategy) is BlockwiseFSDPStrategy and strategy.cpu_offload.offload_params


def test_a_policy_given_by_the_user_is_kept():
    strategy = BlockwiseFSDPStrategy(auto_wrap_policy={dict})
    module = _configured(strategy)
    assert strategy.wrap_policy(module)._module_classes == {dict}


def test_ddp_runs_the_encoder_as_is():
    assert not _configured(DDPStrategy()).encoder.lockstep


@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="deepspeed (an optional extra) is not installed"
)
def test_zero3_gets_lockstep_and_zero2_does_not():
    assert not _configured(DeepSpeedStrategy(stage=2)).encoder.lockstep
    assert _configured(DeepSpeedStrategy(stage=3)).encoder.lockstep


def test_grad_cache_refuses_strategies_that_own_the_backward():
    check_grad_cache_support(DDPStrategy())
    check_grad_cache_support(FSDP2Strategy())
    with pytest.raises(ConfigError, match=r"grad_cache_chunk.*FSDPStrategy"):
        check_grad_cache_support(FSDPStrategy())


def test_fsdp2_is_a_registered_strategy_name():
    assert StrategyRegistry["fsdp2"]["strategy"] is FSDP2Strategy
    assert StrategyRegistry["fsdp2"]["init_params"] == {}
    assert FSDP2Strategy()._save_distributed_checkpoint is False
