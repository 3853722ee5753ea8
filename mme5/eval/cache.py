"""An on-disk embedding cache keyed by (model fingerprint, item).

Layout: ``<root>/<fingerprint>/keys-<part>.npy`` (uint8 [n, 16] item keys) beside
``emb-<part>.npy`` (float32 [n, D]); each evaluation appends one part with what it encoded. A
different model (or model setting) has a different fingerprint, hence a different folder: nothing
computed by another model is ever returned.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mme5.errors import ConfigError
from mme5.model.fingerprint import fingerprint


def model_fingerprint(model: torch.nn.Module, extra: str = "") -> str:
    """:func:`mme5.model.fingerprint.fingerprint` of ``model`` with ``extra`` (settings that change
    embeddings)."""
    return fingerprint(model, extra)


class EmbeddingCache:
    """Embeddings of evaluation items, stored per model fingerprint under ``root``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _folder(self, fingerprint: str) -> Path:
        if not fingerprint or any(c in fingerprint for c in "/\\.") or len(fingerprint) > 128:
            raise ConfigError(
                f"embedding cache: fingerprint '{fingerprint}' must be a short name without path characters"
            )
        return self.root / fingerprint

    def lookup(self, fingerprint: str, keys: list[bytes]) -> tuple[Tensor, Tensor | None]:
        """(found [n] bool, embeddings [found, D] float32 in key order) for the given item keys."""
        found = torch.zeros(len(keys), dtype=torch.bool)
        folder = self._folder(fingerprint)
        if not folder.is_dir() or not keys:
            return found, None
        wanted = {k: i for i, k in enumerate(keys)}
        rows: dict[int, np.ndarray] = {}
        for key_file in sorted(folder.glob("keys-*.npy")):
            emb_file = key_file.with_name("emb-" + key_file.name[len("keys-") :])
            if not emb_file.is_file():  # keys are renamed last, so this only happens to foreign files
                continue
            part_keys = np.load(key_file)
            hits = [(j, wanted[bytes(k)]) for j, k in enumerate(part_keys) if bytes(k) in wanted]
            if not hits:
                continue
            part = np.load(emb_file, mmap_mode="r")
            for j, i in hits:
                rows[i] = np.asarray(part[j], dtype=np.float32)
        if not rows:
            return found, None
        order = sorted(rows)
        found[order] = True
        return found, torch.from_numpy(np.stack([rows[i] for i in order]))

    def store(self, fingerprint: str, keys: list[bytes], embeddings: Tensor) -> None:
        """Append embeddings (one part file pair, written atomically) for the given keys."""
        if not keys:
            return
        if embeddings.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys but {embeddings.shape[0]} embeddings")
        folder = self._folder(fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        part = uuid.uuid4().hex[:12]
        key_arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1)
        emb_arr = embeddings.detach().to("cpu", torch.float32).numpy()
        # embeddings first, keys last: a reader only trusts a part whose keys file exists
        for name, arr in ((f"emb-{part}.npy", emb_arr), (f"keys-{part}.npy", key_arr)):
            tmp = folder / (name + ".tmp")
            with open(tmp, "wb") as f:
                np.save(f, arr)
            os.replace(tmp, folder / name)
