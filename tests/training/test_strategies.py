"""What EmbeddingModule.configure_model does for each strategy (the sharded runs themselves are in
test_ddp_equivalence.py and test_cli_fsdp2.py; Lightning's FSDP and DeepSpeed need CUDA to run)."""

import importlib.util
from types import SimpleNamespace

import pytest
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy

from mme5.training.module import EmbeddingModule, EncoderSettings
from mme5.training.strategies import FSDP2Strategy


def _configured(strategy) -> EmbeddingModule:
    module = EmbeddingModule(encoder=EncoderSettings(model="tiny-llava", max_length=16))
    module._trainer = SimpleNamespace(strategy=strategy)
    module.configure_model()
    return module


def test_fsdp_gets_lockstep_and_one_unit_per_transformer_block():
    strategy = FSDPStrategy()
    module = _configured(strategy)
    assert module.encoder.lockstep
    policy = strategy.kwargs["auto_wrap_policy"]
    assert {cls.__name__ for cls in policy._module_classes} == {"CLIPEncoderLayer", "CLIPVisionEmbeddings",
                                                                "LlamaDecoderLayer"}
    units = module.encoder.sharding_units()
    assert units and all(type(u) in policy._module_classes for u in units)


def test_a_policy_given_by_the_user_is_kept():
    strategy = FSDPStrategy(auto_wrap_policy={dict})
    _configured(strategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {dict}


def test_ddp_runs_the_encoder_as_is():
    assert not _configured(DDPStrategy()).encoder.lockstep


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed (an optional extra) is not installed")
def test_zero3_gets_lockstep_and_zero2_does_not():
    assert not _configured(DeepSpeedStrategy(stage=2)).encoder.lockstep
    assert _configured(DeepSpeedStrategy(stage=3)).encoder.lockstep


def test_fsdp2_is_a_registered_strategy_name():
    from lightning.pytorch.strategies import StrategyRegistry

    assert StrategyRegistry["fsdp2"]["strategy"] is FSDP2Strategy
    assert StrategyRegistry["fsdp2"]["init_params"] == {}
    assert FSDP2Strategy()._save_distributed_checkpoint is False
