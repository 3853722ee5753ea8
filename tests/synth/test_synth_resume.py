"""Kill-and-resume: a synthesis killed with SIGKILL and started again ends like an uninterrupted one."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mme5.records import decode_sample, iter_shard, read_sizes

pytestmark = pytest.mark.slow  # kills and restarts a synthesis subprocess

ROOT = Path(__file__).resolve().parents[2]
TOOL = ["-m", "mme5.cli", "synthesize"]


def write_config(path: Path, out: Path, photos: Path, model: Path) -> Path:
    cfg = {
        "output_dir": str(out),
        "num_samples": 8,
        "seed": 11,
        "indices_per_shard": 2,
        "images": {"folder": str(photos)},
        "plan": {"languages": ["en", "de", "fr", "es"]},
        "strings": {"max_chars": 5, "min_chars": 1, "charset": "a-z "},
        "gates": {"min_score": 4.0, "min_chars": 2},
        "backend": {
            "class_path": "mme5.synth.TransformersBackend",
            "init_args": {
                "model": str(model),
                "threads": 1,
                "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 300},
            },
        },
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_tool(config: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        [sys.executable, *TOOL, "--config", str(config)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def run_in_process(config: Path) -> dict:
    """`mme5 synthesize` in this process (saves a second start-up of torch and transformers)."""
    from mme5.cli.synthesize import run

    return run(["--config", str(config)])


def contents(folder: Path) -> dict[str, list[dict]]:
    """Shard name -> decoded samples (fields, texts, image bytes) in shard order."""
    out = {}
    for shard in sorted(folder.glob("shard-*.tar")):
        rows = []
        for sample in iter_shard(shard):
            ex = decode_sample(sample)
            rows.append(
                {
                    "id": ex.id,
                    "instruction": ex.instruction,
                    "task": ex.task,
                    "modality": ex.modality,
                    "lang": ex.lang,
                    "meta": ex.meta,
                    "sides": [(s.text, s.image_bytes) for s in [ex.query, ex.positive, *ex.negatives]],
                }
            )
        out[shard.name] = rows
    return out


def test_sigkill_then_resume_matches_uninterrupted_run(tiny_vlm, photo_folder, tmp_path, caplog):
    ref_out, cut_out = tmp_path / "reference", tmp_path / "interrupted"
    cut_cfg = write_config(tmp_path / "cut.yaml", cut_out, photo_folder, tiny_vlm)
    proc = run_tool(cut_cfg)  # the run to kill: a separate process
    marker = cut_out / "_progress" / "unit-000001.json"
    deadline = time.monotonic() + 600
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed:\n" + proc.communicate()[0]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done_before = sorted(p.name for p in (cut_out / "_progress").glob("unit-*.json"))
    assert len(done_before) >= 2

    ref_stats = run_in_process(write_config(tmp_path / "ref.yaml", ref_out, photo_folder, tiny_vlm))
    assert len(done_before) < len(list((ref_out / "_progress").glob("unit-*.json"))), "killed too late"

    with caplog.at_level(logging.INFO, logger="mme5.synth"):
        cut_stats = run_in_process(cut_cfg)  # started again
    assert any("resuming" in r.getMessage() for r in caplog.records)

    ref_rows, cut_rows = contents(ref_out), contents(cut_out)
    assert cut_rows == ref_rows  # same shards, same samples, same order, same bytes
    ids = [r["id"] for rows in cut_rows.values() for r in rows]
    assert len(ids) == 8 and len(set(ids)) == 8  # no duplicates, no gaps
    assert read_sizes(cut_out) == read_sizes(ref_out)
    assert not list(cut_out.glob("**/*.tmp"))
    for key in ("accepted", "attempted", "rejects", "by_task", "by_modality", "by_lang", "completion_tokens"):
        assert cut_stats[key] == ref_stats[key], key
