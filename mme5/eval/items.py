"""Distinct evaluation items: each (text, image path) pair is encoded once per evaluation.

MMEB rows repeat candidates heavily (a classification dataset scores every row against the same
class list), so rows refer to items by id and the encoder sees each distinct item once.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from mme5.errors import MissingPathError, Mme5Error
from mme5.records import MAX_MEMBER_BYTES, RecordError, Side, decode_image

#: Use the training pixel cap (:data:`mme5.data.collate.MAX_IMAGE_PIXELS`) for evaluation images.
DEFAULT_PIXELS = -1


class ItemError(Mme5Error, ValueError):
    """An evaluation item that cannot be built (no content, unreadable or refused image).

    ``reason`` names why: ``"item"`` (bad row values), or the image decoder's reason
    (``image_format``, ``image_decode``, ``image_too_large``).
    """

    def __init__(self, message: str, reason: str = "item") -> None:
        super().__init__(message)
        self.reason = reason


class Item(NamedTuple):
    """One side of an evaluation row as stored: raw text ("" = none) and image path ("" = none)."""

    text: str
    image_path: str

    @classmethod
    def of(cls, text: object, image_path: object, where: str = "") -> Item:
        """Validate the raw column values of one side (``None`` counts as empty)."""
        text = "" if text is None else text
        image_path = "" if image_path is None else image_path
        if not isinstance(text, str) or not isinstance(image_path, str):
            raise ItemError(
                f"{where}: text and image path must be strings, got "
                f"{type(text).__name__} and {type(image_path).__name__}"
            )
        if not text and not image_path:
            raise ItemError(f"{where}: a side with neither text nor image")
        return cls(text, image_path)

    def key(self) -> bytes:
        """A 16-byte content key of the stored fields (used by the embedding cache with file stats)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(self.text.encode("utf-8"))
        h.update(b"\x00")
        h.update(self.image_path.encode("utf-8"))
        return h.digest()


class ItemTable:
    """Assigns consecutive ids to distinct items, in first-seen order."""

    def __init__(self) -> None:
        self._ids: dict[Item, int] = {}
        self.items: list[Item] = []

    def add(self, item: Item) -> int:
        idx = self._ids.get(item)
        if idx is None:
            idx = self._ids[item] = len(self.items)
            self.items.append(item)
        return idx

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> Item:
        return self.items[idx]


def image_file(image_root: str | os.PathLike | None, image_path: str) -> Path:
    """The file an item's image path names (absolute paths are used as they are)."""
    p = Path(image_path)
    if p.is_absolute() or image_root is None:
        return p
    return Path(image_root) / p


def check_images(items: list[Item], image_root: str | os.PathLike | None, what: str = "evaluation") -> None:
    """Fail early, with one line, when images the items name are missing (before any encoding)."""
    absent = [
        it.image_path for it in items if it.image_path and not image_file(image_root, it.image_path).is_file()
    ]
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise MissingPathError(
            f"{what}: image '{image_file(image_root, absent[0])}'{more} does not exist; "
            f"is image_root '{image_root}' the folder the image paths are relative to?"
        )


def image_signature(image_root: str | os.PathLike | None, item: Item) -> bytes:
    """Size and modification time of an item's image file (b"" for text-only items)."""
    if not item.image_path:
        return b""
    st = image_file(image_root, item.image_path).stat()
    return f"{st.st_size}:{st.st_mtime_ns}".encode()


def default_max_pixels() -> int:
    """The pixel cap shared with training: :data:`mme5.data.collate.MAX_IMAGE_PIXELS`."""
    from mme5.data.collate import MAX_IMAGE_PIXELS

    return MAX_IMAGE_PIXELS


def load_side(
    item: Item,
    image_root: str | os.PathLike | None,
    max_pixels: int | None = DEFAULT_PIXELS,
    max_bytes: int | None = MAX_MEMBER_BYTES,
) -> Side:
    """The :class:`~mme5.records.Side` the embedding function receives (RGB image decoded).

    The image file is read as bytes (at most ``max_bytes``) and decoded by
    :func:`mme5.records.decode_image`, the decoder training uses: only the allowed formats, and an
    image over ``max_pixels`` (default: the training cap) is refused from its header, before decoding.
    A refused or undecodable image raises :class:`ItemError` naming the file and the reason.
    """
    image = None
    if item.image_path:
        path = image_file(image_root, item.image_path)
        try:
            size = path.stat().st_size
            if max_bytes is not None and size > max_bytes:
                raise ItemError(
                    f"image '{path}' is refused (image_too_large): {size} bytes exceeds {max_bytes}",
                    "image_too_large",
                )
            data = path.read_bytes()
        except FileNotFoundError:
            raise MissingPathError(f"image '{path}' does not exist") from None
        except OSError as exc:
            raise ItemError(f"image '{path}' cannot be read: {exc}", "image_decode") from None
        pixels = default_max_pixels() if max_pixels == DEFAULT_PIXELS else max_pixels
        try:
            image = decode_image(data, max_pixels=pixels)
        except RecordError as exc:
            verb = "cannot be decoded" if exc.reason == "image_decode" else "is refused"
            raise ItemError(f"image '{path}' {verb} ({exc})", exc.reason) from None
        except Image.DecompressionBombError as exc:  # belt and braces: PIL's own bomb guard
            raise ItemError(
                f"image '{path}' is refused (image_too_large: {exc})", "image_too_large"
            ) from None
    return Side(text=item.text or None, image=image)
