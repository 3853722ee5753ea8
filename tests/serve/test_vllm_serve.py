"""An mme5 export of a tiny Qwen2-VL twin served by vLLM's pooling runner embeds as mme5 does.

Runs only in the vLLM environment (``scripts/make_vllm_env.sh``):

    .venv-vllm/bin/python -m pytest -q -m vllm tests/serve

Both paths are checked -- the OpenAI-compatible server's ``/v1/embeddings`` (chat-style requests:
text, image, image+text, with and without an instruction; and a plain ``input`` text) and the offline
engine's ``LLM.embed`` -- against ``mme5.load(folder).encode`` in fp32: cosine >= 0.9999.

vLLM's CPU attention needs a head size of 32, 64, 80, ...; mme5's tiny Qwen2-VL twin has 16, so the
twin is rebuilt here with the same tokenizer, processor and vision tower and 2 text heads of 32.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[2]
MIN_COSINE = 0.9999


@pytest.fixture(scope="module", autouse=True)
def _needs_vllm():
    pytest.importorskip("vllm", reason="needs the vLLM environment: scripts/make_vllm_env.sh")


def vllm_sized_qwen2_vl(out: Path, seed: int = 0) -> Path:
    """mme5's tiny Qwen2-VL twin with text heads of size 32 (vLLM's CPU attention has no 16)."""
    import torch
    from transformers import AutoConfig, Qwen2VLForConditionalGeneration

    from mme5.backbones import get_adapter

    twin = Path(get_adapter("tiny-qwen2-vl").source)
    shutil.copytree(twin, out)
    config = AutoConfig.from_pretrained(str(out))
    text = config.get_text_config()
    text.num_attention_heads, text.num_key_value_heads = 2, 2
    head_dim = text.hidden_size // text.num_attention_heads
    text.head_dim = head_dim
    rope = dict(getattr(text, "rope_parameters", None) or {})
    rope["mrope_section"] = [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]  # sums to head_dim / 2
    text.rope_parameters = rope
    if getattr(text, "rope_scaling", None):
        text.rope_scaling = {**text.rope_scaling, "mrope_section": rope["mrope_section"]}
    torch.manual_seed(seed)
    Qwen2VLForConditionalGeneration(config).save_pretrained(out)
    return out


def noise(seed: int, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The export, its inputs (written as PNGs) and mme5's embeddings of them."""
    import mme5
    from mme5.model.encoder import Encoder
    from mme5.model.export import export

    root = tmp_path_factory.mktemp("serve")
    folder = export(Encoder(str(vllm_sized_qwen2_vl(root / "twin")), max_length=48), root / "export")
    images = []
    for i, size in enumerate([(40, 30), (64, 50), (32, 32)]):
        path = root / f"image{i}.png"
        noise(i, size).save(path)
        images.append(path)
    model = mme5.load(str(folder), device="cpu")
    retrieval = model.prompts["retrieval"]
    inputs = [
        {"text": "a red circle"},
        {"text": "Кошка на столе", "prompt": retrieval},
        {"image": str(images[0])},
        {"image": str(images[1]), "prompt": model.prompts["image"]},
        {"image": str(images[2]), "text": "what is shown in the photo?"},
        {"image": str(images[0]), "text": "a photo of noise", "prompt": model.prompts["vqa"]},
    ]
    expected = np.stack(
        [
            model.encode(
                {k: (Image.open(v) if k == "image" else v) for k, v in item.items() if k != "prompt"},
                prompt=item.get("prompt"),
            )
            for item in inputs
        ]
    )
    return folder, inputs, expected


def assert_close(got: np.ndarray, want: np.ndarray, label: str) -> None:
    assert got.shape == want.shape, (label, got.shape, want.shape)
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    print(
        f"\nFIGURES {label}: cosine to mme5 min {cosine.min():.7f}, "
        f"max abs diff {np.abs(got - want).max():.2e}"
    )
    assert cosine.min() >= MIN_COSINE, (label, cosine)


def test_offline_engine_embed(served, tmp_path):
    folder, inputs, expected = served
    spec, out = tmp_path / "inputs.json", tmp_path / "out.npy"
    spec.write_text(json.dumps(inputs))
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "serve" / "vllm_offline_embed.py"),
            str(folder),
            str(spec),
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    print(proc.stdout.strip().splitlines()[-1])
    assert_close(np.load(out), expected, "vllm offline LLM.embed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{url}: HTTP {exc.code}: {exc.read().decode()[:2000]}") from None


def chat_messages(item: dict) -> list[dict]:
    """The OpenAI-style messages of one input: the instruction as the system message."""
    messages = []
    if item.get("prompt"):
        messages.append({"role": "system", "content": item["prompt"]})
    content: list[dict] = []
    if item.get("image"):
        data = base64.b64encode(Path(item["image"]).read_bytes()).decode()
        content.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}})
    if item.get("text"):
        content.append({"type": "text", "text": item["text"]})
    messages.append({"role": "user", "content": content})
    return messages


def test_openai_compatible_server_embeddings(served, tmp_path):
    folder, inputs, expected = served
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(folder),
        "--runner",
        "pooling",
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
        "--limit-mm-per-prompt",
        '{"image": 1}',
    ]
    log = tmp_path / "server.log"
    start = time.time()
    with open(log, "w") as sink:
        server = subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env=dict(os.environ))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while True:
            if server.poll() is not None:
                pytest.fail(f"vllm server exited with {server.returncode}:\n{log.read_text()[-6000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.time() > deadline:
                pytest.fail(f"vllm server did not start in time:\n{log.read_text()[-6000:]}")
            time.sleep(2)
        print(f"\nFIGURES vllm server: start {time.time() - start:.1f} s")
        got = []
        for item in inputs:
            reply = _post(
                f"{base}/v1/embeddings",
                {"model": str(folder), "messages": chat_messages(item), "encoding_format": "float"},
            )
            got.append(reply["data"][0]["embedding"])
        assert_close(np.array(got, dtype=np.float32), expected, "vllm server /v1/embeddings (chat)")
        # a plain text input (completion-style request, no chat template) is the text-only prompt as is
        reply = _post(f"{base}/v1/embeddings", {"model": str(folder), "input": ["a red circle"]})
        assert_close(
            np.array([reply["data"][0]["embedding"]], dtype=np.float32), expected[:1], "server input"
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
