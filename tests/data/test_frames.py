"""Frame lists (video frames, document pages): shard round trip, counted skips, and what the collator
hands each tiny twin family."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from mme5.backbones import TINY_NAMES, BackboneError
from mme5.data import ShardDataModule, ShardSet
from mme5.data.collate import Collator
from mme5.data.skips import DataError
from mme5.model.encoder import Encoder
from mme5.records import (
    BASE_SCHEMA_VERSION,
    MAX_FRAMES,
    SCHEMA_VERSION,
    Example,
    RecordError,
    Side,
    decode_sample,
    encode_sample,
    iter_shard,
    write_shard,
)
from tests.helpers.shard_fixtures import list_collate, make_example


def frame(rng: random.Random, size: tuple[int, int] = (40, 30)) -> Image.Image:
    """A random-coloured frame with a random rectangle (never a blank image)."""
    im = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    x, y = rng.randrange(size[0] // 2), rng.randrange(size[1] // 2)
    im.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, x + size[0] // 3, y + size[1] // 3))
    return im


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def video_example(ident: str, seed: int = 0, frames: int = 3) -> Example:
    rng = random.Random(seed)
    return Example(
        id=ident,
        query=Side.from_frames([png(frame(rng)) for _ in range(frames)], "<|image_1|>\nwhat happens?"),
        positive=Side(f"a caption for {ident}"),
        negatives=[Side.from_frames([frame(rng), frame(rng)], "pages"), Side("a text negative")],
        instruction="Find the caption of the video.",
        task="retrieval",
        modality="V2T",
        source="video-test",
    )


def _raw_members(ex: Example) -> list[tuple[str, bytes]]:
    sample = encode_sample(ex)
    key = sample.pop("__key__")
    return [(f"{key}.{ext}", data) for ext, data in sample.items()]


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A tar written with plain ``tarfile`` (not the project's writer)."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_frames_round_trip_through_write_iter_and_decode(tmp_path):
    ex = video_example("v0")
    write_shard(tmp_path / "s.tar", [ex, make_example("plain")])
    raw = list(iter_shard(tmp_path / "s.tar"))
    assert sorted(k for k in raw[0] if not k.startswith("__")) == [
        "json",
        "neg0.f000.jpg",
        "neg0.f001.jpg",
        "qry.f000.png",
        "qry.f001.png",
        "qry.f002.png",
    ]
    meta = json.loads(raw[0]["json"])
    assert meta["schema"] == SCHEMA_VERSION == 2 and meta["qry"] == {
        "text": "<|image_1|>\nwhat happens?",
        "image": False,
        "frames": 3,
    }
    # a sample without frames keeps schema 1, which readers from before frame lists still read
    assert json.loads(raw[1]["json"])["schema"] == BASE_SCHEMA_VERSION == 1
    back = decode_sample(raw[0])
    assert [f for f in back.query.frames] == ex.query.frames  # bytes and extensions, in order
    assert back.negatives[0].frames == ex.negatives[0].frames and not back.negatives[1].has_frames
    assert back.query.content_id() == ex.query.content_id()
    assert back.query_side().frames == ex.query.frames and (back.query_side().text or "").startswith(
        "Find the"
    )
    decoded = decode_sample(raw[0], decode_images=True, max_side=20)
    frames = decoded.query.frame_images
    assert frames is not None and [f.size for f in frames] == [(20, 15)] * 3
    rng = random.Random(0)
    originals = [frame(rng) for _ in range(3)]
    small = [o.copy() for o in originals]
    for s in small:
        s.thumbnail((20, 20))
    assert [f.tobytes() for f in frames] == [s.tobytes() for s in small]  # PNG frames are lossless
    # content ids tell frame order apart
    swapped = Side(ex.query.text, frames=ex.query.frames[::-1])
    assert swapped.content_id() != ex.query.content_id()


def test_old_schema_1_samples_still_read():
    meta = {
        "schema": 1,
        "id": "old",
        "qry": {"text": "q", "image": False},
        "pos": {"text": "p", "image": False},
    }
    ex = decode_sample({"__key__": "old", "json": json.dumps(meta).encode()})
    assert ex.query.text == "q" and not ex.query.has_frames


def test_missing_or_bad_frames_are_refused_by_reason():
    raw = dict(encode_sample(video_example("v1")))
    del raw["qry.f001.png"]
    with pytest.raises(RecordError) as info:
        decode_sample(raw)
    assert info.value.reason == "missing_frame" and "qry.f001" in str(info.value)
    raw = dict(encode_sample(video_example("v2")))
    raw["qry.f001.png"] = b"GIF89a\x01"  # not a frame format at all: refused from the header already
    with pytest.raises(RecordError) as info:
        decode_sample(raw)
    assert info.value.reason == "video_decode" and "frame 1 of 3" in str(info.value)
    raw = dict(encode_sample(video_example("v2")))
    good = raw["qry.f002.png"]
    raw["qry.f002.png"] = good[:60]  # a valid header, damaged data
    assert decode_sample(raw).query.has_frames  # frames stay encoded until asked for
    with pytest.raises(RecordError) as info:
        decode_sample(raw, decode_images=True)
    assert info.value.reason == "video_decode" and "frame 2 of 3" in str(info.value)
    raw = dict(encode_sample(video_example("v3")))
    with pytest.raises(RecordError) as info:
        decode_sample(raw, decode_images=True, max_pixels=100)
    assert info.value.reason == "image_too_large"  # the pixel cap holds per frame
    raw["qry.f000.png"] = b"%!PS-Adobe-3.0\n"  # PostScript is never handed to PIL's Ghostscript plugin
    with pytest.raises(RecordError) as info:
        decode_sample(raw, decode_images=True)
    assert info.value.reason == "video_decode" and "not a JPEG" in str(info.value)
    for bad in (-1, MAX_FRAMES + 1, "3", True):
        meta = json.loads(encode_sample(video_example("v4"))["json"])
        meta["qry"]["frames"] = bad
        with pytest.raises(RecordError) as info:
            decode_sample({"__key__": "v4", "json": json.dumps(meta).encode()})
        assert info.value.reason == "bad_type"
    meta = json.loads(encode_sample(video_example("v5"))["json"])
    meta["qry"]["image"] = True
    with pytest.raises(RecordError) as info:
        decode_sample({**encode_sample(video_example("v5")), "json": json.dumps(meta).encode()})
    assert info.value.reason == "bad_type" and "both" in str(info.value)


def test_a_missing_frame_is_a_counted_skip_in_training(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    members: list[tuple[str, bytes]] = []
    for i in range(4):
        members += _raw_members(video_example(f"good{i}", seed=i))
    broken = [m for m in _raw_members(video_example("holey", seed=9)) if not m[0].endswith("qry.f001.png")]
    broken += [
        (name, b"%!PS-Adobe-3.0\n" if name.endswith("qry.f002.png") else data)
        for name, data in _raw_members(video_example("postscript", seed=8))
    ]
    _tar(folder / "v-000000.tar", members[: len(members) // 2] + broken + members[len(members) // 2 :])
    dm = ShardDataModule(
        train=[ShardSet(str(folder / "v-000000.tar"), name="video")],
        batch_size=2,
        num_workers=0,
        collate_fn=list_collate,
        shuffle_buffer=1,
        epoch_samples=4,
        warn_interval_s=3600,
    )
    dm.prepare_data()
    dm.setup("fit")
    batches = list(dm.loader(rank=0, world_size=1))
    dm.teardown("fit")
    seen = [i for b in batches for i in b]
    assert len(seen) == 4 and set(seen) <= {f"good{i}" for i in range(4)}  # the broken ones never trained on
    counts = dm.skip_counts()
    assert counts.get("missing_frame") == 1 and counts.get("video_decode") == 1


def test_a_frame_cut_inside_its_pixel_data_is_a_counted_skip_in_training(tmp_path):
    """The PNG header is intact, so only decoding finds the cut: the reader decodes frames as it does
    images, and such a sample is a ``video_decode`` skip there, never an error in the collator."""
    folder = tmp_path / "set"
    folder.mkdir()
    members: list[tuple[str, bytes]] = []
    for i in range(3):
        members += [
            (name, data[: len(data) // 2] if name.endswith("qry.f000.png") else data)
            for name, data in _raw_members(video_example(f"cut{i}", seed=i))
        ]
    _tar(folder / "v-000000.tar", members)
    dm = ShardDataModule(
        train=[ShardSet(str(folder / "v-000000.tar"), name="video")],
        batch_size=1,
        num_workers=0,
        collate_fn=list_collate,
        shuffle_buffer=1,
        epoch_samples=1,
        max_consecutive_skips=2,
        warn_interval_s=3600,
    )
    dm.prepare_data()
    dm.setup("fit")
    with pytest.raises(DataError, match=r"could not be decoded.*video_decode: 3"):
        list(dm.loader(rank=0, world_size=1))
    dm.teardown("fit")


@pytest.fixture(scope="module")
def frame_batch() -> list[Example]:
    rng = random.Random(3)
    return [
        Example(
            "f0", Side.from_frames([frame(rng) for _ in range(3)], "<|image_1|>\nwhat happens?"), Side("a")
        ),
        Example("t1", Side("a text query"), Side.from_frames([frame(rng), frame(rng)], "a document")),
        Example("i2", Side("<|image_1|>\nan image query", image=frame(rng)), Side("c")),
    ]


MULTI_IMAGE = [name for name in TINY_NAMES if TINY_NAMES[name].frame_input == "images"]


@pytest.mark.parametrize("name", MULTI_IMAGE)
def test_collator_gives_frames_as_images_on_each_family(name: str, frame_batch: list[Example]):
    collator = Collator(name, max_length=24)
    batch = collator(frame_batch)
    adapter = collator.adapter
    assert adapter.visual_prompt(frame_batch[0].query).count(adapter.image_token) == 3
    # three frames, no image, one image: one image per frame in the prompt, placeholder runs apart
    assert adapter.images_per_row(batch["query"]).tolist() == [3, 0, 1]
    assert adapter.images_per_row(batch["candidates"]).tolist() == [0, 2, 0]
    first = next(k for k in adapter.per_image_keys if k in batch["query"])
    per_image = (
        batch["query"]["image_grid_thw"] if "image_grid_thw" in batch["query"] else batch["query"][first]
    )
    assert per_image.shape[0] == 4
    encoder = Encoder(name, max_length=24).eval()
    with torch.no_grad():
        full = encoder(batch["query"])
        # a row subset (GradCache chunks, lockstep sub-batches) keeps each row's own frames
        for rows in ([0], [2, 0], [1]):
            part = encoder(adapter.select_rows(batch["query"], rows))
            torch.testing.assert_close(part, full[rows], atol=2e-5, rtol=1e-4)
        # the frames reach the model: another frame order embeds differently
        reordered = Example(
            "f0", Side(frame_batch[0].query.text, frames=frame_batch[0].query.frames[::-1]), Side("a")
        )
        other = encoder(collator([reordered])["query"])
    assert not torch.allclose(other[0], full[0], atol=1e-4)


def test_a_one_image_family_takes_one_frame_and_refuses_more_in_one_line(frame_batch: list[Example]):
    single = [name for name in TINY_NAMES if TINY_NAMES[name].frame_input == "single"]
    assert single == ["tiny-mllama"]
    collator = Collator("tiny-mllama", max_length=24)
    one = Example("f1", Side(frames=frame_batch[0].query.frames[:1]), Side("a"))
    as_image = Example("i1", Side(image_bytes=frame_batch[0].query.frames[0][0], image_ext="jpg"), Side("a"))
    a, b = collator([one])["query"], collator([as_image])["query"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(BackboneError) as info:
        collator(frame_batch[:1])
    message = str(info.value)
    assert "\n" not in message and "has no video input" in message and "3 frames" in message
