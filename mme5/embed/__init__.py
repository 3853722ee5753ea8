"""Embedding files of texts and images with an exported model (``mme5 encode``).

:mod:`mme5.embed.inputs` reads the rows (parquet, JSONL, CSV or a folder of images),
:mod:`mme5.embed.precision` truncates and quantizes embeddings exactly as sentence-transformers'
``quantize_embeddings`` does, and :mod:`mme5.embed.writer` encodes in parts that a killed run resumes
from, then assembles the ``.npy`` or parquet output.
"""

from mme5.embed.precision import PRECISIONS, bytes_per_vector, calibration_ranges, quantize, truncate
from mme5.embed.writer import EncodeReport, encode_file

__all__ = [
    "PRECISIONS",
    "EncodeReport",
    "bytes_per_vector",
    "calibration_ranges",
    "encode_file",
    "quantize",
    "truncate",
]
