"""Fuzzing the one tar reader and the decoder: thousands of seeded, mutated samples (bytes of the JSON,
text and image members, member names, truncated tars) give samples or counted skips, never an exception.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from mme5.data.collate import Collator
from mme5.records import (
    DUPLICATE_KEY,
    EMPTY_SHARD,
    LINK_MEMBER,
    MEMBER_TOO_LARGE,
    SHARD_OPEN,
    STRAY_MEMBER,
    TRUNCATED_TAR,
    Example,
    RecordError,
    decode_sample,
    iter_shard,
)

SEED = 16
SHARDS = 80
PER_SHARD = 50
SAMPLE_REASONS = {
    "missing_json",
    "bad_json",
    "bad_text",
    "schema_version",
    "missing_field",
    "bad_type",
    "empty_side",
    "missing_image",
    "image_format",
    "image_decode",
    "image_too_large",
}
SHARD_REASONS = {
    SHARD_OPEN,
    TRUNCATED_TAR,
    EMPTY_SHARD,
    STRAY_MEMBER,
    DUPLICATE_KEY,
    LINK_MEMBER,
    MEMBER_TOO_LARGE,
}
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n%%EOF\n"
HOSTILE_TEXTS = [
    "\\ud800",
    "<|image_1|><|image_1|> two tokens",
    "<image> family token",
    "\\u0000 nul",
    "x" * 5000,
    "",
]
HOSTILE_VALUES = [None, 5, -1, 1.5, True, [], {}, ["a"], {"text": 1}, "s", 10**30, "\\udfff"]


def _images(rng: random.Random) -> dict[str, bytes]:
    out = {}
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp")):
        img = Image.frombytes("RGB", (12, 9), rng.randbytes(12 * 9 * 3))
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out[ext] = buf.getvalue()
    buf = io.BytesIO()
    Image.new("L", (9, 7), 3).save(buf, format="TIFF")
    out["tif"] = buf.getvalue()
    return out


def _flip(rng: random.Random, data: bytes, n: int = 4) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        if b:
            b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def _json_text(meta: dict) -> str:
    return json.dumps(meta, ensure_ascii=False)


def _mutate_json(rng: random.Random, meta: dict) -> bytes:
    roll = rng.random()
    if roll < 0.25:
        return _flip(rng, _json_text(meta).encode(), rng.randint(1, 8))
    if roll < 0.35:
        raw = _json_text(meta).encode()
        return raw[: rng.randrange(len(raw) + 1)]
    if roll < 0.6:  # a field of the wrong type or value
        target = rng.choice([meta, meta["qry"], meta["pos"], *(meta["negs"] or [meta])])
        target[rng.choice([*target.keys(), "text", "image", "schema"])] = rng.choice(HOSTILE_VALUES)
        text = _json_text(meta)
        return text.replace('"\\\\ud', '"\\ud').replace('"\\\\udfff"', '"\\udfff"').encode()
    if roll < 0.75:  # a hostile text (escapes kept as JSON escapes: lone surrogates, NUL)
        side = rng.choice([meta["qry"], meta["pos"], *(meta["negs"] or [meta["pos"]])])
        side["text"] = rng.choice(HOSTILE_TEXTS)
        return _json_text(meta).replace("\\\\u", "\\u").encode()
    if roll < 0.8:
        depth = rng.choice([50, 5000, 100_000])
        return (_json_text(meta)[:-1] + ', "meta": ' + "[" * depth + "]" * depth + "}").encode()
    if roll < 0.85:
        return (_json_text(meta)[:-1] + ', "n": ' + "9" * rng.choice([100, 5000]) + "}").encode()
    if roll < 0.9:
        return rng.randbytes(rng.randrange(64))
    return rng.choice([b"", b"null", b"[]", b"\xff\xfe{}", b'"str"', b"NaN"])


def _mutate_image(rng: random.Random, data: bytes, images: dict[str, bytes]) -> bytes:
    roll = rng.random()
    if roll < 0.35:
        return _flip(rng, data, rng.randint(1, 16))
    if roll < 0.55:
        return data[: rng.randrange(len(data) + 1)]
    if roll < 0.65:
        return EPS
    if roll < 0.75:
        return rng.choice(list(images.values()))[:8] + rng.randbytes(rng.randrange(200))
    if roll < 0.85:
        return b"%PDF-1.4\n" + rng.randbytes(50)
    return rng.randbytes(rng.randrange(300))


def _sample_members(rng: random.Random, key: str, images: dict[str, bytes]) -> list[tuple[str, bytes]]:
    ext = rng.choice(list(images))
    negs = rng.randint(0, 3)
    roles = {"qry": rng.random() < 0.6, "pos": rng.random() < 0.4}
    roles |= {f"neg{i}": rng.random() < 0.3 for i in range(negs)}
    meta = {
        "schema": 1,
        "id": key,
        "source": "fuzz",
        "task": "retrieval",
        "modality": "IT2T",
        "lang": "en",
        "instruction": "Find it.",
        "doc_instruction": None,
        "qry": {"text": f"query {key}", "image": roles["qry"]},
        "pos": {"text": f"positive {key}", "image": roles["pos"]},
        "negs": [{"text": f"negative {key} {i}", "image": roles[f"neg{i}"]} for i in range(negs)],
        "meta": {"k": key},
    }
    mutate = rng.random() < 0.7
    what = rng.choice(["json", "image", "name", "both"]) if mutate else ""
    data = (
        _mutate_json(rng, meta) if what in ("json", "both") else json.dumps(meta, ensure_ascii=False).encode()
    )
    members = [(f"{key}.json", data)]
    for role, has in roles.items():
        if has:
            img = images[ext]
            if what in ("image", "both"):
                img = _mutate_image(rng, img, images)
            members.append((f"{key}.{role}.{ext}", img))
    if what == "name":
        i = rng.randrange(len(members))
        name, blob = members[i]
        choice = rng.randrange(7)
        if choice == 0:
            name = name.replace(".", "", 1)
        elif choice == 1:
            name = name.rsplit(".", 1)[0] + "." + rng.choice(["eps", "ps", "pdf", "txt", "JPG", ""])
        elif choice == 2:
            name = "." + name
        elif choice == 3:
            name = "dir/" + name
        elif choice == 4:
            name = "k\udcff\udc80" + name[len(key) :]
        elif choice == 5:
            members.append(members[i])  # the same member twice
        else:
            name = "x" * 300 + name
        members[i] = (name, blob)
    if rng.random() < 0.05:
        rng.shuffle(members)
    return members


def _write_shard(rng: random.Random, path: Path, shard: int, images: dict[str, bytes]) -> None:
    members: list[tuple[str, bytes]] = []
    keys = [f"s{shard}_{i}" for i in range(PER_SHARD)]
    for key in keys:
        if rng.random() < 0.03:  # a key seen before in this shard
            key = rng.choice(keys[: max(1, keys.index(key))])
        members += _sample_members(rng, key, images)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if rng.random() < 0.2:
            link = tarfile.TarInfo(f"{keys[0]}.qry.jpg")
            link.type, link.linkname = rng.choice([tarfile.SYMTYPE, tarfile.LNKTYPE]), "/etc/passwd"
            tar.addfile(link)
    raw = buf.getvalue()
    roll = rng.random()
    if roll < 0.15:
        raw = raw[: rng.randrange(len(raw))]  # cut anywhere, headers included
    elif roll < 0.25:
        raw = _flip(rng, raw, rng.randint(1, 30))  # header bytes too
    path.write_bytes(raw)


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL's notes on the damaged TIFF / EXIF data it reads
def test_mutated_shards_give_only_samples_or_counted_skips(tmp_path):
    rng = random.Random(SEED)
    images = _images(rng)
    problems: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    decoded: list[Example] = []
    samples = 0

    def sink(reason: str, message: str, n: int = 1) -> None:
        assert reason in SHARD_REASONS, (reason, message)
        assert isinstance(message, str) and message.encode("utf-8")
        problems[reason] += n

    for s in range(SHARDS):
        path = tmp_path / f"fuzz-{s:04d}.tar"
        _write_shard(rng, path, s, images)
        expected = PER_SHARD if rng.random() < 0.5 else None
        for contents in (False, True):
            for raw in iter_shard(path, sink, expected=expected, contents=contents, max_member_bytes=2000):
                if not contents:
                    continue
                samples += 1
                try:
                    ex = decode_sample(raw, decode_images=True, max_pixels=5000, max_side=8)
                except RecordError as exc:
                    assert exc.reason in SAMPLE_REASONS, exc
                    str(exc).encode("utf-8")
                    skipped[exc.reason] += 1
                    continue
                decoded.append(ex)
    assert samples >= 3000
    assert len(decoded) > 1000
    # the mutations reach every kind of problem, so the test proves what it claims
    assert {"bad_json", "bad_text", "bad_type", "image_format", "image_decode", "missing_image"} <= set(
        skipped
    )
    assert {TRUNCATED_TAR, STRAY_MEMBER, DUPLICATE_KEY, LINK_MEMBER, MEMBER_TOO_LARGE} <= set(problems)
    # what decodes also collates: no exception from the processor or the tokenizer
    collator = Collator("tiny-llava", max_length=16, max_side=8)
    for i in range(0, 96, 8):
        batch = collator(decoded[i : i + 8])
        assert batch["query"]["input_ids"].shape[0] == len(decoded[i : i + 8])
