"""Truncation and quantization equal sentence-transformers' definitions on random odd shapes."""

from __future__ import annotations

import numpy as np
import pytest

from mme5.embed.precision import (
    PRECISIONS,
    bytes_per_vector,
    calibration_ranges,
    check_dim,
    dequantize_int8,
    quantize,
    truncate,
    unpack_binary,
)
from mme5.errors import ConfigError


def embeddings(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("shape", [(37, 13), (101, 64), (5, 200)], ids=lambda s: "x".join(map(str, s)))
def test_quantize_matches_sentence_transformers(precision, shape):
    st = pytest.importorskip("sentence_transformers")
    x = embeddings(*shape, seed=sum(shape))
    calib = embeddings(53, shape[1], seed=1)
    ranges = calibration_ranges(calib)
    want = st.quantize_embeddings(x, precision, calibration_embeddings=calib)
    got = quantize(x, precision, ranges)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert got.nbytes == shape[0] * bytes_per_vector(shape[1], precision)


def test_binary_is_packbits_of_positive_components():
    x = embeddings(9, 21)
    packed = quantize(x, "ubinary")
    assert packed.shape == (9, 3) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_binary(packed, 21), (x > 0).astype(np.uint8))
    np.testing.assert_array_equal(
        unpack_binary(quantize(x, "binary"), 21, "binary"), (x > 0).astype(np.uint8)
    )


def test_int8_round_trip_is_within_one_step():
    x = embeddings(40, 17)
    ranges = calibration_ranges(x)
    back = dequantize_int8(quantize(x, "int8", ranges), ranges)
    step = (ranges[1] - ranges[0]) / 255
    assert np.all(back <= x + 1e-6) and np.all(x - back <= step + 1e-6)


def test_truncate_renormalises_and_keeps_full_dimension():
    x = embeddings(6, 31)
    t = truncate(x, 7)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(t, x[:, :7] / np.linalg.norm(x[:, :7], axis=1, keepdims=True), rtol=1e-6)
    assert truncate(x, None) is x or np.array_equal(truncate(x, None), x)
    np.testing.assert_array_equal(truncate(x, 31), x)


def test_bad_precision_and_dim_are_one_line():
    with pytest.raises(ConfigError, match="unknown precision 'int4'; expected one of float32, int8"):
        quantize(embeddings(3, 4), "int4")
    with pytest.raises(ConfigError, match="--dim 65 is not between 1 and the model's embedding dimension 64"):
        check_dim(65, 64)
    with pytest.raises(ConfigError, match="needs calibration ranges"):
        quantize(embeddings(3, 4), "int8")
    assert (
        check_dim(None, 64) == 64
        and bytes_per_vector(64, "ubinary") == 8
        and bytes_per_vector(13, "binary") == 2
    )
