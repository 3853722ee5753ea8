"""tools/bench_kernels.py on CPU: rows, plots, one-pass sweep and the no-jsonargparse fallback."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench_kernels.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_kernels", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_run_appends_rows_and_draws_plots(bench, tmp_path):
    out = tmp_path / "kernels.csv"
    rows = bench.main(
        providers=["reference", "chunked", "triton"],
        modes=["full", "backward"],
        sizes=[48, 80],
        dims=[24],
        repeats=2,
        warmup=0,
        device="cpu",
        out=out,
        plot=True,
    )
    with out.open() as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) == 2 * 2 * 2 * 3  # providers x modes x sizes x metrics; triton skipped
    assert {r["provider"] for r in written} == {"reference", "chunked"}
    assert set(written[0]) == set(bench.FIELDS)
    for r in written:
        values = json.loads(r["values"])
        assert all(v >= 0 for v in values)
        if r["metric"] == "time":
            median, p20, p80 = values
            assert 0 < p20 <= median <= p80
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["infonce_cpu_float32_D24_backward.png", "infonce_cpu_float32_D24_full.png"]

    bench.main(
        providers=["chunked"], sizes=[48], dims=[24], repeats=1, warmup=0, device="cpu", out=out, plot=False
    )
    with out.open() as f:
        assert len(list(csv.DictReader(f))) == len(rows) + 3  # appended under the same header


def test_unknown_onepass_field_is_one_clear_error(bench, tmp_path):
    with pytest.raises(ValueError, match=r"unknown field.*block_q"):
        bench.main(providers=["chunked"], sizes=[8], dims=[8], onepass={"block_q": 2}, out=tmp_path / "k.csv")


def test_peer_check_measures_agreement_with_the_reference(bench):
    # chunked computes the same loss: agreement to fp32 rounding; a peer is only timed below 2e-2
    assert bench.peer_disagreement("chunked", torch.device("cpu"), torch.float32, size=40, dim=24) < 1e-5


def test_onepass_candidates_are_swept_with_explicit_configurations(bench):
    from mme5.kernels import InfoNCEConfig
    from mme5.kernels.config import default_config, resolve_config

    runs = bench.provider_runs(["reference", "triton", "triton-fp32"], [{"block_m": 8}, {"block_n": 512}])
    assert [(name, provider) for name, provider, _ in runs] == [
        ("reference", "reference"),
        ("triton[block_m=8]", "triton"),
        ("triton[block_n=512]", "triton"),
        ("triton-fp32[block_m=8]", "triton-fp32"),
        ("triton-fp32[block_n=512]", "triton-fp32"),
    ]
    base = default_config().onepass
    assert runs[0][2] is None
    assert runs[1][2] == InfoNCEConfig(onepass=dataclasses.replace(base, block_m=8))
    assert runs[2][2] == InfoNCEConfig(onepass=dataclasses.replace(base, block_n=512))
    # One mapping is one candidate; without candidates every provider runs once with the defaults.
    assert [name for name, _, _ in bench.provider_runs(["triton"], {"block_m": 2})] == ["triton[block_m=2]"]
    assert bench.provider_runs(["chunked", "triton"], None) == [
        ("chunked", "chunked", None),
        ("triton", "triton", None),
    ]
    # The variants set their switch on top of the candidate they are given.
    impl, cfg = bench._kernel_setting("triton-fp32", runs[3][2])
    assert impl == "triton" and cfg.onepass == dataclasses.replace(
        base, block_m=8, fp32_scores=True, fp32_grad_accumulator=True
    )
    impl, cfg = bench._kernel_setting("triton-recompute", None)
    assert impl == "triton" and cfg == dataclasses.replace(resolve_config(None), one_pass=False)
