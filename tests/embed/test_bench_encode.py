"""tools/bench_encode.py writes one CSV row per (input, dim, precision) and a plot."""

from __future__ import annotations

import csv
import importlib.util

from tests.helpers import REPO


def test_bench_encode_writes_csv_and_plot(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_encode", REPO / "tools" / "bench_encode.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(
        out_dir=str(tmp_path / "out"),
        work_dir=str(tmp_path / "work"),
        texts=6,
        images=3,
        batch_size=4,
        precisions=("float32", "ubinary"),
        dims=(0, 16),
        repeats=1,
    )
    rows = list(csv.DictReader((tmp_path / "out" / "encode.csv").read_text().splitlines()))
    assert [(r["provider"], r["dim"], r["precision"]) for r in rows] == [
        (kind, dim, p) for kind in ("texts", "images") for dim in ("64", "16") for p in ("float32", "ubinary")
    ]
    assert [int(r["bytes_per_vector"]) for r in rows[:4]] == [256, 8, 64, 2]
    assert all(float(r["median"]) > 0 and float(r["cpu_ms_per_item"]) > 0 and r["device"] for r in rows)
    assert {r["items"] for r in rows} == {"6", "3"}
    assert (tmp_path / "out" / "encode.png").stat().st_size > 1000
