"""An on-disk embedding cache keyed by (model fingerprint, item), checked on every read.

Layout: ``<root>/<fingerprint>/`` holds one part per evaluation that encoded something:
``emb-<part>.npy`` (float32 [n, D], L2-normalised rows), ``keys-<part>.npy`` (uint8 [n, 16] item keys,
row i is the key of embedding row i) and, written last, ``part-<part>.json``: the format, the row count,
the width, the dtype and a blake2b digest of the keys and embeddings in order. A reader trusts a part
only through its manifest, and only after checking it: shapes, dtype, row count and digest match,
every value is finite and every row has norm 1 (or 0). A part that fails is dropped (its files
removed) with a warning naming it and the reason, and its items are encoded again. Every file is
written with :mod:`mme5.atomic` (a unique temp file beside the target, fsync, rename).

A different model (or model setting, processor file or mme5 version) has a different fingerprint
(:mod:`mme5.model.fingerprint`), hence a different folder: nothing computed by another model is ever
returned. The default root is the user's cache directory (:func:`default_cache_dir`), never the
current directory, so a cloned tree cannot ship a prepared cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mme5.atomic import atomic_open, write_text
from mme5.errors import ConfigError
from mme5.model.fingerprint import fingerprint

log = logging.getLogger("mme5.eval")

#: Version of the part layout; parts of another version are not read.
CACHE_FORMAT = 2
#: Largest accepted deviation of a cached row's L2 norm from 1.
NORM_TOLERANCE = 1e-3
KEY_BYTES = 16
#: ``cache_dir`` value that means :func:`default_cache_dir`.
AUTO = "auto"


def default_cache_dir() -> Path:
    """``$MME5_CACHE/embeddings``, else ``$XDG_CACHE_HOME/mme5/embeddings``, else
    ``~/.cache/mme5/embeddings``."""
    env = os.environ.get("MME5_CACHE")
    if env:
        return Path(env).expanduser() / "embeddings"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mme5" / "embeddings"


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path | None:
    """``None`` (no cache), ``"auto"`` (:func:`default_cache_dir`) or a folder."""
    if cache_dir is None:
        return None
    if str(cache_dir) == AUTO:
        return default_cache_dir()
    return Path(cache_dir).expanduser()


def model_fingerprint(model: torch.nn.Module, extra: str = "") -> str:
    """:func:`mme5.model.fingerprint.fingerprint` of ``model`` with ``extra`` (settings that change
    embeddings)."""
    return fingerprint(model, extra)


def _digest(keys: np.ndarray, emb: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{keys.shape}|{emb.shape}|{emb.dtype.str}|".encode())
    h.update(np.ascontiguousarray(keys).tobytes())
    h.update(np.ascontiguousarray(emb).tobytes())
    return h.hexdigest()


class CacheEntryError(ValueError):
    """A cached part that fails its checks (internal: the part is dropped and recomputed)."""


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

    @staticmethod
    def _read_part(manifest: Path, width: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(keys [n, 16] uint8, embeddings [n, D] float32) of one part, checked; raises CacheEntryError."""
        try:
            meta = json.loads(manifest.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CacheEntryError(f"unreadable manifest ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
            raise CacheEntryError(f"manifest is not cache format {CACHE_FORMAT}")
        part = manifest.name[len("part-") : -len(".json")]
        try:
            rows, dim, digest = int(meta["rows"]), int(meta["dim"]), str(meta["digest"])
            keys = np.load(manifest.with_name(f"keys-{part}.npy"), allow_pickle=False)
            emb = np.load(manifest.with_name(f"emb-{part}.npy"), allow_pickle=False)
        except (KeyError, TypeError, ValueError, OSError, EOFError) as exc:
            raise CacheEntryError(f"unreadable part ({type(exc).__name__}: {exc})") from None
        if keys.dtype != np.uint8 or keys.shape != (rows, KEY_BYTES):
            raise CacheEntryError(f"keys are {keys.dtype} {keys.shape}, expected uint8 ({rows}, {KEY_BYTES})")
        if emb.dtype != np.float32 or emb.shape != (rows, dim):
            raise CacheEntryError(f"embeddings are {emb.dtype} {emb.shape}, expected float32 ({rows}, {dim})")
        if width is not None and dim != width:
            raise CacheEntryError(f"embeddings have width {dim}, other parts {width}")
        if _digest(keys, emb) != digest:
            raise CacheEntryError("keys or embeddings differ from what was stored (digest mismatch)")
        if not np.isfinite(emb).all():
            raise CacheEntryError("non-finite embeddings")
        norms = np.linalg.norm(emb.astype(np.float64), axis=1)
        bad = ~((np.abs(norms - 1.0) <= NORM_TOLERANCE) | (norms == 0.0))
        if bad.any():
            raise CacheEntryError(f"{int(bad.sum())} row(s) are not unit vectors (norm {norms[bad][0]:.4g})")
        return keys, emb

    @staticmethod
    def _drop(manifest: Path, reason: str) -> None:
        part = manifest.name[len("part-") : -len(".json")]
        log.warning(
            "embedding cache: dropping %s (%s); its items are encoded again", manifest.with_suffix(""), reason
        )
        for name in (manifest.name, f"keys-{part}.npy", f"emb-{part}.npy"):
            with contextlib.suppress(OSError):
                (manifest.parent / name).unlink(missing_ok=True)

    def lookup(self, fingerprint: str, keys: list[bytes]) -> tuple[Tensor, Tensor | None]:
        """(found [n] bool, embeddings [found, D] float32 in key order) for the given item keys.

        Parts that fail their checks are dropped with a warning; their items count as not found.
        """
        found = torch.zeros(len(keys), dtype=torch.bool)
        folder = self._folder(fingerprint)
        if not folder.is_dir() or not keys:
            return found, None
        wanted = {k: i for i, k in enumerate(keys)}
        rows: dict[int, np.ndarray] = {}
        width: int | None = None
        for manifest in sorted(folder.glob("part-*.json")):
            try:
                part_keys, part = self._read_part(manifest, width)
            except CacheEntryError as exc:
                self._drop(manifest, str(exc))
                continue
            width = part.shape[1]
            for j, k in enumerate(part_keys):
                i = wanted.get(bytes(k))
                if i is not None:
                    rows[i] = np.array(part[j], dtype=np.float32)
        if not rows:
            return found, None
        order = sorted(rows)
        found[order] = True
        return found, torch.from_numpy(np.stack([rows[i] for i in order]))

    def store(self, fingerprint: str, keys: list[bytes], embeddings: Tensor) -> None:
        """Append embeddings for the given keys: one part (embeddings, keys, then its manifest), each
        file written atomically."""
        if not keys:
            return
        if embeddings.ndim != 2 or embeddings.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys but embeddings of shape {tuple(embeddings.shape)}")
        if any(len(k) != KEY_BYTES for k in keys):
            raise ValueError(f"cache keys must be {KEY_BYTES} bytes")
        folder = self._folder(fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        part = uuid.uuid4().hex[:12]
        key_arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
        emb_arr = np.ascontiguousarray(embeddings.detach().to("cpu", torch.float32).numpy())
        for name, arr in ((f"emb-{part}.npy", emb_arr), (f"keys-{part}.npy", key_arr)):
            with atomic_open(folder / name, "wb") as f:
                np.save(f, arr, allow_pickle=False)
        meta = {
            "format": CACHE_FORMAT,
            "rows": len(keys),
            "dim": int(emb_arr.shape[1]),
            "dtype": "float32",
            "digest": _digest(key_arr, emb_arr),
        }
        write_text(folder / f"part-{part}.json", json.dumps(meta))  # last: the part is now readable
