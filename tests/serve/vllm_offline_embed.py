"""Embed inputs with vLLM's offline engine (pooling runner); run as a program by test_vllm_serve.py.

    python tests/serve/vllm_offline_embed.py EXPORT_FOLDER INPUTS.json OUT.npy

``INPUTS.json`` is a list of ``{"text": ..., "image": <png path>, "prompt": <instruction>}`` (any may be
missing). Each input is rendered with the export's chat template (the instruction as the system
message, the image and text as the user's), exactly as the server renders a chat-style request, and
embedded with ``LLM.embed``. The engine starts worker processes, hence a program of its own.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def main(folder: str, inputs_file: str, out_file: str) -> None:
    from transformers import AutoProcessor
    from vllm import LLM

    processor = AutoProcessor.from_pretrained(folder)
    prompts = []
    for item in json.loads(Path(inputs_file).read_text()):
        messages = []
        if item.get("prompt"):
            messages.append({"role": "system", "content": [{"type": "text", "text": item["prompt"]}]})
        content = [{"type": "image"}] if item.get("image") else []
        if item.get("text"):
            content.append({"type": "text", "text": item["text"]})
        messages.append({"role": "user", "content": content})
        prompt: dict = {"prompt": processor.apply_chat_template(messages, tokenize=False)}
        if item.get("image"):
            prompt["multi_modal_data"] = {"image": Image.open(item["image"]).convert("RGB")}
        prompts.append(prompt)
    start = time.time()
    llm = LLM(
        model=folder,
        runner="pooling",
        dtype="float32",
        max_model_len=2048,
        enforce_eager=True,
        gpu_memory_utilization=0.1,
        limit_mm_per_prompt={"image": 1},
    )
    ready = time.time()
    outputs = llm.embed(prompts)
    done = time.time()
    np.save(out_file, np.array([o.outputs.embedding for o in outputs], dtype=np.float32))
    print(f"FIGURES vllm offline: start {ready - start:.1f} s; {len(prompts)} inputs in {done - ready:.2f} s")


if __name__ == "__main__":
    main(*sys.argv[1:4])
