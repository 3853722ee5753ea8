"""A small MMEB-V2-layout corpus, drawn: frame sequences of moving shapes and document pages.

``build_v2_demo(root)`` writes, once, three video tasks (MSR-VTT: text -> video, global; K700: video ->
class name, global over a label corpus; SmthSmthV2: video -> class name among the row's own candidates,
local) and one visual-document task (ViDoRe_arxivqa: query -> page, graded qrels, global) in the
layout :mod:`mme5.eval.v2.readers` reads. Image tasks come from the demo's MMEB folder
(:func:`mme5.demo.open_demo_corpus`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from PIL import Image, ImageDraw

from mme5.atomic import write_text

V2_DEMO_VERSION = 1
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 190),
    "orange": (240, 140, 30),
}
MOTIONS = ("left to right", "top to bottom", "right to left", "bottom to top")
VIDEO_INST = "<|image_1|> Understand the content of the provided video."  # msrvtt_dataset.py:11
CLS_INST = "<|image_1|> Recognize the motion of the shape in the video."
FRAMES = 10
SIZE = 48


def _frames(folder: Path, color: tuple[int, int, int], motion: str, n: int = FRAMES) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        t = i / max(1, n - 1)
        pos = int(4 + t * (SIZE - 20))
        x, y = {
            "left to right": (pos, 16),
            "right to left": (SIZE - 16 - pos, 16),
            "top to bottom": (16, pos),
            "bottom to top": (16, SIZE - 16 - pos),
        }[motion]
        im = Image.new("RGB", (SIZE, SIZE), (245, 245, 245))
        ImageDraw.Draw(im).rectangle([x, y, x + 12, y + 12], fill=color)
        im.save(folder / f"frame_{i + 1:04d}.jpg", quality=95)


def _page(path: Path, topic: str, color: tuple[int, int, int], bars: int) -> None:
    im = Image.new("RGB", (96, 128), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.rectangle([6, 6, 90, 20], fill=color)
    d.text((8, 24), topic[:14], fill=(0, 0, 0))
    for b in range(bars):
        d.rectangle([10 + 14 * b, 110 - 12 * (b + 1), 20 + 14 * b, 110], fill=color)
    im.save(path)


def _jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def build_v2_demo(root: str | os.PathLike) -> Path:
    """Write the V2 demo under ``root`` (kept when its version file matches); returns ``root``."""
    root = Path(root)
    stamp = root / "v2_demo.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("version") == V2_DEMO_VERSION:
        return root
    videos = [(c, m) for c in COLORS for m in MOTIONS[:2]]
    # MSR-VTT: caption -> video, ranked against every video (global)
    ret = root / "video-tasks/frames/video_ret/MSR-VTT"
    rows = []
    for i, (c, m) in enumerate(videos):
        _frames(ret / f"video{i}", COLORS[c], m)
        rows.append(
            {
                "query_text": f"Find a video that contains the following visual content: a {c} square "
                f"moving {m}",
                "query_video": "",
                "cand_text": [VIDEO_INST],
                "cand_video": [f"video{i}"],
                "cand_names": [f"video{i}"],
                "label_name": f"video{i}",
            }
        )
    _jsonl(root / "video-tasks/MSR-VTT.jsonl", rows)
    # K700 / SmthSmthV2: video -> motion class (global over the label corpus / local candidates)
    for task, folder in (("K700", "K700"), ("SmthSmthV2", "SSv2")):
        base = root / f"video-tasks/frames/video_cls/{folder}"
        rows = []
        for i, (c, m) in enumerate((c, m) for c in COLORS for m in MOTIONS):
            _frames(base / f"clip{i}", COLORS[c], m)
            label = f"a shape moving {m}"
            others = [f"a shape moving {o}" for o in MOTIONS if o != m]
            cands = [label, *others] if task == "SmthSmthV2" else [label]
            rows.append(
                {
                    "query_text": CLS_INST,
                    "query_video": f"clip{i}",
                    "cand_text": cands,
                    "cand_video": [""] * len(cands),
                    "cand_names": cands,
                    "label_name": label,
                }
            )
        _jsonl(root / f"video-tasks/{task}.jsonl", rows)
    corpus = [
        {"cand_name": f"a shape moving {m}", "cand_text": f"a shape moving {m}", "cand_video": ""}
        for m in MOTIONS
    ]
    _jsonl(root / "video-tasks/K700.corpus.jsonl", corpus)
    # ViDoRe_arxivqa: query -> page, graded qrels (2: the page, 1: a page of the same colour)
    docs = root / "visdoc-tasks/ViDoRe_arxivqa"
    docs.mkdir(parents=True, exist_ok=True)
    pages, queries, qrels = [], [], []
    for i, c in enumerate(COLORS):
        for bars in (1, 3):
            pid = f"p{i}_{bars}"
            _page(docs / f"{pid}.png", f"{c} {bars} bars", COLORS[c], bars)
            pages.append({"corpus-id": pid})
        queries.append({"query-id": f"q{i}", "query": f"the {c} chart with 3 bars"})
        qrels += [
            {"query-id": f"q{i}", "corpus-id": f"p{i}_3", "score": 2},
            {"query-id": f"q{i}", "corpus-id": f"p{i}_1", "score": 1},
        ]
    _jsonl(docs / "queries.jsonl", queries)
    _jsonl(docs / "qrels.jsonl", qrels)
    _jsonl(docs / "corpus.jsonl", pages)
    write_text(stamp, json.dumps({"version": V2_DEMO_VERSION}))
    return root
