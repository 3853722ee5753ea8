"""``mme5 convert`` on VLM2Vec-V2's training layouts (video frame folders, visual documents).

Fixtures are written with pyarrow, json and PIL (never the project's writer), in the layouts
TIGER-AI-Lab/VLM2Vec at 6e1e1d4 reads; the expected texts are written from its loaders, cited per test.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mme5.data.convert import (
    QA_QUERY_PROMPT,
    VISRAG_QUERY_PROMPTS,
    VISRAG_TARGET_PROMPTS,
    VRET_QRY_PROMPT,
    VRET_TGT_PROMPT,
    ConvertError,
    convert,
    detect_v2_layout,
    sample_frame_names,
)
from mme5.records import PUBLIC_IMAGE_TOKEN, decode_sample, iter_shard


def jpeg(rng: random.Random, size: tuple[int, int] = (24, 16)) -> bytes:
    im = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    im.paste(tuple(rng.randrange(256) for _ in range(3)), (2, 2, size[0] // 2, size[1] // 2))
    buf = io.BytesIO()
    im.save(buf, format="JPEG")
    return buf.getvalue()


def examples_of(folder: Path):
    return [decode_sample(s) for tar in sorted(folder.glob("*.tar")) for s in iter_shard(tar)]


@pytest.mark.parametrize("n", [1, 2, 5, 8, 9, 13, 31, 64])
@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_frame_sampling_is_vlm2vecs_linspace(n: int, k: int):
    """``vision_utils.py:232-284``: natural sort, ``.jpg/.jpeg/.png`` only (line 21), then
    ``np.linspace(0, n - 1, k, dtype=int)`` when ``k <= n``, else every frame."""
    names = [f"frame_{i}.jpg" for i in range(n)] + ["notes.txt", "clip.mp4"]
    random.Random(n * 100 + k).shuffle(names)
    ordered = [f"frame_{i}.jpg" for i in range(n)]  # natural order: frame_2 before frame_10
    expected = [ordered[i] for i in np.linspace(0, n - 1, k, dtype=int)] if k <= n else ordered
    assert sample_frame_names(names, k) == expected


def _llavahound(tmp_path: Path, rows: list[dict], frames: dict[str, int]) -> tuple[Path, Path]:
    """A LLaVA-Hound set as ``llavahound_dataset_caption.py`` reads it: a JSONL of ``id``, ``video``,
    ``conversations`` (lines 35, 83) and one frame folder per video under the frame root (line 39)."""
    rng = random.Random(1)
    root = tmp_path / "train_300k"
    for video, count in frames.items():
        (root / video).mkdir(parents=True)
        for i in range(count):
            (root / video / f"c01_{i + 1}.jpg").write_bytes(jpeg(rng))
    data = tmp_path / "video_caption_300k.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data, root


def _rows() -> list[dict]:
    return [
        {
            "id": f"v{i}",
            "video": f"vid{i}",
            "conversations": [
                {"from": "human", "value": f"<video>\nDescribe video {i}."},
                {"from": "gpt", "value": f"A person does thing {i}."},
            ],
        }
        for i in range(3)
    ]


def test_llavahound_caption_gives_caption_and_video_retrieval_subsets(tmp_path):
    """``llavahound_dataset_caption.py:10-25, 37-62``: caption retrieval (frames + first turn with
    ``<video>`` replaced -> second turn) and video retrieval (``VRET_QRY_PROMPT`` + caption ->
    ``VRET_TGT_PROMPT`` + the video); a row whose frame folder is empty is skipped (line 40)."""
    rows = _rows()
    data, root = _llavahound(tmp_path, rows, {"vid0": 12, "vid1": 3})  # vid2 has no frames
    (root / "vid2").mkdir()
    assert detect_v2_layout(data) == ("llavahound-caption", [data])
    reports = convert([data], tmp_path / "out", image_root=str(root), progress=False)
    assert [r.source for r in reports] == ["video_caption_300k", "video_caption_300k-video"]
    for r in reports:
        assert r.rows_in == 3 and r.samples_out == 2 and r.skipped == {"missing_frame": 1} and r.balanced
    caption = examples_of(tmp_path / "out" / "video_caption_300k")
    assert caption[0].query.text == f"{PUBLIC_IMAGE_TOKEN}\nDescribe video 0."
    assert caption[0].positive.text == "A person does thing 0." and not caption[0].negatives
    names = sample_frame_names([f"c01_{i + 1}.jpg" for i in range(12)], 8)
    assert [f[0] for f in caption[0].query.frames] == [(root / "vid0" / n).read_bytes() for n in names]
    assert len(caption[1].query.frames) == 3  # fewer than 8: all of them
    video = examples_of(tmp_path / "out" / "video_caption_300k-video")
    assert video[0].query.text == VRET_QRY_PROMPT + "A person does thing 0." and not video[0].query.has_frames
    assert video[0].positive.text == VRET_TGT_PROMPT + PUBLIC_IMAGE_TOKEN
    assert video[0].positive.frames == caption[0].query.frames and video[0].modality == "T2V"
    report = json.loads((tmp_path / "out" / "convert_report.json").read_text())
    assert report["balanced"] and report["skipped"] == {"missing_frame": 2}


def test_llavahound_qa_and_bad_frames_are_counted(tmp_path):
    """``llavahound_dataset_qa.py:10-17, 28-42``: ``QA_QUERY_PROMPT`` + the first turn, answer as the
    positive. A frame that is no image is ``video_decode``; a line that is no JSON ``bad_json``."""
    data, root = _llavahound(tmp_path, _rows(), {"vid0": 4, "vid1": 2, "vid2": 2})
    (root / "vid1" / "c01_2.jpg").write_bytes(b"not a jpeg")
    data.write_text(data.read_text() + "{broken\n")
    reports = convert([data], tmp_path / "out", image_root=str(root), dataset="llavahound-qa", progress=False)
    (r,) = reports
    assert r.rows_in == 4 and r.samples_out == 2 and r.skipped == {"video_decode": 1, "bad_json": 1}
    ex = examples_of(tmp_path / "out" / "video_caption_300k")[0]
    assert ex.query.text == QA_QUERY_PROMPT + f"{PUBLIC_IMAGE_TOKEN}\nDescribe video 0." and ex.task == "vqa"
    assert len(ex.query.frames) == 4
    with pytest.raises(ConvertError, match="frame folders"):
        convert([data], tmp_path / "out2", progress=False)  # no frame root


def _image_struct(rng: random.Random) -> dict:
    return {"bytes": jpeg(rng, (40, 30)), "path": None}


def test_vidore_colpali_train_set(tmp_path):
    """``vidore_dataset.py:12-17, 26-46, 87``: parquet rows ``query``, ``image`` ({bytes, path}),
    ``image_filename``, ``answer``, ...; query ``f"{image_token} {query}"`` with the page, the answer
    as the positive, ``prompt`` ignored (line 28)."""
    rng = random.Random(2)
    table = pa.table(
        {
            "query": ["What is the total?", "Who signed?"],
            "image": [_image_struct(rng), {"bytes": b"", "path": None}],
            "image_filename": ["a.png", "b.png"],
            "answer": ["42", "Ann"],
            "source": ["pdf", "pdf"],
            "options": [None, None],
            "page": ["1", "2"],
            "model": ["m", "m"],
            "prompt": ["a long prompt", "a long prompt"],
            "answer_type": ["num", "str"],
        }
    )
    folder = tmp_path / "colpali_train_set" / "data"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "train-00000-of-00001.parquet")
    assert detect_v2_layout(tmp_path / "colpali_train_set")[0] == "vidore"  # type: ignore[index]
    (r,) = convert([tmp_path / "colpali_train_set"], tmp_path / "out", progress=False)
    assert r.rows_in == 2 and r.samples_out == 1 and r.skipped == {"missing_image": 1}
    ex = examples_of(tmp_path / "out" / "colpali_train_set")[0]
    assert ex.query.text == f"{PUBLIC_IMAGE_TOKEN} What is the total?" and ex.positive.text == "42"
    assert ex.query.image_bytes == table.column("image")[0].as_py()["bytes"]


def test_visrag_in_domain(tmp_path):
    """``visrag_dataset.py:10-40, 48-67``: rows ``query``, ``image``, ``source``; query
    ``f"{prompt} {query} "`` (its source's prompt), positive ``f"{target prompt} {image_token}"`` with the
    page (an unknown source has no prompts: ``f"{query} "`` and ``f" {image_token}"``)."""
    rng = random.Random(3)
    table = pa.table(
        {
            "query": ["how do I reset it?", "what grows fastest?"],
            "image": [_image_struct(rng), _image_struct(rng)],
            "source": ["Manuallib", "somewhere else"],
        }
    )
    path = tmp_path / "VisRAG-Indomain-data.parquet"
    pq.write_table(table, path)
    (r,) = convert([path], tmp_path / "out", progress=False)
    assert r.samples_out == 2 and r.balanced
    a, b = examples_of(tmp_path / "out" / "VisRAG-Indomain-data")
    assert a.query.text == f"{VISRAG_QUERY_PROMPTS['Manuallib']} how do I reset it? "
    assert a.positive.text == f"{VISRAG_TARGET_PROMPTS['Manuallib']}  {PUBLIC_IMAGE_TOKEN}"
    assert a.positive.image_bytes == table.column("image")[0].as_py()["bytes"] and not a.query.has_visual
    assert b.query.text == "what grows fastest? " and b.positive.text == f" {PUBLIC_IMAGE_TOKEN}"


def test_mme5_convert_takes_the_v2_sets_and_num_frames(tmp_path, capsys):
    """The verb's ``--dataset`` choices and ``--num_frames`` are the library's: ``llavahound-qa`` (which
    auto-detection cannot tell from caption rows) is chosen on the command line, 2 frames per video."""
    from mme5.cli.main import main

    data, root = _llavahound(tmp_path, _rows(), {"vid0": 6, "vid1": 5, "vid2": 3})
    out = tmp_path / "out"
    argv = ["convert", str(data), str(out), "--image_root", str(root), "--dataset", "llavahound-qa"]
    assert main([*argv, "--num_frames", "2", "--progress", "false"]) == 0
    assert "samples out 3" in capsys.readouterr().out
    examples = examples_of(out / "video_caption_300k")
    assert [len(ex.query.frames) for ex in examples] == [2, 2, 2] and examples[0].task == "vqa"
