"""InfoNCEConfig and its parts: checked values, defaults filled from where the kernels run, overrides."""

from __future__ import annotations

import pytest
import torch

from mme5.errors import ConfigError
from mme5.kernels import InfoNCEConfig, OnePassConfig, TileConfig, default_config, infonce
from mme5.kernels import config as kernel_config


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: TileConfig(block_m=48), "TileConfig.block_m: expected a power of two >= 16, got 48"),
        (lambda: TileConfig(block_k=8), "TileConfig.block_k: expected a power of two >= 16, got 8"),
        (lambda: TileConfig(num_stages=0), "TileConfig.num_stages: expected an integer >= 1, got 0"),
        (lambda: TileConfig(forward_programs=-1), "TileConfig.forward_programs: expected an integer >= 0"),
        (lambda: OnePassConfig(block_n=1000), "OnePassConfig.block_n: expected a power of two, got 1000"),
        (
            lambda: OnePassConfig(chunk_fraction=0),
            "OnePassConfig.chunk_fraction: expected a number > 0, got 0",
        ),
        (lambda: OnePassConfig(min_chunk_rows=0), "OnePassConfig.min_chunk_rows: expected an integer >= 1"),
        (lambda: InfoNCEConfig(chunk_rows=0), "InfoNCEConfig.chunk_rows: expected an integer >= 1 or None"),
        (lambda: InfoNCEConfig(tiles={"block_m": 64}), "InfoNCEConfig.tiles: expected a TileConfig or None"),
    ],
)
def test_bad_values_are_one_config_error_naming_the_field(build, message):
    with pytest.raises(ConfigError) as err:
        build()
    assert message in str(err.value)


def test_defaults_follow_where_the_kernels_run():
    want_tiles, want_onepass = (
        (kernel_config.INTERPRETER_TILES, kernel_config.INTERPRETER_ONEPASS)
        if kernel_config.INTERPRETER
        else (kernel_config.GPU_TILES, kernel_config.GPU_ONEPASS)
    )
    assert default_config() == InfoNCEConfig(tiles=want_tiles, onepass=want_onepass)
    assert kernel_config.resolve_config(None) is default_config()
    mine = OnePassConfig(block_m=2)
    resolved = kernel_config.resolve_config(InfoNCEConfig(one_pass=False, chunk_rows=7, onepass=mine))
    assert resolved == InfoNCEConfig(one_pass=False, chunk_rows=7, tiles=want_tiles, onepass=mine)


def test_overrides_replace_fields_and_name_unknown_ones():
    got = kernel_config.with_overrides(
        kernel_config.GPU_ONEPASS, {"block_m": 8, "fp32_scores": True}, "--onepass"
    )
    assert got == OnePassConfig(block_m=8, fp32_scores=True)
    with pytest.raises(ConfigError, match=r"--onepass: unknown field\(s\) block_q; expected some of block_m"):
        kernel_config.with_overrides(kernel_config.GPU_ONEPASS, {"block_q": 2}, "--onepass")
    with pytest.raises(ConfigError, match=r"OnePassConfig\.block_m: expected a power of two"):
        kernel_config.with_overrides(kernel_config.GPU_ONEPASS, {"block_m": 3}, "--onepass")


def test_infonce_rejects_a_config_of_another_type():
    with pytest.raises(ConfigError, match="config must be an InfoNCEConfig or None, got dict"):
        infonce(
            torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0, 1]), impl="chunked", config={"one_pass": 1}
        )
