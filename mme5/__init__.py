"""mme5: multimodal, multilingual embedding models trained the mmE5 way.

import mme5
model = mme5.load("exported/demo")                 # a folder written by `mme5 export`
emb = model.encode(texts=["a red circle"], instruction="Find the matching image.")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load(path: str, **kwargs: Any):
    """Load a folder written by ``mme5 export`` (or a ``mme5 fit`` checkpoint, or a backbone); returns
    an ``EmbeddingModel`` with ``encode`` / ``encode_sides``.

    Keyword arguments (``dtype``, ``quantization``, ``device``, ``max_length``) go to
    :func:`mme5.model.load.load`.
    """
    from mme5.model.load import load as _load

    return _load(path, **kwargs)


__all__ = ["__version__", "load"]
