"""The shard schema: round trip, member naming, and every way a sample can be malformed."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from mme5.records import (
    SCHEMA_VERSION,
    Example,
    RecordError,
    ShardError,
    ShardSetWriter,
    Side,
    compose_text,
    decode_image,
    decode_sample,
    encode_sample,
    is_url,
    iter_shard,
    local_name,
    read_sizes,
    sample_key,
    write_tar,
)


def _image(seed: int, size: int = 24) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size + 3, 3), dtype=np.uint8))


def _example(i: int) -> Example:
    return Example(
        id=f"ex.{i}/a",
        query=Side("una domanda", _image(i)),
        positive=Side(None, _image(100 + i)),
        negatives=[Side("testo negativo"), Side("altro", _image(200 + i))],
        instruction="Find the image that matches the question.",
        doc_instruction=None,
        task="vqa",
        modality="IT2I",
        lang="it",
        source="unit",
        meta={"seed": i},
    )


def test_round_trip_through_shards(tmp_path):
    examples = [_example(i) for i in range(5)]
    with ShardSetWriter(tmp_path, prefix="part", samples_per_shard=2) as writer:
        for ex in examples:
            writer.write(ex)
    assert read_sizes(tmp_path) == {"part-000000.tar": 2, "part-000001.tar": 2, "part-000002.tar": 1}
    decoded = [decode_sample(s) for p in sorted(tmp_path.glob("*.tar")) for s in iter_shard(p)]
    assert [d.id for d in decoded] == [e.id for e in examples]
    for src, got in zip(examples, decoded, strict=False):
        assert (got.task, got.modality, got.lang, got.source, got.meta) == (
            "vqa",
            "IT2I",
            "it",
            "unit",
            src.meta,
        )
        assert got.query.text == "una domanda" and got.positive.text is None
        assert [n.text for n in got.negatives] == ["testo negativo", "altro"]
        assert not got.negatives[0].has_image and got.negatives[1].has_image
        # JPEG is lossy: compare with the bytes the writer produced, and the size exactly.
        encoded, loaded = src.query.encoded_image(), got.query.load_image()
        assert encoded is not None and loaded is not None and src.query.image is not None
        assert got.query.image_bytes == encoded[0]
        assert loaded.size == src.query.image.size
        assert got.query.content_id() == src.query.content_id()
        assert got.query_side().text == "Find the image that matches the question.\nuna domanda"


def test_member_names_follow_the_schema():
    sample = encode_sample(_example(3))
    assert sample["__key__"] == sample_key("ex.3/a") == "ex_3_a"
    assert set(sample) == {"__key__", "json", "qry.jpg", "pos.jpg", "neg1.jpg"}
    meta = json.loads(sample["json"])
    assert meta["negs"] == [{"text": "testo negativo", "image": False}, {"text": "altro", "image": True}]


def test_png_members_and_existing_bytes_are_kept():
    buf = io.BytesIO()
    _image(7).save(buf, format="PNG")
    ex = Example(id="p", query=Side("q"), positive=Side(None, image_bytes=buf.getvalue(), image_ext="png"))
    sample = encode_sample(ex)
    assert sample["pos.png"] == buf.getvalue()
    loaded = decode_sample(sample).positive.load_image()
    assert loaded is not None and loaded.size == (27, 24)


def _sample(meta, **members):
    return {"__key__": "k", "json": json.dumps(meta).encode(), **members}


GOOD = {"id": "k", "qry": {"text": "q", "image": False}, "pos": {"text": "p", "image": False}, "negs": []}


@pytest.mark.parametrize(
    "sample, reason",
    [
        ({"__key__": "k"}, "missing_json"),
        ({"__key__": "k", "json": b"{not json"}, "bad_json"),
        ({"__key__": "k", "json": b"[1, 2]"}, "bad_json"),
        (_sample({k: v for k, v in GOOD.items() if k != "pos"}), "missing_field"),
        (_sample({**GOOD, "id": None}), "missing_field"),
        (_sample({**GOOD, "id": 5}), "bad_type"),
        (_sample({**GOOD, "negs": "x"}), "bad_type"),
        (_sample({**GOOD, "qry": {"text": 3}}), "bad_type"),
        (_sample({**GOOD, "qry": {"text": "q", "image": True}}), "missing_image"),
        (_sample({**GOOD, "pos": {"text": None, "image": False}}), "empty_side"),
    ],
)
def test_malformed_samples_raise_with_a_reason(sample, reason):
    with pytest.raises(RecordError) as err:
        decode_sample(sample)
    assert err.value.reason == reason
    assert "'k'" in str(err.value) or reason in ("missing_json",)


def test_undecodable_and_oversized_images():
    sample = _sample({**GOOD, "qry": {"text": "q", "image": True}}, **{"qry.jpg": b"not an image"})
    with pytest.raises(RecordError) as err:
        decode_sample(sample, decode_images=True)
    assert err.value.reason == "image_format"
    buf = io.BytesIO()
    _image(1).save(buf, format="PNG")
    with pytest.raises(RecordError) as err:
        decode_image(buf.getvalue()[:60])  # a PNG header, then the data cut off
    assert err.value.reason == "image_decode"
    buf = io.BytesIO()
    Image.new("RGB", (3000, 2000)).save(buf, format="PNG")
    with pytest.raises(RecordError) as err:
        decode_image(buf.getvalue(), max_pixels=1_000_000)
    assert err.value.reason == "image_too_large"
    buf = io.BytesIO()
    Image.new("RGB", (3000, 2000)).save(buf, format="JPEG")
    small = decode_image(buf.getvalue(), max_pixels=1_000_000, max_side=512)
    assert max(small.size) <= 512 and small.mode == "RGB"


def test_writer_leaves_no_partial_shards(tmp_path):
    writer = ShardSetWriter(tmp_path, samples_per_shard=10)
    writer.write(_example(0))
    assert list(tmp_path.glob("*.tar")) == []  # nothing written until the shard is full or closed
    writer.close()
    assert [p.name for p in tmp_path.glob("*.tar")] == ["shard-000000.tar"]
    assert not list(tmp_path.glob("*.tmp"))
    with tarfile.open(tmp_path / "shard-000000.tar") as tar:
        assert min(tar.getnames()).startswith("ex_0_a.")


def test_compose_text():
    assert compose_text("Instr", "text") == "Instr\ntext"
    assert compose_text(None, "text") == "text"
    assert compose_text("Instr", None) == "Instr"
    assert compose_text(None, None) is None


@pytest.mark.parametrize("schema", [SCHEMA_VERSION + 1, 0, "1", None])
def test_samples_of_an_unknown_schema_are_refused(schema):
    with pytest.raises(RecordError) as err:
        decode_sample(_sample({**GOOD, "schema": schema}))
    assert err.value.reason == "schema_version" and "'k'" in str(err.value)
    assert decode_sample(_sample({**GOOD, "schema": SCHEMA_VERSION})).id == "k"
    assert decode_sample(_sample(GOOD)).id == "k"  # shards from before the field was written


def test_iter_shard_reports_problems_or_raises(tmp_path):
    write_tar(
        tmp_path / "a.tar",
        [("k1.json", b"{}"), ("k1.qry.png", b"x"), ("README", b"stray"), ("k2.json", b"{}")],
    )
    found: list[tuple[str, int]] = []
    samples = list(iter_shard(tmp_path / "a.tar", lambda reason, message, n: found.append((reason, n))))
    assert [sorted(s) for s in samples] == [
        ["__key__", "__url__", "json", "qry.png"],
        ["__key__", "__url__", "json"],
    ]
    assert samples[0]["qry.png"] == b"x" and found == [("stray_member", 1)]
    keys = list(iter_shard(str(tmp_path / "a.tar"), lambda *a: None, contents=False))
    assert [sorted(s) for s in keys] == [["__key__", "__url__"]] * 2
    found.clear()
    assert list(iter_shard(tmp_path / "a.tar", lambda r, m, n: found.append((r, n)), expected=5))
    assert found == [("stray_member", 1), ("truncated_tar", 3)]
    with pytest.raises(ShardError) as err:
        list(iter_shard(tmp_path / "missing.tar"))
    assert err.value.reason == "shard_open" and "missing.tar" in str(err.value)
    write_tar(tmp_path / "empty.tar", [])
    with pytest.raises(ShardError, match="holds no sample"):
        list(iter_shard(tmp_path / "empty.tar"))


def test_only_urls_count_as_urls():
    for url in ("pipe:cat x.tar", "http://h/x.tar", "s3://b/x.tar", "gs://b/x-{0..3}.tar"):
        assert is_url(url)
    for path in ("x.tar", "./pipe:x.tar", "data/pipe:x.tar", "/abs/x.tar", "c:x.tar"):
        assert not is_url(path)
    assert local_name("pipe:touch X;.tar") == "./pipe:touch X;.tar" and local_name("a/b.tar") == "a/b.tar"
