"""Shards written by an attacker with plain ``tarfile``: every trick is a counted skip, never code,
a crash, a silently overwritten or doubled sample, an unbounded read, or a torn or redirected write."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import textwrap
import threading
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest

from mme5.data import ShardDataModule, ShardSet, SkipCounter, read_shard
from mme5.data.shardsets import count_samples, shard_sizes
from mme5.errors import Mme5Error
from mme5.records import (
    RecordError,
    ShardError,
    ShardSetWriter,
    decode_sample,
    encode_sample,
    iter_shard,
    read_sizes,
    write_sizes,
)
from tests.helpers.shard_fixtures import list_collate, make_example, png_bytes

REPO = Path(__file__).resolve().parents[2]


def _members(ident: str, image: bool = False) -> list[tuple[str, bytes]]:
    sample = encode_sample(make_example(ident, image=image))
    key = sample.pop("__key__")
    return [(f"{key}.{ext}", data) for ext, data in sample.items()]


def _image_json(ident: str) -> bytes:
    meta = json.loads(encode_sample(make_example(ident))["json"])
    meta["qry"]["image"] = True
    return json.dumps(meta).encode()


def _tar(path: Path, members: Sequence[tuple[str, bytes] | tarfile.TarInfo]) -> Path:
    """A tar with exactly these members, written with plain ``tarfile`` (not the project's writer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
                continue
            info = tarfile.TarInfo(m[0])
            info.size = len(m[1])
            tar.addfile(info, io.BytesIO(m[1]))
    return path


def _read(path: Path, **kw) -> tuple[list[dict], dict[str, int]]:
    skips = SkipCounter()
    samples = list(iter_shard(path, skips.add, **kw))
    return samples, dict(skips.total)


# ---- item 2: shard bytes never reach Ghostscript -----------------------------------------------------

EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 8 8
%%EndComments
newpath 0 0 moveto 8 8 lineto stroke
showpage
%%EOF
"""


def test_postscript_posing_as_jpeg_is_image_format_and_never_runs_gs(tmp_path):
    shard = _tar(tmp_path / "eps.tar", [("k.json", _image_json("k")), ("k.qry.jpg", EPS)])
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    marker = tmp_path / "gs-was-run"
    for name in ("gs", "gswin32c", "gswin64c"):
        (fake_bin / name).write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 1\n")
        (fake_bin / name).chmod(0o755)
    script = textwrap.dedent(
        f"""
        from mme5.records import RecordError, decode_image, decode_sample, iter_shard
        for raw in iter_shard({str(shard)!r}):
            try:
                decode_sample(raw, decode_images=True)
                print("decoded")
            except RecordError as exc:
                print(exc.reason)
        try:
            decode_image(open({str(shard)!r}, "rb").read())  # the bytes of a file, as evaluation reads them
        except RecordError as exc:
            print(exc.reason)
        """
    )
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["image_format", "image_format"]
    assert not marker.exists()


# ---- item 8: duplicate keys, links, stray members ------------------------------------------------------


def test_the_same_key_twice_in_a_row_keeps_the_first_sample(tmp_path):
    second = [(n, d.replace(b"query k", b"query EVIL")) for n, d in _members("k")]
    shard = _tar(tmp_path / "dup.tar", [*_members("k"), *second, *_members("z")])
    samples, found = _read(shard)
    assert [s["__key__"] for s in samples] == ["k", "z"]
    assert decode_sample(samples[0]).query.text == "query k"
    assert found == {"duplicate_key": 1}
    assert count_samples(str(shard)) == (2, None)


def test_the_same_key_at_both_ends_is_yielded_once(tmp_path):
    shard = _tar(tmp_path / "ends.tar", [*_members("k"), *_members("m"), *_members("k")])
    samples, found = _read(shard, expected=2)
    assert [s["__key__"] for s in samples] == ["k", "m"] and found == {"duplicate_key": 1}
    assert count_samples(str(shard)) == (2, None)


def test_link_members_are_counted_and_never_followed(tmp_path):
    sym = tarfile.TarInfo("k.qry.jpg")
    sym.type, sym.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("m.qry.png")
    hard.type, hard.linkname = tarfile.LNKTYPE, "k.json"
    shard = _tar(
        tmp_path / "links.tar", [("k.json", _image_json("k")), sym, ("m.json", _image_json("m")), hard]
    )
    samples, found = _read(shard)
    assert found == {"link_member": 2}
    assert all(set(s) == {"__key__", "__url__", "json"} for s in samples)
    with pytest.raises(RecordError) as err:
        decode_sample(samples[0])
    assert err.value.reason == "missing_image"


def test_stray_members_are_not_samples_and_a_clean_shard_is_not_truncated(tmp_path, caplog):
    members = [*_members("a"), ("notes.txt", b"hello"), ("LICENSE", b"MIT"), *_members("b", image=True)]
    members += [("orphan.pos.png", png_bytes(3))]
    shard = _tar(tmp_path / "s" / "s-0.tar", members)
    assert count_samples(str(shard)) == (2, None)
    samples, found = _read(shard, expected=2)
    assert [s["__key__"] for s in samples] == ["a", "b"]
    assert found == {"stray_member": 3} and "truncated_tar" not in found
    dm = ShardDataModule(
        train=[ShardSet(str(tmp_path / "s"))], batch_size=1, num_workers=0, collate_fn=list_collate
    )
    dm.prepare_data()
    dm.setup("fit")
    assert read_sizes(tmp_path / "s") == {"s-0.tar": 2} and dm.samples_per_epoch == 2
    assert sorted(i for b in dm.loader(rank=0, world_size=1) for i in b) == ["a", "b"]
    counts = dm.skip_counts()
    assert counts.get("truncated_tar", 0) == 0 and counts["stray_member"] >= 2


# ---- item 9: one sample never crashes a fit ------------------------------------------------------------


def _meta(ident: str) -> dict:
    return json.loads(encode_sample(make_example(ident))["json"])


def _hostile_json() -> list[tuple[str, bytes, str]]:
    deep = b'{"id": "deep", "qry": {"text": "q"}, "pos": {"text": "p"}, "meta": ' + b"[" * 100_000
    deep += b"]" * 100_000 + b"}"
    digits = json.dumps(_meta("digits"))[:-1].encode() + b', "n": ' + b"7" * 5000 + b"}"
    surrogate = json.dumps(_meta("surrogate")).replace("query surrogate", "query \\ud800 alone").encode()
    assert b"\\ud800" in surrogate
    nested_meta = _meta("meta")
    nested_meta["meta"] = {"note": "\\udfff"}
    lone_meta = json.dumps(nested_meta).replace("\\\\udfff", "\\udfff").encode()
    return [
        ("deep", deep, "bad_json"),
        ("digits", digits, "bad_json"),
        ("surrogate", surrogate, "bad_text"),
        ("meta", lone_meta, "bad_text"),
    ]


@pytest.mark.parametrize("case", _hostile_json(), ids=lambda c: c[0])
def test_hostile_json_is_a_reasoned_record_error(case):
    key, data, reason = case
    with pytest.raises(RecordError) as err:
        decode_sample({"__key__": key, "json": data})
    assert err.value.reason == reason and f"'{key}'" in str(err.value)


def test_hostile_json_is_counted_by_reason_in_a_fit(tmp_path):
    members = [*_members("good0")]
    for key, data, _ in _hostile_json():
        members.append((f"{key}.json", data))
    members += _members("good1")
    _tar(tmp_path / "h" / "h-0.tar", members)
    dm = ShardDataModule(
        train=[ShardSet(str(tmp_path / "h"))],
        batch_size=2,
        num_workers=0,
        collate_fn=list_collate,
    )
    dm.prepare_data()
    dm.setup("fit")
    batches = list(dm.loader(rank=0, world_size=1))
    assert batches and {i for b in batches for i in b} == {"good0", "good1"}
    counts = dm.skip_counts()
    assert counts["bad_json"] >= 2 and counts["bad_text"] >= 2, counts


# ---- item 10: a damaged sizes.json --------------------------------------------------------------------


@pytest.mark.parametrize("text", ['{"a-0.tar": 2, "a-1.t', "not json", '["a-0.tar"]', '{"a-0.tar": "2"}'])
def test_a_damaged_sizes_json_is_one_line_or_a_warning_and_a_recount(tmp_path, caplog, text):
    folder = tmp_path / "a"
    for s in range(2):
        _tar(folder / f"a-{s}.tar", [*_members(f"x{s}"), *_members(f"y{s}")])
    (folder / "sizes.json").write_text(text)
    with pytest.raises(ShardError) as err:
        read_sizes(folder)
    assert isinstance(err.value, Mme5Error) and str(folder / "sizes.json") in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ShardError, match=r"sizes\.json"):
        ShardSetWriter(folder)  # a writer would extend a file it cannot read
    with caplog.at_level(logging.WARNING, logger="mme5.data"):
        sizes, problems = shard_sizes([str(folder / "a-0.tar"), str(folder / "a-1.tar")])
    assert sizes == [2, 2] and problems == []
    assert caplog.text.count("sizes.json") == 1 and "counting the shards instead" in caplog.text
    assert read_sizes(folder) == {"a-0.tar": 2, "a-1.tar": 2}  # rewritten with the counts


# ---- item 11: concurrent writers and a planted symlink ------------------------------------------------


def test_concurrent_sizes_writers_never_fail_or_tear(tmp_path):
    errors: list[BaseException] = []
    torn = 0
    stop = threading.Event()

    def writer(w: int) -> None:
        try:
            for i in range(300):
                write_sizes(tmp_path, {f"w{w}-{j}.tar": i for j in range(50)})
        except BaseException as exc:  # the test counts every failure
            errors.append(exc)

    def reader() -> None:
        nonlocal torn
        while not stop.is_set():
            try:
                read_sizes(tmp_path)
            except Exception:  # a torn file, whatever the reader raises
                torn += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert errors == [] and torn == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sizes.json"]


def test_concurrent_shard_set_writers_keep_every_shard(tmp_path):
    errors: list[BaseException] = []

    def run(prefix: str) -> None:
        try:
            with ShardSetWriter(tmp_path, prefix=prefix, samples_per_shard=1) as w:
                for i in range(40):
                    w.write(make_example(f"{prefix}{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list(tmp_path.glob("*.tar"))) == 80
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".tar" and p.name != "sizes.json"]


def test_a_symlink_at_the_old_temp_names_redirects_nothing(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "sizes.json.tmp").symlink_to(victim)
    (folder / "shard-000000.tar.tmp").symlink_to(victim)
    with ShardSetWriter(folder, samples_per_shard=2) as w:
        for i in range(2):
            w.write(make_example(f"e{i}"))
    assert victim.read_text() == "precious"
    assert read_sizes(folder) == {"shard-000000.tar": 2}
    assert [s["__key__"] for s in iter_shard(folder / "shard-000000.tar")] == ["e0", "e1"]


# ---- item 12b: member bytes are capped ------------------------------------------------------------------


def test_an_oversized_member_is_skipped_unread(tmp_path):
    shard = _tar(
        tmp_path / "big.tar",
        [*_members("a"), ("b.json", _image_json("b")), ("b.qry.png", png_bytes(1, size=64)), *_members("c")],
    )
    samples, found = _read(shard, max_member_bytes=4096)
    assert [s["__key__"] for s in samples] == ["a", "c"] and found == {"member_too_large": 1}
    keys, found = _read(shard, max_member_bytes=4096, contents=False)
    assert [s["__key__"] for s in keys] == ["a", "c"]  # counting agrees with reading
    assert len(_read(shard)[0]) == 3  # under the default cap


def test_a_200_mb_member_is_never_read_whole(tmp_path):
    """A sparse 200 MB member (cheap on disk): reading the shard stays far below its size in memory."""
    path = tmp_path / "huge.tar"
    size = 200 * 2**20
    with open(path, "wb") as f:
        info = tarfile.TarInfo("h.qry.jpg")
        info.size = size
        f.write(info.tobuf())
        f.seek(size, os.SEEK_CUR)
        with tarfile.open(fileobj=f, mode="w") as tar:
            for name, data in [("h.json", _image_json("h")), *_members("ok")]:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
    tracemalloc.start()
    try:
        skips = SkipCounter()
        samples = list(read_shard(str(path), skips))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [s["__key__"] for s in samples] == ["ok"]
    assert dict(skips.total) == {"member_too_large": 1}
    assert peak < 16 * 2**20, peak
