"""Every kind of bad data is skipped, counted by reason, and never stops a run; all-bad data stops it."""

from __future__ import annotations

import io
import json
import logging
import tarfile

import pytest

from mme5.data import DataError, ShardDataModule, ShardSet, SkipCounter, expand_shards, read_shard
from mme5.records import encode_sample, write_shard, write_sizes
from tests.helpers.shard_fixtures import (
    huge_png_header,
    list_collate,
    make_example,
    png_bytes,
    write_raw_shard,
    write_set,
)


def _meta(ident: str, **over) -> bytes:
    meta = json.loads(encode_sample(make_example(ident))["json"])
    meta.update(over)
    return json.dumps(meta).encode()


def _image_meta(ident: str) -> bytes:
    meta = json.loads(encode_sample(make_example(ident))["json"])
    meta["qry"]["image"] = True
    return json.dumps(meta).encode()


def _bad_set(root) -> tuple[str, set[str]]:
    """Shards 0-1 good, 2: one bad sample of each kind among good ones, 3 truncated, 4 empty, 5 missing."""
    folder = root / "bad"
    write_set(folder, "bad", 2, 5, image_every=2)
    good = {f"bad-{s}-{i}" for s in range(2) for i in range(5)}
    members = [("g1.json", _meta("g1"))]
    members += [("nojson.qry.png", png_bytes(1))]  # no nojson.json: a stray member, not a sample
    members += [("badjson.json", b"{not json")]  # bad_json
    members += [
        ("nofield.json", json.dumps({"qry": {"text": "q"}, "pos": {"text": "p"}}).encode())
    ]  # missing_field
    members += [("badtype.json", _meta("badtype", lang=5))]  # bad_type
    members += [("notimage.json", _image_meta("notimage")), ("notimage.qry.jpg", b"this is text, not a jpeg")]
    # image_format: the text is no allowed format
    members += [("brokenimg.json", _image_meta("brokenimg")), ("brokenimg.qry.png", png_bytes(2)[:60])]
    members += [
        ("big.json", _image_meta("big")),
        ("big.qry.png", huge_png_header(9000, 9000)),
    ]  # image_too_large
    members += [
        ("huge.json", _image_meta("huge")),
        ("huge.qry.png", huge_png_header()),
    ]  # 20000^2: refused unread
    members += [("noimg.json", _image_meta("noimg"))]  # missing_image
    members += [("g2.json", _meta("g2"))]
    write_raw_shard(folder / "bad-000002.tar", members)
    good |= {"g1", "g2"}
    # a shard truncated inside its third sample: two samples survive
    write_shard(folder / "bad-000003.tar", [make_example(f"t{i}") for i in range(3)])
    data = (folder / "bad-000003.tar").read_bytes()
    cut = data.index(b"positive t2")
    (folder / "bad-000003.tar").write_bytes(data[:cut])
    good |= {"t0", "t1"}
    write_raw_shard(folder / "bad-000004.tar", [])  # empty shard
    sizes = json.loads((folder / "sizes.json").read_text())
    sizes.update({"bad-000002.tar": 10, "bad-000003.tar": 3})  # sizes as written before the damage
    write_sizes(folder, sizes)
    return str(folder / "bad-{000000..000005}.tar"), good  # 000005 does not exist


def test_each_bad_kind_is_skipped_and_counted(tmp_path, caplog):
    spec, good = _bad_set(tmp_path)
    # in the training process (num_workers=0) so that caplog sees the workers' warnings
    dm = ShardDataModule(
        train=[ShardSet(spec, name="bad")],
        batch_size=2,
        num_workers=0,
        collate_fn=list_collate,
        shuffle_buffer=3,
        shuffle_shards=2,
        epoch_samples=2 * 29,
        max_image_pixels=10_000_000,
        warn_interval_s=3600,
    )
    dm.prepare_data()
    with caplog.at_level(logging.WARNING, logger="mme5.data"):
        dm.setup("fit")
        batches = list(dm.loader(rank=0, world_size=1))
        dm.teardown("fit")
    seen = {i for b in batches for i in b}
    assert len(batches) == 29 and all(len(b) == 2 for b in batches)
    assert seen == good
    counts = dm.skip_counts()
    for reason in (
        "stray_member",
        "bad_json",
        "missing_field",
        "bad_type",
        "image_decode",
        "image_format",
        "image_too_large",
        "missing_image",
        "truncated_tar",
        "empty_shard",
        "shard_open",
    ):
        assert counts.get(reason, 0) >= 1, (reason, counts)
    assert counts["image_too_large"] >= 2  # 9000^2 refused from its header, PIL's bomb guard on 20000^2
    assert counts["shard_open"] == 1 and counts["empty_shard"] == 1  # found while sizing
    assert "data summary" in caplog.text and "bad-000005.tar" in caplog.text
    # rate limited: one warning per reason per worker, however often it recurs
    assert caplog.text.count("skipped (bad_json)") == 1


def test_nothing_readable_stops_with_one_clear_error(tmp_path):
    folder = tmp_path / "allbad"
    for s in range(2):
        write_raw_shard(folder / f"x-{s:06d}.tar", [(f"k{i}.json", b"{oops") for i in range(4)])
    dm = ShardDataModule(
        train=[ShardSet(str(folder / "x-{000000..000001}.tar"), name="allbad")],
        batch_size=2,
        num_workers=1,
        collate_fn=list_collate,
        max_consecutive_skips=20,
    )
    dm.setup("fit")
    with pytest.raises(
        DataError,
        match=r"^shard set 'allbad': 21 samples in a row could not be decoded "
        r"\(shards .*x-00000[01].tar.*bad_json: 21",
    ):
        list(dm.loader(rank=0, world_size=1))

    missing = ShardDataModule(
        train=[ShardSet(str(tmp_path / "none-{0..2}.tar"), name="gone")], collate_fn=list_collate
    )
    with pytest.raises(
        DataError, match=r"^shard set 'gone': none of its 3 shard file\(s\) exists \(.*none-0.tar"
    ):
        missing.setup("fit")
    write_raw_shard(tmp_path / "e" / "e-0.tar", [])
    empty = ShardDataModule(train=[ShardSet(str(tmp_path / "e"))], collate_fn=list_collate)
    with pytest.raises(DataError, match="no readable sample in shard set"):
        empty.setup("fit")


def test_bad_shard_does_not_hang_other_ranks(tmp_path):
    """A rank whose shards are damaged still yields exactly as many batches as the others."""
    folder = tmp_path / "r"
    spec = write_set(folder, "r", 4, 6)
    data = (folder / "r-000001.tar").read_bytes()
    (folder / "r-000001.tar").write_bytes(data[: len(data) // 3])
    dm = ShardDataModule(
        train=[ShardSet(spec)], batch_size=3, num_workers=1, collate_fn=list_collate, shuffle_buffer=2
    )
    dm.setup("fit")
    loaders = [dm.loader(rank=r, world_size=2) for r in range(2)]
    for loader in loaders:
        loader.set_epoch(0)  # without a trainer every iteration is a new epoch
    counts = [len(list(loader)) for loader in loaders]
    assert counts == [4, 4] and dm.skip_counts()["truncated_tar"] >= 1


def test_unreadable_shards_are_counted_once(tmp_path):
    """A file that is not a tar, a failing pipe and a missing file: one ``shard_open`` each, no raise."""
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(bytes(range(256)) * 8)
    for url in (str(garbage), "pipe:exit 3", str(tmp_path / "missing.tar")):
        skips = SkipCounter()
        assert list(read_shard(url, skips, expected=5)) == []
        assert dict(skips.total) == {"shard_open": 1}, (url, skips.total)


@pytest.mark.parametrize("spec", [".", "*.tar"])
def test_local_file_names_never_reach_the_pipe_opener(tmp_path, monkeypatch, spec):
    """A shard named ``pipe:touch X;.tar`` found by a folder or glob spec is read as a file, not run."""
    monkeypatch.chdir(tmp_path)
    name = "pipe:touch X;.tar"
    with tarfile.open(tmp_path / name, "w") as tar:
        for member, data in encode_sample(make_example("p0")).items():
            if member == "__key__":
                continue
            info = tarfile.TarInfo(f"p0.{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert expand_shards(spec) == [f"./{name}"]
    dm = ShardDataModule(
        train=[ShardSet(spec)], batch_size=1, num_workers=0, collate_fn=list_collate, epoch_samples=2
    )
    dm.prepare_data()
    dm.setup("fit")
    batches = list(dm.loader(rank=0, world_size=1))
    assert batches == [["p0"], ["p0"]] and not any(dm.skip_counts().values())
    assert json.loads((tmp_path / "sizes.json").read_text()) == {name: 1}
    assert not (tmp_path / "X").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        name,
        "sizes.json",
    ]
