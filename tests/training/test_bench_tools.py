"""tools/bench_*.py: results go under runs/bench/ unless named; a missed target says so; the chunk plot
has the chunk size on its x axis; bench_data names the worker count it ran (issue #17, items 4 and 6)."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "option"), [("bench_kernels", "out"), ("bench_data", "out_dir"), ("bench_train", "out_dir")]
)
def test_benchmarks_write_under_runs_bench_by_default(name, option):
    default = inspect.signature(_tool(name).main).parameters[option].default
    assert Path(default).parts[:2] == ("runs", "bench"), default
    assert "benchmarks" not in str(default)


def _row(mode, chunk, ms, mem, batch=128):
    return {
        "model": "tiny-mllama",
        "mode": mode,
        "chunk": chunk,
        "processes": 1,
        "global_batch": batch,
        "step_ms_median": ms,
        "samples_per_s": batch / ms * 1e3,
        "peak_mem_mb": mem,
        "device": "cpu",
    }


def test_a_missed_target_is_marked_missed(capsys):
    bench = _tool("bench_train")
    bench._summary(
        [
            _row("plain", "", 100.0, 100.0),
            _row("gradcache", 16, 250.0, 10.0),
            _row("gradcache", 64, 140.0, 120.0),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert "time ratio gradcache/plain = 2.50 (target <= 1.5: MISSED)" in lines[0]
    assert "(target: below plain: met)" in lines[0]
    assert "(target <= 1.5: met)" in lines[1] and "(target: below plain: MISSED)" in lines[1]


def test_the_chunk_sweep_plot_has_the_chunk_size_on_its_x_axis(tmp_path, monkeypatch):
    bench = _tool("bench_train")
    drawn = {}
    import matplotlib.figure

    save = matplotlib.figure.Figure.savefig

    def keep(fig, path, **kw):
        drawn["xlabel"] = fig.axes[0].get_xlabel()
        drawn["ticks"] = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        return save(fig, path, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    rows = [_row("plain", "", 100.0, 100.0), *(_row("gradcache", c, 100.0 + c, c) for c in (16, 64, 128))]
    bench._plot(rows, tmp_path / "chunks.png")
    assert (tmp_path / "chunks.png").is_file()
    assert drawn["xlabel"] == "GradCache chunk size (queries)" and drawn["ticks"] == ["16", "64", "128"]


def test_bench_data_names_the_worker_count_it_ran():
    source = (TOOLS / "bench_data.py").read_text()
    assert "ratio with 2 workers" not in source and "ratio with {most}" in source
