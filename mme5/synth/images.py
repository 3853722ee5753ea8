"""The image pool of the synthesis, image embedders, and nearest-neighbour retrieval.

Where a modality combination puts an image on the document side, the positive and hard-negative
images are the query image's nearest neighbours in the pool under an embedding model (the query image
itself and exact duplicates of it excluded). Any callable ``list[PIL.Image] -> [n, D]`` array of
L2-normalised rows is an embedder; :class:`HistogramEmbedder` is a weight-free one, and
:class:`ModelEmbedder` uses a trained mme5 model.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mme5.errors import ConfigError, MissingPathError
from mme5.records import IMAGE_EXTENSIONS, IMAGE_FORMATS, ROLE_PATTERN, decode_image, iter_shard

log = logging.getLogger(__name__)

Embedder = Callable[[list[Image.Image]], np.ndarray]


@dataclass(frozen=True)
class PoolImage:
    """One image of the pool: where it came from, and its bytes (read lazily for files)."""

    key: str
    ext: str
    path: str | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return Path(self.path).read_bytes()


class ImagePool:
    """An ordered, de-duplicated set of readable images. Unreadable files are skipped and counted."""

    def __init__(self, images: list[PoolImage], skipped: Counter | None = None, max_side: int = 1024):
        self.images = images
        self.skipped: Counter = skipped or Counter()
        self.max_side = max_side

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def from_folder(
        cls, folder: str | os.PathLike, limit: int | None = None, max_side: int = 1024
    ) -> ImagePool:
        """Every image file under ``folder`` (recursive, sorted by path; first ``limit`` if given)."""
        root = Path(folder)
        if not root.is_dir():
            raise MissingPathError(f"image folder '{root}' does not exist or is not a folder")
        files = sorted(
            p for p in root.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS
        )
        candidates = [
            PoolImage(str(p.relative_to(root)), p.suffix.lower().lstrip("."), path=str(p)) for p in files
        ]
        return cls._checked(candidates, limit, max_side, f"folder '{root}'")

    @classmethod
    def from_shards(
        cls, shards: Sequence[str | os.PathLike], limit: int | None = None, max_side: int = 1024
    ) -> ImagePool:
        """Every image member (query, positive, negatives) of the given WebDataset shards."""
        candidates: list[PoolImage] = []
        for shard in shards:
            if not Path(shard).is_file():
                raise MissingPathError(f"image shard '{shard}' does not exist")
            for sample in iter_shard(shard):
                for name, value in sample.items():
                    m = ROLE_PATTERN.match(name)
                    if m and isinstance(value, bytes):
                        candidates.append(
                            PoolImage(
                                f"{Path(shard).name}/{sample['__key__']}.{m.group(1)}", m.group(2), data=value
                            )
                        )
        return cls._checked(candidates, limit, max_side, f"{len(shards)} shard(s)")

    @classmethod
    def _checked(cls, candidates: list[PoolImage], limit: int | None, max_side: int, what: str) -> ImagePool:
        kept: list[PoolImage] = []
        seen: set[bytes] = set()
        skipped: Counter = Counter()
        for img in candidates:
            if limit is not None and len(kept) >= limit:
                break
            try:
                data = img.read()
                digest = hashlib.blake2b(data, digest_size=16).digest()
                if digest in seen:
                    skipped["duplicate_image"] += 1
                    continue
                probe = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
                probe.draft("RGB", (64, 64))  # JPEG: decode at 1/8 scale; enough to prove it decodes
                probe.load()
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                skipped["unreadable_image"] += 1
                log.warning("image pool: skipping %s: %s", img.key, exc)
                continue
            seen.add(digest)
            kept.append(img)
        if skipped:
            log.warning("image pool from %s: kept %d, skipped %s", what, len(kept), dict(skipped))
        if not kept:
            raise ConfigError(
                f"no readable image in {what} (expected files with extensions {', '.join(IMAGE_EXTENSIONS)})"
            )
        return cls(kept, skipped, max_side)

    def load(self, index: int) -> Image.Image:
        """The decoded RGB image, its longest side bounded by ``max_side``."""
        return decode_image(self.images[index].read(), max_side=self.max_side)

    def encoded(self, index: int) -> tuple[bytes, str]:
        """Original bytes and extension (what goes into the shards)."""
        img = self.images[index]
        return img.read(), img.ext

    def fingerprint(self) -> str:
        """Identifies the pool's content and order (cache key of its embeddings)."""
        h = hashlib.blake2b(digest_size=12)
        for img in self.images:
            h.update(img.key.encode())
            h.update(b"\0")
        return h.hexdigest()


class HistogramEmbedder:
    """A weight-free image embedder: joint colour histogram plus a coarse spatial colour layout.

    Weak next to a learned model, but real, deterministic and free; it finds images of similar colour
    and composition. Use :class:`ModelEmbedder` for semantic neighbours.
    """

    def __init__(self, bins: int = 6, grid: int = 4, size: int = 64):
        self.bins, self.grid, self.size = bins, grid, size

    @property
    def name(self) -> str:
        return f"histogram-b{self.bins}-g{self.grid}-s{self.size}"

    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        rows = []
        for img in images:
            a = (
                np.asarray(
                    img.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR),
                    dtype=np.float64,
                )
                / 255.0
            )
            q = np.minimum((a * self.bins).astype(int), self.bins - 1)
            joint = q[..., 0] * self.bins * self.bins + q[..., 1] * self.bins + q[..., 2]
            hist = np.bincount(joint.ravel(), minlength=self.bins**3) / joint.size
            cell = self.size // self.grid
            layout = (
                a[: cell * self.grid, : cell * self.grid]
                .reshape(self.grid, cell, self.grid, cell, 3)
                .mean((1, 3))
            )
            v = np.concatenate([np.sqrt(hist), 0.5 * layout.ravel()])
            rows.append(v / max(np.linalg.norm(v), 1e-12))
        return np.stack(rows).astype(np.float32)


class CallableEmbedder:
    """Loads an embedder given as ``"package.module:attribute"`` (a function, or a class built without
    arguments)."""

    def __init__(self, target: str):
        module, _, attr = target.partition(":")
        if not module or not attr:
            raise ConfigError(f"embedder '{target}': expected 'package.module:callable'")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"embedder '{target}': cannot import it ({exc})") from None
        self.fn = obj() if isinstance(obj, type) else obj
        self.name = target

    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        return np.asarray(self.fn(images), dtype=np.float32)


class ModelEmbedder:
    """Image embeddings from anything :func:`mme5.model.load.load` loads: a trained mme5 export or checkpoint,
    or a backbone folder / ``tiny-<family>`` name (untrained: last-token pooling of the raw VLM)."""

    def __init__(self, model: str, batch_size: int = 16, instruction: str = "Represent the given image."):
        self.model_path, self.batch_size, self.instruction = model, batch_size, instruction
        self.name = f"model:{model}"
        self._encode: Callable[[list], Any] | None = None

    def _load(self) -> None:  # imported lazily: the model modules are heavy and optional here
        from mme5.model.load import load

        model = load(self.model_path)
        self._encode = lambda imgs: model.encode(
            images=imgs,
            instruction=self.instruction,
            batch_size=self.batch_size,
            progress=False,
            convert_to_tensor=True,
        )

    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        if self._encode is None:
            self._load()
        return self._encode(images).float().cpu().numpy()  # type: ignore[misc]


def embed_pool(
    pool: ImagePool, embedder: Embedder, batch_size: int = 32, cache_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """[len(pool), D] L2-normalised embeddings, cached under ``cache_dir`` by pool and embedder name."""
    name = getattr(embedder, "name", type(embedder).__name__)
    cache = None
    if cache_dir is not None:
        tag = hashlib.blake2b(f"{pool.fingerprint()}|{name}".encode(), digest_size=8).hexdigest()
        cache = Path(cache_dir) / f"pool-embeddings-{tag}.npy"
        if cache.exists():
            emb = np.load(cache)
            if emb.shape[0] == len(pool):
                return emb
    chunks = []
    for start in range(0, len(pool), batch_size):
        imgs = [pool.load(i) for i in range(start, min(start + batch_size, len(pool)))]
        chunks.append(np.asarray(embedder(imgs), dtype=np.float32))
    emb = np.concatenate(chunks)
    if emb.ndim != 2 or emb.shape[0] != len(pool):
        raise ConfigError(f"embedder {name} returned shape {emb.shape}; expected [{len(pool)}, D]")
    norms = np.linalg.norm(emb, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        raise ConfigError(
            f"embedder {name} returned rows with norms in [{norms.min():.3f}, {norms.max():.3f}]; "
            "expected L2-normalised rows"
        )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npy")
        np.save(tmp, emb)
        os.replace(tmp, cache)
        (cache.with_suffix(".json")).write_text(
            json.dumps({"embedder": name, "pool": pool.fingerprint(), "images": len(pool)})
        )
    return emb


class NeighbourIndex:
    """Exact cosine nearest neighbours over the pool embeddings (ties broken by pool index)."""

    def __init__(self, embeddings: np.ndarray):
        self.emb = np.ascontiguousarray(embeddings, dtype=np.float32)

    def top_k(self, indices: Sequence[int], k: int, chunk: int = 256) -> list[list[int]]:
        """For each pool index, the ``k`` most similar other images (one matrix product per chunk)."""
        n = len(self.emb)
        if k + 1 > n:
            raise ConfigError(f"the image pool has {n} image(s); retrieval needs at least {k + 1}")
        out: list[list[int]] = []
        take = min(k + 1, n)  # the image itself is among its own top k + 1
        for start in range(0, len(indices), chunk):
            rows = np.asarray(indices[start : start + chunk], dtype=np.int64)
            sims = self.emb[rows] @ self.emb.T
            sims[np.arange(len(rows)), rows] = -np.inf
            part = np.argpartition(-sims, take - 1, axis=1)[:, :take]
            for r, cand in enumerate(part):
                order = sorted(cand.tolist(), key=lambda j: (-sims[r, j], j))
                out.append([j for j in order if j != rows[r]][:k])
        return out

    def neighbours(self, index: int, k: int, exclude: Sequence[int] = ()) -> list[int]:
        """The ``k`` pool indices most similar to image ``index``, excluding it and ``exclude``."""
        return [j for j in self.top_k([index], k + len(exclude))[0] if j not in set(exclude)][:k]


def image_bytes_of(img: Image.Image) -> bytes:
    """JPEG bytes of a PIL image (for callers that build pools from drawn images)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=92)
    return buf.getvalue()
