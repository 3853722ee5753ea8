"""mme5: multimodal, multilingual embedding models trained the mmE5 way.

import mme5
model = mme5.load("exported/demo")                 # a folder written by `mme5 export`
emb = model.encode(["a red circle", {"image": "photo.jpg", "text": "a cat"}], prompt_name="retrieval")
# numpy [2, D], as sentence-transformers returns; the same folder loads with SentenceTransformer(...)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load(path: str, **kwargs: Any):
    """Load a folder written by ``mme5 export`` (or a ``mme5 fit`` checkpoint file or sharded checkpoint
    folder, or a backbone); returns an ``EmbeddingModel`` whose ``encode`` takes sentence-transformers'
    arguments (``prompt_name``, ``convert_to_tensor``, ...), and ``encode_sides``.

    Keyword arguments (``dtype``, ``quantization``, ``device``, ``max_length``) go to
    :func:`mme5.model.load.load`.
    """
    from mme5.model.load import load as _load

    return _load(path, **kwargs)


__all__ = ["__version__", "load"]
