"""Video frames as VLM2Vec's V2 evaluation reads them, and their combination into one image.

Frame folders (TIGER-AI-Lab/VLM2Vec at 6e1e1d4, ``src/utils/vision_utils/vision_utils.py``):

- ``load_frames`` (lines 232-251): the files of the folder with an image extension (``.jpg``,
  ``.jpeg``, ``.png``, line 21), sorted by a natural key (digit runs compared as numbers, line 238);
  an absent folder gives no frames (line 241).
- ``sample_frames`` (lines 254-270): ``np.linspace(0, n - 1, num_frames, dtype=int)`` picks the frames;
  when the folder holds fewer than ``num_frames`` frames the list is topped up with the last picked
  frame (lines 267-269). ``process_video_frames`` (lines 273-284) samples only when
  ``num_frames <= len(frames)``, so a short video keeps all its frames.
- ``save_frames`` (lines 287-314) writes ``frame_%04d.jpg`` with ffmpeg when a folder has no frames;
  mme5 reads frame folders only (no video decoding).

What the encoder sees. The official collator hands a video to the processor as a list of frames
(``src/data/collator/eval_collator.py`` lines 144-179): Qwen2-VL-style backbones take it as their video
input (``src/model/processor.py`` line 414, ``processor(videos=[images])``), image-only backbones as a
multi-image input (``processor.py`` line 224, ``processor(images=images)``). mme5 gives the encoder
the sampled frames as a frame-list :class:`mme5.records.Side` (``frame_input="frames"``, the
default; each adapter formats it as its frame input, one image per frame), or, for an encoder that
takes one image only, tiled into one image in temporal order, row-major (``frame_input="tiled"``,
:func:`tile_frames`), which is not the official input. The tiled image is written in both modes: it
is the item's file on disk (its path and mtime key the embedding cache), and in ``frames`` mode its
pixels map back to the frame files (:func:`pixel_key`).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import re
from pathlib import Path

import numpy as np
from PIL import Image

from mme5.atomic import atomic_open

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # vision_utils.py line 21


def _natural_key(name: str) -> list:
    # vision_utils.py line 238
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def load_frames(folder: str | Path) -> list[Path]:
    """The frame files of a folder in natural order ([] when the folder is absent)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = sorted((p.name for p in folder.iterdir()), key=_natural_key)
    return [folder / n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS]


def sample_frames(frames: list[Path], num_frames: int) -> list[Path]:
    """``num_frames`` frames spread as ``np.linspace(0, n - 1, num_frames, dtype=int)``; all of them when
    there are fewer (``process_video_frames``, vision_utils.py lines 280-284)."""
    if num_frames == 0:
        return []
    if num_frames > len(frames):
        return list(frames)
    idx = np.linspace(0, len(frames) - 1, num_frames, dtype=int).tolist()
    return [frames[i] for i in idx]


def frame_gaps(frames: list[Path]) -> list[int]:
    """Frame numbers missing from a folder whose files are numbered (``frame_0001.jpg`` ...): the gaps
    between the first and the last number, at the folder's own stride (the gcd of the steps, so that
    frames saved every k-th are not gaps). [] when the names carry no number."""
    numbers = []
    for p in frames:
        found = re.findall(r"\d+", p.stem)
        if not found:
            return []
        numbers.append(int(found[-1]))
    if not numbers:
        return []
    present = sorted(set(numbers))
    diffs = [b - a for a, b in itertools.pairwise(present)]
    stride = math.gcd(*diffs) if diffs else 1  # frames saved every k-th are numbered k apart
    have = set(present)
    return [n for n in range(present[0], present[-1] + 1, stride) if n not in have]


def tile_frames(frames: list[Path], max_pixels: int) -> bytes:
    """PNG bytes of the frames tiled row-major into a near-square grid of equal tiles (the first
    frame's size, scaled down so that the grid stays within ``max_pixels``)."""
    images = []
    for p in frames:
        with Image.open(p) as im:
            images.append(im.convert("RGB"))
    n = len(images)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    w, h = images[0].size
    scale = min(1.0, math.sqrt(max_pixels / float(cols * rows * w * h)))
    tw, th = max(1, int(w * scale)), max(1, int(h * scale))
    grid = Image.new("RGB", (cols * tw, rows * th))
    for i, im in enumerate(images):
        if im.size != (tw, th):
            im = im.resize((tw, th), Image.Resampling.BILINEAR)
        grid.paste(im, ((i % cols) * tw, (i // cols) * th))
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return buf.getvalue()


def pixel_key(image: Image.Image) -> bytes:
    """A key of an image's RGB pixels (a tiled image read back from its PNG gives the same key)."""
    rgb = image.convert("RGB")
    return hashlib.blake2b(f"{rgb.size}".encode() + rgb.tobytes(), digest_size=16).digest()


def write_tiled(frames: list[Path], out_dir: Path, max_pixels: int) -> Path:
    """Write the tiled frames under ``out_dir`` (named by the frame paths and sizes) and return the
    file; an existing file with the same bytes is kept (its mtime keys the embedding cache)."""
    h = hashlib.blake2b(digest_size=12)
    for p in frames:
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    h.update(str(max_pixels).encode())
    path = out_dir / f"{h.hexdigest()}.png"
    if path.is_file():
        return path
    data = tile_frames(frames, max_pixels)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        f.write(data)
    return path
