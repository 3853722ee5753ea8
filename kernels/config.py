"""Configuration of the fast InfoNCE paths, passed explicitly (no module-level overrides).

``infonce(..., config=InfoNCEConfig(...))`` hands one configuration to the chosen backend; its autograd
Function keeps it on ``ctx`` so that backward runs with exactly what forward ran with. Fields left at
``None`` take the defaults of where the kernels run (``default_config``): the GPU's, or small tiles
under the Triton interpreter. This module imports no Triton, so ``TRITON_INTERPRET`` is read here once.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from mme5.errors import ConfigError

INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
"""Whether Triton runs its CPU interpreter (``TRITON_INTERPRET`` set before triton is imported)."""


def _require(condition: bool, owner: str, field: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{owner}.{field}: expected {expected}, got {value!r}")


def _power_of_two(value: Any) -> bool:
    return isinstance(value, int) and value > 0 and value & (value - 1) == 0


@dataclass(frozen=True)
class TileConfig:
    """Tile sizes and launch settings of the fused forward and recompute-backward Triton kernels."""

    block_m: int = 128
    block_n: int = 128
    block_k: int = 64
    num_warps: int = 8
    num_stages: int = 3
    # Rows of dS per backward chunk: as many as fit in this many bytes, at least min_chunk_rows.
    chunk_bytes: int = 256 << 20
    min_chunk_rows: int = 2048
    # Forward programs when symmetric (each keeps a row of column partials); 0 = a few per SM.
    forward_programs: int = 0

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n", "block_k"):
            value = getattr(self, name)
            _require(_power_of_two(value) and value >= 16, "TileConfig", name, value, "a power of two >= 16")
        _require(_power_of_two(self.num_warps), "TileConfig", "num_warps", self.num_warps, "a power of two")
        for name in ("num_stages", "chunk_bytes", "min_chunk_rows"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1, "TileConfig", name, value, "an integer >= 1")
        _require(
            isinstance(self.forward_programs, int) and self.forward_programs >= 0,
            "TileConfig",
            "forward_programs",
            self.forward_programs,
            "an integer >= 0 (0: a few per SM)",
        )


@dataclass(frozen=True)
class OnePassConfig:
    """Launch settings of the one-pass row kernel and the chunking of the one-pass path.

    Rows per chunk: as many as keep the chunk's buffers (scores, and dS when separate) within
    ``chunk_fraction`` of what eager would allocate (B * N * EAGER_BYTES_PER_SCORE) and within
    ``max_chunk_bytes``; at least ``min_chunk_rows`` (so the products stay compute-bound); at most
    half of B (so no buffer is ever B x N); rounded down to a multiple of 128 from 256 rows up
    before that cap.
    """

    block_m: int = 4  # rows per program of the row kernel
    block_n: int = 1024  # columns per step of the row kernel
    num_warps: int = 8
    chunk_fraction: float = 0.01
    min_chunk_rows: int = 1024
    max_chunk_bytes: int = 4 << 30
    # Scores in fp32 (a separate input-dtype dS buffer: 4 + 2 bytes per score for bf16) instead of the
    # input dtype with dS written in place (2 bytes per score).
    fp32_scores: bool = False
    # Accumulate grad_c over the chunks in an fp32 master (N * D * 4 bytes more) instead of in the
    # input dtype (one rounding per chunk: about 2.3x eager's grad_c error at 16 chunks in bf16, growing
    # as the square root of the chunk count; docs/kernels.md).
    fp32_grad_accumulator: bool = False

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n", "num_warps"):
            value = getattr(self, name)
            _require(_power_of_two(value), "OnePassConfig", name, value, "a power of two")
        _require(
            isinstance(self.chunk_fraction, (int, float)) and self.chunk_fraction > 0,
            "OnePassConfig",
            "chunk_fraction",
            self.chunk_fraction,
            "a number > 0",
        )
        for name in ("min_chunk_rows", "max_chunk_bytes"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1, "OnePassConfig", name, value, "an integer >= 1")


@dataclass(frozen=True)
class InfoNCEConfig:
    """How the fast paths run; ``None`` fields take ``default_config()``'s values.

    Attributes:
        one_pass: form the gradients in the forward pass where that applies (the row-direction loss
            with a gradient wanted: 3 products instead of 4); False keeps the recompute path always.
        chunk_rows: rows per chunk of ``impl="chunked"``; None sizes chunks from an element budget.
        tiles: the Triton recompute kernels' tiles (symmetric loss, no-grad calls, ``one_pass=False``).
        onepass: the Triton one-pass path's row kernel and chunking.
    """

    one_pass: bool = True
    chunk_rows: int | None = None
    tiles: TileConfig | None = None
    onepass: OnePassConfig | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.one_pass, bool), "InfoNCEConfig", "one_pass", self.one_pass, "true or false")
        _require(
            self.chunk_rows is None or (isinstance(self.chunk_rows, int) and self.chunk_rows >= 1),
            "InfoNCEConfig",
            "chunk_rows",
            self.chunk_rows,
            "an integer >= 1 or None",
        )
        _require(
            self.tiles is None or isinstance(self.tiles, TileConfig),
            "InfoNCEConfig",
            "tiles",
            self.tiles,
            "a TileConfig or None",
        )
        _require(
            self.onepass is None or isinstance(self.onepass, OnePassConfig),
            "InfoNCEConfig",
            "onepass",
            self.onepass,
            "an OnePassConfig or None",
        )


GPU_TILES = TileConfig()
INTERPRETER_TILES = TileConfig(
    block_m=64, block_n=64, block_k=64, num_warps=4, num_stages=1, min_chunk_rows=64
)
GPU_ONEPASS = OnePassConfig()
INTERPRETER_ONEPASS = OnePassConfig(block_m=8, block_n=64, num_warps=4, min_chunk_rows=16)
_DEFAULT = (
    InfoNCEConfig(tiles=INTERPRETER_TILES, onepass=INTERPRETER_ONEPASS)
    if INTERPRETER
    else InfoNCEConfig(tiles=GPU_TILES, onepass=GPU_ONEPASS)
)


def default_config() -> InfoNCEConfig:
    """The defaults of where the kernels run: small tiles under the Triton interpreter, else the GPU's."""
    return _DEFAULT


def resolve_config(config: InfoNCEConfig | None) -> InfoNCEConfig:
    """``config`` with its ``None`` tiles and one-pass settings filled in from ``default_config()``."""
    if config is None:
        return _DEFAULT
    if not isinstance(config, InfoNCEConfig):
        raise ConfigError(f"infonce: config must be an InfoNCEConfig or None, got {type(config).__name__}")
    return dataclasses.replace(
        config, tiles=config.tiles or _DEFAULT.tiles, onepass=config.onepass or _DEFAULT.onepass
    )


Config = TypeVar("Config", TileConfig, OnePassConfig, InfoNCEConfig)


def with_overrides(base: Config, overrides: Mapping[str, Any], what: str) -> Config:
    """``base`` with the fields named in ``overrides`` replaced (e.g. a benchmark's ``--onepass``);
    an unknown field is a ConfigError naming ``what`` and the fields there are."""
    fields = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(
            f"{what}: unknown field(s) {', '.join(unknown)}; expected some of {', '.join(sorted(fields))}"
        )
    return dataclasses.replace(base, **dict(overrides))
