"""Helpers for the data tests: small shard sets written with the project's own writer."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from mme5.records import Example, Side, write_shard, write_sizes, write_tar


def png_bytes(seed: int, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def make_example(ident: str, image: bool = False, seed: int = 0, negatives: int = 1) -> Example:
    q = Side(text=f"query {ident}", image_bytes=png_bytes(seed) if image else None, image_ext="png")
    return Example(
        id=ident,
        query=q,
        positive=Side(text=f"positive {ident}"),
        negatives=[Side(text=f"negative {ident} {k}") for k in range(negatives)],
        instruction="Find the match.",
        source="test",
    )


def write_set(
    folder: Path,
    name: str,
    shards: int,
    per_shard: int | list[int],
    image_every: int = 0,
    sizes_file: bool = True,
) -> str:
    """Write ``shards`` shards ``<name>-00000i.tar`` (ids ``<name>-<shard>-<i>``); return the brace spec."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = per_shard if isinstance(per_shard, list) else [per_shard] * shards
    sizes = {}
    for s in range(shards):
        exs = [
            make_example(
                f"{name}-{s}-{i}", image=bool(image_every) and i % image_every == 0, seed=s * 1000 + i
            )
            for i in range(counts[s])
        ]
        path = folder / f"{name}-{s:06d}.tar"
        sizes[path.name] = write_shard(path, exs)
    if sizes_file:
        write_sizes(folder, sizes)
    return str(folder / f"{name}-{{{0:06d}..{shards - 1:06d}}}.tar")


def ids_of(batch: list[Example]) -> list[str]:
    return [ex.id for ex in batch]


def list_collate(examples: list[Example]) -> list[str]:
    """A collate function for tests that keeps only the ids (picklable, cheap)."""
    return [ex.id for ex in examples]


def write_raw_shard(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A tar with exactly these members (for malformed shards)."""
    write_tar(path, members)


def huge_png_header(width: int = 20000, height: int = 20000) -> bytes:
    """A valid PNG signature + IHDR declaring a huge RGB image, with a tiny (truncated) body."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
