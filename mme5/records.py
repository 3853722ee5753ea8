"""The training-sample schema and its WebDataset (de)serialisation.

One module owns both directions and the tar I/O: the synthesis tool, the converter and the demo corpus
write shards with :func:`write_shard` (:class:`ShardSetWriter` numbers them and keeps ``sizes.json``);
the data pipeline, the sample counter and the synthesis image pool read them with :func:`iter_shard`,
and the DataModule decodes samples with :func:`decode_sample`.

Shard layout (one sample = one key)::

    <key>.json        the Example's fields, texts inline, with an ``image`` flag per side
    <key>.qry.jpg     query image            (any PIL-readable extension)
    <key>.pos.jpg     positive image
    <key>.neg0.jpg    hard-negative images, numbered by position in ``negs``
    <key>.qry.f000.jpg  frame 0 of a side's frame list (video frames, document pages), then
    <key>.qry.f001.jpg  frame 1, ...: the side's JSON holds ``"frames": N`` (schema 2)

A side holds a text, one image, an ordered frame list, or a text with either. A sample without frame
lists is written as schema 1, which every reader knows; one with frames as schema 2, which older
readers refuse (``schema_version``) rather than drop its frames unseen.

A shard set is a folder of ``*.tar`` shards plus ``sizes.json`` (``{shard file name: samples}``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image
from typing_extensions import Self

from mme5.atomic import atomic_open, write_text
from mme5.errors import Mme5Error

TASKS = ("classification", "vqa", "retrieval", "grounding")
#: Modality combinations (query -> document) of the mmE5 synthesis plus the labelled sets, then
#: VLM2Vec-V2's video ones (``V``: a frame list).
MODALITIES = ("IT2I", "T2IT", "IT2IT", "I2I", "I2T", "IT2T", "T2I", "T2T", "V2T", "VT2T", "T2V")
#: Phi-3.5-V's image token, used inside the texts of the public MMEB / mmE5 data.
PUBLIC_IMAGE_TOKEN = "<|image_1|>"
#: Written into every sample's JSON; a reader refuses samples of a newer schema (``schema_version``).
#: 1: texts and one image per side; 2: adds frame lists (``"frames": N`` + ``<role>.fNNN.<ext>``).
SCHEMA_VERSION = 2
#: The schema of a sample without frame lists (what every reader, old or new, reads).
BASE_SCHEMA_VERSION = 1
#: Most frames one side may declare (a guard against a hostile count, far above the 8 to 32 frames
#: video embedding models sample).
MAX_FRAMES = 512
SIZES_FILE = "sizes.json"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
ROLE_PATTERN = re.compile(r"^(qry|pos|neg\d+)\.(" + "|".join(IMAGE_EXTENSIONS) + r")$")
#: ``<role>.f<index>.<ext>``: one frame of a side's frame list (index written with 3+ digits).
FRAME_PATTERN = re.compile(r"^(qry|pos|neg\d+)\.f(\d{3,6})\.(" + "|".join(IMAGE_EXTENSIONS) + r")$")
#: The only formats :func:`decode_image` opens (PIL plugin names). Anything else, e.g. PostScript
#: (which PIL would hand to Ghostscript), is refused as ``image_format`` without being parsed.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
#: Default cap on one tar member's bytes (:func:`iter_shard`); a larger member is never read.
MAX_MEMBER_BYTES = 64 * 2**20


class RecordError(Mme5Error, ValueError):
    """A sample that cannot be decoded. ``reason`` is a short counter name (e.g. ``"bad_json"``)."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass
class Side:
    """One side of a pair: a text, an image, an ordered frame list, or a text with either.

    ``text`` is raw (it may already hold an instruction or the public ``<|image_1|>`` token);
    backbone adapters turn it into the model's own prompt. ``image_bytes`` keeps the encoded image
    when known, so that re-writing a shard does not re-encode and content ids are stable.
    ``frames`` holds a video's sampled frames (or a document's pages) as encoded ``(bytes, ext)``
    pairs, in order; :meth:`load_frames` decodes them (each through :func:`decode_image`, with its
    format allow-list and pixel cap). A side has one image or a frame list, never both.
    """

    text: str | None = None
    image: Image.Image | None = None
    image_bytes: bytes | None = None
    image_ext: str = "jpg"
    frames: list[tuple[bytes, str]] = field(default_factory=list)
    frame_images: list[Image.Image] | None = field(default=None, repr=False, compare=False)
    """The decoded frames (set by :meth:`load_frames`)."""

    @classmethod
    def from_frames(cls, images: Iterable[Image.Image | bytes], text: str | None = None) -> Side:
        """A frame-list side from PIL images (encoded as JPEG) or already encoded bytes (kept as they are)."""
        frames: list[tuple[bytes, str]] = []
        for im in images:
            if isinstance(im, (bytes, bytearray)):
                frames.append((bytes(im), _sniff_ext(bytes(im))))
            else:
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="JPEG", quality=92)
                frames.append((buf.getvalue(), "jpg"))
        return cls(text=text, frames=frames)

    @property
    def has_image(self) -> bool:
        """One image (not a frame list)."""
        return self.image is not None or self.image_bytes is not None

    @property
    def has_frames(self) -> bool:
        """An ordered frame list (a video's frames or a document's pages)."""
        return bool(self.frames)

    @property
    def has_visual(self) -> bool:
        """An image or a frame list."""
        return self.has_image or self.has_frames

    def load_image(self, max_pixels: int | None = None, max_side: int | None = None) -> Image.Image | None:
        """Return the decoded RGB image (decoding ``image_bytes`` on first use)."""
        if self.image is None and self.image_bytes is not None:
            self.image = decode_image(self.image_bytes, max_pixels=max_pixels, max_side=max_side)
        return self.image

    def load_frames(self, max_pixels: int | None = None, max_side: int | None = None) -> list[Image.Image]:
        """The decoded RGB frames (on first use; ``max_pixels`` / ``max_side`` apply to each frame).

        A frame that cannot be decoded fails the whole side as ``video_decode`` (a video with a
        broken frame is skipped, never shown with a hole); a frame over the pixel cap is
        ``image_too_large``, as an image would be.
        """
        if self.frame_images is None:
            decoded = []
            for i, (data, _ext) in enumerate(self.frames):
                try:
                    decoded.append(decode_image(data, max_pixels=max_pixels, max_side=max_side))
                except RecordError as exc:
                    reason = exc.reason if exc.reason == "image_too_large" else "video_decode"
                    detail = str(exc).removeprefix(exc.reason + ": ")
                    raise RecordError(reason, f"frame {i} of {len(self.frames)}: {detail}") from None
            self.frame_images = decoded
        return self.frame_images

    def load_visual(self, max_pixels: int | None = None, max_side: int | None = None) -> None:
        """Decode the image or the frames, whichever the side holds."""
        if self.has_image:
            self.load_image(max_pixels=max_pixels, max_side=max_side)
        elif self.has_frames:
            self.load_frames(max_pixels=max_pixels, max_side=max_side)

    def encoded_image(self) -> tuple[bytes, str] | None:
        """The image as (bytes, extension), encoding a PIL image as JPEG when no bytes are kept."""
        if self.image_bytes is not None:
            return self.image_bytes, self.image_ext
        if self.image is None:
            return None
        buf = io.BytesIO()
        self.image.convert("RGB").save(buf, format="JPEG", quality=92)
        self.image_bytes, self.image_ext = buf.getvalue(), "jpg"
        return self.image_bytes, self.image_ext

    def content_id(self) -> int:
        """A signed 64-bit hash of text + image or frame bytes: equal content, equal id (false negatives)."""
        h = hashlib.blake2b(digest_size=8)
        h.update((self.text or "").encode("utf-8"))
        h.update(b"\x00")
        enc = self.encoded_image()
        if enc is not None:
            h.update(enc[0])
        for data, _ext in self.frames:  # a text-only or one-image side hashes as it did before frames
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
        return int.from_bytes(h.digest(), "little", signed=True)


def _sniff_ext(data: bytes) -> str:
    """The file extension of encoded image bytes, from their magic number (``jpg`` when unknown)."""
    for magic, ext in ((b"\x89PNG", "png"), (b"RIFF", "webp"), (b"GIF8", "gif"), (b"BM", "bmp")):
        if data.startswith(magic):
            return ext
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return "jpg"


def compose_text(instruction: str | None, text: str | None) -> str | None:
    """The mmE5 text layout: ``{instruction}\\n{text}`` (either part may be missing)."""
    parts = [p for p in (instruction, text) if p]
    return "\n".join(parts) if parts else None


@dataclass
class Example:
    """One training sample: a query, its positive, and zero or more hard negatives."""

    id: str
    query: Side
    positive: Side
    negatives: list[Side] = field(default_factory=list)
    instruction: str | None = None
    doc_instruction: str | None = None
    task: str = "retrieval"
    modality: str = "T2T"
    lang: str = "en"
    source: str = "unknown"
    meta: dict[str, Any] = field(default_factory=dict)

    def query_side(self) -> Side:
        """The query as the encoder sees it: instruction prepended to the text."""
        q = self.query
        return replace(q, text=compose_text(self.instruction, q.text))

    def candidate_sides(self) -> list[Side]:
        """Positive first, then the hard negatives, each with ``doc_instruction`` prepended."""
        return [
            replace(s, text=compose_text(self.doc_instruction, s.text))
            for s in [self.positive, *self.negatives]
        ]


def sample_key(example_id: str) -> str:
    """A WebDataset key for an id: no dots or slashes (the key ends at the first dot)."""
    return re.sub(r"[^A-Za-z0-9_\-]", "_", example_id)


def _side_json(side: Side) -> dict[str, Any]:
    if side.has_image and side.has_frames:
        raise ValueError("a Side holds one image or a frame list, not both")
    out: dict[str, Any] = {"text": side.text, "image": side.has_image}
    if side.has_frames:
        out["frames"] = len(side.frames)
    return out


def encode_sample(example: Example) -> dict[str, Any]:
    """Example -> a WebDataset sample dict (``__key__`` plus member name -> bytes)."""
    roles = [("qry", example.query), ("pos", example.positive)] + [
        (f"neg{i}", s) for i, s in enumerate(example.negatives)
    ]
    with_frames = any(side.has_frames for _, side in roles)
    meta = {
        "schema": SCHEMA_VERSION if with_frames else BASE_SCHEMA_VERSION,
        "id": example.id,
        "source": example.source,
        "task": example.task,
        "modality": example.modality,
        "lang": example.lang,
        "instruction": example.instruction,
        "doc_instruction": example.doc_instruction,
        "qry": _side_json(example.query),
        "pos": _side_json(example.positive),
        "negs": [_side_json(s) for s in example.negatives],
        "meta": example.meta,
    }
    sample: dict[str, Any] = {
        "__key__": sample_key(example.id),
        "json": json.dumps(meta, ensure_ascii=False).encode(),
    }
    for role, side in roles:
        enc = side.encoded_image()
        if enc is not None:
            data, ext = enc
            sample[f"{role}.{ext}"] = data
        for i, (data, ext) in enumerate(side.frames):
            sample[f"{role}.f{i:03d}.{ext}"] = data
    return sample


def _check_text(value: str, where: str, name: str) -> str:
    """``value`` if it encodes as UTF-8 (a lone surrogate from a JSON escape does not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RecordError(
            "bad_text", f"{where}: field '{name}' is not valid Unicode ({exc.reason} at {exc.start})"
        ) from None
    return value


def _text_field(obj: dict[str, Any], name: str, where: str, required: bool = False) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise RecordError("missing_field", f"{where}: field '{name}' is missing")
        return None
    if not isinstance(value, str):
        raise RecordError("bad_type", f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    return _check_text(value, where, name)


def _parse_json(raw: Any, key: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw)
    except RecursionError:
        raise RecordError("bad_json", f"sample '{key}': JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError, TypeError) as exc:  # ValueError: syntax, int digit limit
        raise RecordError("bad_json", f"sample '{key}': {str(exc)[:200]}") from None


def decode_sample(
    sample: dict[str, Any],
    decode_images: bool = False,
    max_pixels: int | None = None,
    max_side: int | None = None,
) -> Example:
    """A WebDataset sample dict (raw bytes members) -> Example; raises :class:`RecordError`.

    Everything the collator relies on is checked here, so that a sample that decodes also collates:
    JSON that parses (not nested too deeply, no integer beyond Python's digit limit), fields of the
    right types, and strings that encode as UTF-8 (``bad_text``: a lone surrogate escape). Images
    stay encoded (``Side.image_bytes``) unless ``decode_images`` is set, so that decoding can happen
    later in a worker with its own limits. A side's ``"frames": N`` needs members ``<role>.f000.<ext>``
    to ``<role>.f{N-1}.<ext>``; one missing is ``missing_frame`` (frames decode as images do, see
    :meth:`Side.load_frames`).
    """
    key = _printable(str(sample.get("__key__", "?")))
    raw = sample.get("json")
    if raw is None:
        raise RecordError("missing_json", f"sample '{key}' has no .json member")
    meta = _parse_json(raw, key)
    if not isinstance(meta, dict):
        raise RecordError(
            "bad_json", f"sample '{key}': top level is {type(meta).__name__}, expected an object"
        )
    schema = meta.get("schema", SCHEMA_VERSION)
    if type(schema) is not int or not 1 <= schema <= SCHEMA_VERSION:
        raise RecordError(
            "schema_version",
            f"sample '{key}': schema {schema!r}, this reader knows 1 to "
            f"{SCHEMA_VERSION} (written by a newer mme5?)",
        )
    images: dict[str, tuple[bytes, str]] = {}
    frames: dict[str, dict[int, tuple[bytes, str]]] = {}
    for name, value in sample.items():
        if not isinstance(value, (bytes, bytearray)):
            continue
        if m := ROLE_PATTERN.match(name):
            images[m.group(1)] = (bytes(value), m.group(2))
        elif m := FRAME_PATTERN.match(name):
            frames.setdefault(m.group(1), {}).setdefault(int(m.group(2)), (bytes(value), m.group(3)))

    def side(obj: Any, role: str) -> Side:
        where = f"sample '{key}' side '{role}'"
        if not isinstance(obj, dict):
            raise RecordError("bad_type", f"{where}: expected an object, got {type(obj).__name__}")
        text = _text_field(obj, "text", where)
        wants_image = obj.get("image", False)
        if not isinstance(wants_image, bool):
            raise RecordError("bad_type", f"{where}: field 'image' must be true/false")
        s = Side(text=text)
        n_frames = obj.get("frames", 0)
        if type(n_frames) is not int or not 0 <= n_frames <= MAX_FRAMES:
            raise RecordError(
                "bad_type", f"{where}: field 'frames' must be an integer from 0 to {MAX_FRAMES}"
            )
        if n_frames and wants_image:
            raise RecordError("bad_type", f"{where}: declares both an image and {n_frames} frames")
        if n_frames:
            have = frames.get(role, {})
            missing = [i for i in range(n_frames) if i not in have]
            if missing:
                raise RecordError(
                    "missing_frame",
                    f"{where}: declares {n_frames} frames but has no {role}.f{missing[0]:03d}.<ext> member"
                    + (f" ({len(missing)} missing)" if len(missing) > 1 else ""),
                )
            s.frames = [have[i] for i in range(n_frames)]
            if decode_images:
                s.load_frames(max_pixels=max_pixels, max_side=max_side)
            else:  # headers only: a frame of another format is a counted skip here, not in the collator
                for i, (data, _ext) in enumerate(s.frames):
                    _check_frame_header(data, f"{where}: frame {i} of {n_frames}")
        if wants_image:
            if role not in images:
                raise RecordError(
                    "missing_image", f"{where}: declares an image but has no {role}.<ext> member"
                )
            s.image_bytes, s.image_ext = images[role]
            if decode_images:
                s.load_image(max_pixels=max_pixels, max_side=max_side)
        if s.text is None and not s.has_visual:
            raise RecordError("empty_side", f"{where}: neither text nor image nor frames")
        return s

    if "qry" not in meta or "pos" not in meta:
        raise RecordError("missing_field", f"sample '{key}': fields 'qry' and 'pos' are required")
    negs = meta.get("negs", [])
    if not isinstance(negs, list):
        raise RecordError("bad_type", f"sample '{key}': field 'negs' must be a list")
    where = f"sample '{key}'"
    extra = meta.get("meta")
    extra = extra if isinstance(extra, dict) else {}
    if extra:
        try:
            json.dumps(extra, ensure_ascii=False).encode("utf-8")
        except (UnicodeEncodeError, ValueError, RecursionError) as exc:
            raise RecordError("bad_text", f"{where}: field 'meta' cannot be written back: {exc}") from None
    return Example(
        id=_text_field(meta, "id", where, required=True),  # type: ignore[arg-type]
        query=side(meta["qry"], "qry"),
        positive=side(meta["pos"], "pos"),
        negatives=[side(n, f"neg{i}") for i, n in enumerate(negs)],
        instruction=_text_field(meta, "instruction", where),
        doc_instruction=_text_field(meta, "doc_instruction", where),
        task=_text_field(meta, "task", where) or "retrieval",
        modality=_text_field(meta, "modality", where) or "T2T",
        lang=_text_field(meta, "lang", where) or "en",
        source=_text_field(meta, "source", where) or "unknown",
        meta=extra,
    )


def _check_frame_header(data: bytes, where: str) -> None:
    """Refuse (``video_decode``) a frame whose header is none of :data:`IMAGE_FORMATS` (nothing decoded)."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS):
            pass
    except Image.DecompressionBombError:
        pass  # refused by size when decoded, with the reader's pixel cap (``image_too_large``)
    except Exception as exc:  # UnidentifiedImageError and whatever a damaged header raises
        raise RecordError(
            "video_decode", f"{where}: not a {', '.join(IMAGE_FORMATS)} image ({exc})"
        ) from None


def _printable(text: str, limit: int = 200) -> str:
    """``text`` safe to log: lone surrogates (from undecodable tar names) escaped, cut to ``limit``."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "..."


def decode_image(data: bytes, max_pixels: int | None = None, max_side: int | None = None) -> Image.Image:
    """Bytes (a shard member or an image file) -> RGB image, its longest side bounded by ``max_side``.

    Only :data:`IMAGE_FORMATS` are opened (never PostScript, which PIL would run Ghostscript on); an
    image of more than ``max_pixels`` pixels is refused from its header before decoding (a large JPEG
    is DCT-downscaled instead). Raises :class:`RecordError` with reason ``image_format`` (not one of
    the allowed formats), ``image_too_large`` or ``image_decode`` (anything that fails while decoding:
    PIL raises many exception types on damaged data, and every one is a skip, not a crash).
    """
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise RecordError("image_too_large", f"refused before decoding: {exc}") from None
    except Image.UnidentifiedImageError:
        head = bytes(data[:8])
        raise RecordError(
            "image_format", f"not a {', '.join(IMAGE_FORMATS)} image (starts with {head!r})"
        ) from None
    except Exception as exc:  # damaged data inside a recognised header
        raise RecordError("image_decode", f"cannot decode image: {type(exc).__name__}: {exc}") from None
    try:
        w, h = img.size
        if max_pixels is not None and w * h > max_pixels:
            if img.format == "JPEG":
                # DCT-domain downscale by 1/2, 1/4 or 1/8: the full-size image is never decoded.
                scale = next((s for s in (2, 4, 8) if (w // s) * (h // s) <= max_pixels), 8)
                img.draft("RGB", (-(-w // scale), -(-h // scale)))
                if img.size[0] * img.size[1] > max_pixels:
                    raise RecordError("image_too_large", f"{w}x{h} image exceeds {max_pixels} pixels")
            else:
                raise RecordError("image_too_large", f"{w}x{h} image exceeds {max_pixels} pixels")
        img = img.convert("RGB")
        if max_side is not None and max(img.size) > max_side:
            img.thumbnail((max_side, max_side))
    except RecordError:
        raise
    except Image.DecompressionBombError as exc:
        raise RecordError("image_too_large", f"refused before decoding: {exc}") from None
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, struct.error, IndexError, ...
        raise RecordError("image_decode", f"cannot decode image: {type(exc).__name__}: {exc}") from None
    return img


def write_tar(path: str | os.PathLike, members: Iterable[tuple[str, bytes]]) -> None:
    """Write a tar holding exactly ``members`` (name, bytes), atomically (:func:`mme5.atomic.atomic_open`:
    a unique temp file beside ``path``, fsynced, then renamed; removed if writing fails)."""
    now = int(time.time())
    with atomic_open(path, "wb") as handle, tarfile.open(fileobj=handle, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = now
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


def write_shard(path: str | os.PathLike, examples: Iterable[Example]) -> int:
    """Write one shard of Examples atomically; returns the number of samples."""
    n = 0

    def members() -> Iterator[tuple[str, bytes]]:
        nonlocal n
        for ex in examples:
            sample = encode_sample(ex)
            key = sample.pop("__key__")
            for ext, data in sample.items():
                yield f"{key}.{ext}", data
            n += 1

    write_tar(path, members())
    return n


def parse_sizes(data: bytes | str, where: str) -> dict[str, int]:
    """The ``{shard name: samples}`` mapping of a ``sizes.json``; :class:`ShardError` naming ``where``
    when it is cut short, not JSON, or not an object of non-negative integers."""
    try:
        sizes = json.loads(data)
    except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError
        raise ShardError(
            "bad_sizes", f"{where} is not valid JSON ({str(exc)[:120]}); delete it to have the shards counted"
        ) from None
    if not isinstance(sizes, dict) or not all(
        isinstance(k, str) and type(v) is int and v >= 0 for k, v in sizes.items()
    ):
        raise ShardError(
            "bad_sizes",
            f"{where} must map shard file names to sample counts (non-negative integers); "
            "delete it to have the shards counted",
        )
    return sizes


def read_sizes(folder: str | os.PathLike) -> dict[str, int]:
    """``sizes.json`` of a shard folder (empty dict if absent); :class:`ShardError` (one line naming
    the file) when it exists but is damaged (see :func:`parse_sizes`)."""
    p = Path(folder) / SIZES_FILE
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ShardError("bad_sizes", f"cannot read {p}: {exc}") from None
    return parse_sizes(data, str(p))


def write_sizes(folder: str | os.PathLike, sizes: dict[str, int]) -> None:
    """Write ``sizes.json`` atomically (a unique temp file, so concurrent writers never collide)."""
    write_text(Path(folder) / SIZES_FILE, json.dumps(dict(sorted(sizes.items())), indent=1))


class ShardSetWriter:
    """Writes Examples into numbered shards ``<prefix>-000000.tar`` ... and keeps ``sizes.json`` current.

    Each shard is written atomically when full (or on :meth:`close`), so a killed writer leaves only
    complete shards behind; ``start_shard`` lets a resumed writer continue the numbering.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        prefix: str = "shard",
        samples_per_shard: int = 1000,
        start_shard: int = 0,
    ):
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.samples_per_shard = samples_per_shard
        self.shard_index = start_shard
        self.sizes = read_sizes(self.folder)
        self._pending: list[Example] = []
        self.written: list[Path] = []

    def shard_path(self, index: int) -> Path:
        return self.folder / f"{self.prefix}-{index:06d}.tar"

    def write(self, example: Example) -> None:
        self._pending.append(example)
        if len(self._pending) >= self.samples_per_shard:
            self.flush()

    def flush(self) -> None:
        """Write the pending samples as one shard (no-op when none are pending)."""
        if not self._pending:
            return
        path = self.shard_path(self.shard_index)
        n = write_shard(path, self._pending)
        self.sizes[path.name] = n
        write_sizes(self.folder, self.sizes)
        self.written.append(path)
        self._pending = []
        self.shard_index += 1

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()


# ---- reading shards -------------------------------------------------------------------------------

#: Shard-level problems :func:`iter_shard` reports (sample-level ones are ``RecordError`` reasons).
SHARD_OPEN = "shard_open"  # the shard could not be opened (missing file, failing pipe, HTTP error)
TRUNCATED_TAR = "truncated_tar"  # the tar ended or broke mid-stream; the sample being read is lost
EMPTY_SHARD = "empty_shard"  # the shard opened but held no sample
STRAY_MEMBER = "stray_member"  # a member not named ``<key>.<ext>``, or of a key without ``<key>.json``
#: Sample-level problems :func:`iter_shard` finds in the tar itself (the sample is not yielded).
DUPLICATE_KEY = "duplicate_key"  # a key seen before in the shard: the first sample is kept
LINK_MEMBER = "link_member"  # a symlink or hardlink member (never followed)
MEMBER_TOO_LARGE = "member_too_large"  # a member over ``max_member_bytes``: its sample is dropped unread
#: Reasons that concern the whole shard (the others concern members or samples within it).
SHARD_PROBLEMS = (SHARD_OPEN, TRUNCATED_TAR, EMPTY_SHARD)

#: ``(reason, message, samples affected)``: where :func:`iter_shard` reports a problem.
ProblemSink = Callable[[str, str, int], None]
_URL = re.compile(r"^(pipe:|[A-Za-z][A-Za-z0-9+.\-]*://)")


class ShardError(Mme5Error, OSError):
    """A shard that cannot be read (raised by :func:`iter_shard` when no problem sink is given)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def is_url(spec: str | os.PathLike) -> bool:
    """True for a URL or command webdataset opens (``http://``, ``s3://``, ``pipe:``...), not a local path."""
    return isinstance(spec, str) and _URL.match(spec) is not None


def local_name(path: str | os.PathLike) -> str:
    """A found local file name as a string that :func:`is_url` never takes for a URL (``./pipe:x.tar``)."""
    name = os.fspath(path)
    return os.path.join(".", name) if is_url(name) else name


def _raise(reason: str, message: str, n: int = 1) -> None:
    raise ShardError(reason, message)


@dataclass
class _Group:
    """The members of one key while :func:`iter_shard` reads them."""

    sample: dict[str, Any]
    duplicate: bool
    exts: list[str] = field(default_factory=list)
    too_large: str | None = None


def iter_shard(
    url: str | os.PathLike,
    problems: ProblemSink | None = None,
    expected: int | None = None,
    contents: bool = True,
    max_member_bytes: int | None = MAX_MEMBER_BYTES,
) -> Iterator[dict[str, Any]]:
    """The raw samples of one shard, streamed: ``__key__``, ``__url__`` and member extension -> bytes.

    A path (or a string that is not a URL, see :func:`is_url`) is opened as a local file; only a URL
    goes to webdataset's ``gopen``. Problems go to ``problems(reason, message, n)`` and never raise;
    without a sink the first one raises :class:`ShardError`. An unopenable shard, a tar that breaks
    mid-stream and an empty one are reported; ``expected`` (from ``sizes.json``) also catches a tar cut
    at a header boundary, which the tar reader takes for a normal end, and ``truncated_tar`` counts the
    samples lost (one when the expected count is unknown). ``contents=False`` yields keys only and, for
    a local file, reads the tar headers only (counting samples).

    A sample is the consecutive members of one key that include ``<key>.json``; what is not part of
    one is reported and never yielded, in both modes, so counting and reading agree: members of a key
    without a ``.json`` and badly named members (``stray_member``), a key seen before in this shard,
    twice in a row or far apart (``duplicate_key``: the first sample is kept, never overwritten), symlink
    and hardlink members (``link_member``), and samples with a member over ``max_member_bytes``
    (``member_too_large``: the member is skipped unread, None disables the cap).
    """
    report = problems or _raise
    label = os.fspath(url)
    shown = _printable(label)
    local = not is_url(url)
    try:
        if local:
            stream: Any = open(url, "rb")  # noqa: SIM115 - closed in the finally below
        else:
            from webdataset.gopen import gopen

            stream = gopen(label, "rb")
    except Exception as exc:  # any opener failure (missing file, HTTP, pipe) is a problem
        report(SHARD_OPEN, f"cannot open shard '{shown}': {exc}", 1)
        return
    n = 0
    group: _Group | None = None
    seen: set[str] = set()

    def finished(g: _Group) -> dict[str, Any] | None:
        key = _printable(g.sample["__key__"])
        if g.duplicate:
            report(DUPLICATE_KEY, f"key '{key}' appears again in '{shown}'; its first sample is kept", 1)
        elif g.too_large is not None:
            report(MEMBER_TOO_LARGE, f"sample '{key}' of '{shown}' dropped: {g.too_large}", 1)
        elif "json" not in g.exts:
            names = ", ".join(f"{key}.{_printable(e, 40)}" for e in g.exts[:4])
            report(STRAY_MEMBER, f"'{shown}': {names} belong to no sample (no {key}.json)", len(g.exts))
        else:
            return g.sample
        return None

    clean = False  # read to the end without a reported problem (only then is a failing close news)
    try:
        mode = "r:*" if local and not contents else "r|*"  # random access skips the data of a local file
        with tarfile.open(fileobj=stream, mode=mode) as tar:
            for info in tar:
                if info.issym() or info.islnk():
                    report(LINK_MEMBER, f"link member '{_printable(info.name)}' of '{shown}' ignored", 1)
                    continue
                if not info.isfile():
                    if not info.isdir():
                        report(STRAY_MEMBER, f"member '{_printable(info.name)}' of '{shown}' is no file", 1)
                    continue
                key, dot, ext = os.path.basename(info.name).partition(".")
                if not dot or not key or not ext:
                    report(
                        STRAY_MEMBER,
                        f"member '{_printable(info.name)}' of '{shown}' is not named <key>.<ext>",
                        1,
                    )
                    continue
                if group is not None and (group.sample["__key__"] != key or ext in group.exts):
                    done, group = finished(group), None
                    if done is not None:
                        n += 1
                        yield done
                if group is None:
                    group = _Group({"__key__": key, "__url__": label}, duplicate=key in seen)
                    seen.add(key)
                group.exts.append(ext)
                if group.duplicate or group.too_large is not None:
                    continue
                if max_member_bytes is not None and info.size > max_member_bytes:
                    group.too_large = (
                        f"member '{_printable(info.name)}' has {info.size} bytes, over the cap of "
                        f"{max_member_bytes} (max_member_bytes)"
                    )
                    continue
                if contents:
                    f = tar.extractfile(info)
                    group.sample[ext] = f.read() if f is not None else b""
            last, group = group, None
            if last is not None and (done := finished(last)) is not None:
                n += 1
                yield done
        if n == 0 and not expected:
            report(EMPTY_SHARD, f"shard '{shown}' holds no sample", 1)
        if expected is not None and n < expected:
            report(
                TRUNCATED_TAR,
                f"shard '{shown}' ends after {n} of its {expected} samples ({SIZES_FILE})",
                expected - n,
            )
        else:
            clean = True
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
        if isinstance(exc, ShardError):
            raise
        if n == 0 and group is None:
            report(SHARD_OPEN, f"shard '{shown}' is not a readable tar: {exc}", 1)
        else:
            lost = f" (sample '{_printable(group.sample['__key__'])}' lost)" if group is not None else ""
            report(
                TRUNCATED_TAR,
                f"shard '{shown}' is damaged after {n} sample(s){lost}: {exc}",
                max(1, expected - n) if expected is not None else 1,
            )
    finally:
        try:
            stream.close()
        except Exception as exc:  # a pipe's exit status surfaces here
            if clean:
                report(SHARD_OPEN, f"closing shard '{shown}' failed: {exc}", 1)
