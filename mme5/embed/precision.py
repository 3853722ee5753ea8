"""Matryoshka truncation and embedding quantization, defined as sentence-transformers defines them.

``quantize(x, precision, ranges)`` reproduces ``sentence_transformers.quantize_embeddings``:

* ``float32``: the floats;
* ``int8`` / ``uint8``: per dimension, ``ranges[0]`` (min) to ``ranges[1]`` (max) cut into 255 steps,
  ``floor((x - min) / step)`` clipped to [0, 255] (minus 128 for int8); a dimension whose range is
  empty uses step 1;
* ``ubinary``: ``np.packbits(x > 0)`` along the last axis (uint8, ``ceil(D / 8)`` bytes);
  ``binary`` the same minus 128 as int8.

The int8 ranges come from calibration embeddings (:func:`calibration_ranges`: per-dimension min and max),
as sentence-transformers computes them when given ``calibration_embeddings``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mme5.errors import ConfigError

Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
PRECISIONS: tuple[str, ...] = ("float32", "int8", "uint8", "binary", "ubinary")
DTYPES = {
    "float32": np.float32,
    "int8": np.int8,
    "uint8": np.uint8,
    "binary": np.int8,
    "ubinary": np.uint8,
}


def check_precision(precision: str) -> Precision:
    """``precision`` itself when known; otherwise a one-line ``ConfigError`` listing the choices."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return precision  # type: ignore[return-value]


def check_dim(dim: int | None, full: int) -> int:
    """The output dimension: ``dim`` (1 <= dim <= full) or ``full`` for None; ``ConfigError`` otherwise."""
    if dim is None:
        return full
    if dim < 1 or dim > full:
        raise ConfigError(f"--dim {dim} is not between 1 and the model's embedding dimension {full}")
    return int(dim)


def truncate(x: np.ndarray, dim: int | None) -> np.ndarray:
    """The first ``dim`` components of each row, L2-normalised again (float32; ``x`` for None)."""
    x = np.asarray(x, dtype=np.float32)
    if dim is None or dim == x.shape[-1]:
        return x
    cut = x[..., :dim]
    norm = np.linalg.norm(cut, axis=-1, keepdims=True)
    return (cut / np.maximum(norm, 1e-12)).astype(np.float32)


def calibration_ranges(x: np.ndarray) -> np.ndarray:
    """``[2, D]`` float32: per-dimension min and max of calibration embeddings ``x [n, D]`` (n >= 2)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ConfigError(
            f"int8 calibration needs at least 2 embeddings, got {x.shape[0] if x.ndim == 2 else 0}"
        )
    return np.vstack([x.min(axis=0), x.max(axis=0)]).astype(np.float32)


def quantize(x: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """Embeddings ``x [n, D]`` (float) at ``precision``; int8 / uint8 need ``ranges [2, D]``."""
    precision = check_precision(precision)
    x = np.asarray(x, dtype=np.float32)
    if precision == "float32":
        return x
    if precision in ("int8", "uint8"):
        if ranges is None:
            raise ConfigError(f"{precision} quantization needs calibration ranges")
        ranges = np.asarray(ranges, dtype=np.float32)
        if ranges.shape != (2, x.shape[-1]):
            raise ConfigError(f"calibration ranges have shape {ranges.shape}, expected (2, {x.shape[-1]})")
        starts = ranges[0]
        steps = (ranges[1] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        q = np.clip(np.floor((x - starts) / steps), 0, 255)
        return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)
    packed = np.packbits(x > 0, axis=-1)
    return packed if precision == "ubinary" else (packed - 128).astype(np.int8)


def bytes_per_vector(dim: int, precision: str) -> int:
    """Storage of one vector: 4 bytes per float32 component, 1 per int8, one bit per binary one."""
    precision = check_precision(precision)
    if precision == "float32":
        return 4 * dim
    if precision in ("int8", "uint8"):
        return dim
    return (dim + 7) // 8


def unpack_binary(x: np.ndarray, dim: int, precision: str = "ubinary") -> np.ndarray:
    """Packed bits (``ubinary`` or ``binary``) -> ``[n, dim]`` array of 0 / 1 (uint8)."""
    raw = x.astype(np.int16) + 128 if precision == "binary" else x
    return np.unpackbits(raw.astype(np.uint8), axis=-1)[..., :dim]


def dequantize_int8(x: np.ndarray, ranges: np.ndarray, precision: str = "int8") -> np.ndarray:
    """int8 / uint8 codes -> the float value of each bucket's lower edge (search against float queries)."""
    ranges = np.asarray(ranges, dtype=np.float32)
    steps = (ranges[1] - ranges[0]) / 255
    steps = np.where(steps == 0, 1, steps)
    codes = x.astype(np.float32) + (128 if precision == "int8" else 0)
    return (ranges[0] + codes * steps).astype(np.float32)
