"""The demo corpus and the synthesis writer write through mme5.atomic: no fixed temp names (issue #16)."""

from __future__ import annotations

import json

from mme5.atomic import TEMP_SUFFIX
from mme5.demo import ensure_demo_corpus
from mme5.demo.corpus import IN_PROGRESS, MANIFEST
from mme5.synth.writer import ShardOutput, UnitRecord

SMALL = {"seed": 0, "train_samples": 16, "train_shards": 2, "eval_rows": 4, "xtd_pool": 10}


def test_a_killed_manifest_write_is_a_partial_generation_and_is_redone(tmp_path):
    root = tmp_path / "demo"
    ensure_demo_corpus(root, **SMALL)
    assert not [p for p in root.rglob("*") if p.name.endswith((".tmp", TEMP_SUFFIX))]
    # a generation killed while writing its manifest: the marker and mme5.atomic's temp file are left
    (root / MANIFEST).unlink()
    (root / IN_PROGRESS).write_text("killed\n")
    leftover = root / f".{MANIFEST}.k1ll3d{TEMP_SUFFIX}"
    leftover.write_text("{")
    paths = ensure_demo_corpus(root, **SMALL)
    assert json.loads((root / MANIFEST).read_text())["corpus"] == "mme5-demo"
    assert not leftover.exists() and not (root / IN_PROGRESS).exists()
    assert sorted(p.name for p in paths.train_dir.glob("*.tar"))


def test_synthesis_records_go_through_unique_temp_names(tmp_path):
    out = ShardOutput(tmp_path / "synth")
    out.check_run({"config": "x"})
    out.commit(UnitRecord(unit=0, start=0, stop=3, attempted=3, accepted=0), [])
    stats = out.report()
    assert stats["attempted"] == 3 and out.done()[0].attempted == 3
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["run.json", "sizes.json", "stats.json", "stats.md", "unit-000000.json"]
