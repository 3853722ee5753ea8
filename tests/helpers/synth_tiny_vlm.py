"""The synthesis tests' tiny LLaVA: the backbones' tiny-twin builder with vLLM-friendly sizes.

Its tokenizer learns the synthesis prompts and JSON skeleton (short generations) and speaks a
``<|user|>``/``<|assistant|>`` chat template. Runs under the main environment (transformers 5.24)
and the vLLM one (transformers 5.19).
"""

from __future__ import annotations

import json
from pathlib import Path

from mme5.backbones.llava import TinySizes
from mme5.backbones.llava import build_tiny_llava as build_tiny_llava_twin
from mme5.backbones.tokenizer import build_tokenizer

CHAT_TEMPLATE = (
    "{%- for m in messages -%}<|{{ m['role'] }}|>"
    "{%- if m['content'] is string -%}{{ m['content'] }}"
    "{%- else -%}{%- for c in m['content'] -%}"
    "{%- if c['type'] in ('image', 'image_url', 'image_pil') -%}<image>"
    "{%- elif c['type'] == 'text' -%}{{ c['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}<|end|>{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)
SPECIALS = ["<pad>", "<|eos|>", "<image>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


def _corpus() -> list[str]:
    from mme5.synth import prompts
    from mme5.synth.schema import INTERPRETATION_KEYS, SCORE_KEYS

    keys = [
        "visual_interpretation",
        *INTERPRETATION_KEYS,
        "sample",
        "instruction",
        "query",
        "positive",
        "hard_negative",
        "self_evaluation",
        *SCORE_KEYS,
        "improvements",
        "revised_sample",
    ]
    # The JSON skeleton repeated, so BPE merges keys and punctuation into few tokens (short generations).
    skeleton = " ".join(f'{{"{k}": "' for k in keys) + ' ", "' + '"}, "' + '"}}'
    texts = [
        prompts.SYSTEM_PROMPT,
        prompts.STYLE_EXAMPLES,
        *prompts.TASK_GUIDE.values(),
        *prompts.QUERY_GUIDE.values(),
        *prompts.DOC_GUIDE.values(),
        *prompts.FIELD_GUIDE.values(),
        "the quick brown fox jumps over the lazy dog 0123456789",
    ] + [skeleton] * 20
    return texts * 4


#: vLLM's CPU attention accepts text head sizes 32, 64, 80, ...: hidden 128 over 4 heads.
SIZES = TinySizes(
    text_hidden=128,
    text_intermediate=256,
    text_kv_heads=4,
    vision_hidden=64,
    vision_intermediate=128,
    projection_dim=64,
)


def build_tiny_llava(out_dir: str | Path, seed: int = 0, vocab_size: int = 700) -> Path:
    """Save a tiny LLaVA (weights, tokenizer, processor, chat template) to ``out_dir``; returns it."""
    from transformers import CLIPImageProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(
        SPECIALS,
        eos_token="<|eos|>",
        pad_token="<pad>",
        extra_attributes={"image_token": "<image>"},
        chat_template=CHAT_TEMPLATE,
        vocab_size=vocab_size,
        samples=_corpus(),
    )
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    # CLIPImageProcessor: the vLLM environment's transformers has no PIL LLaVA image processor.
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    build_tiny_llava_twin(
        out,
        tokenizer,
        seed=seed,
        sizes=SIZES,
        chat_template=CHAT_TEMPLATE,
        eos_token_id=end_id,
        image_processor=image_processor,
    )
    _rename_for_vllm(out)
    return out


def _rename_for_vllm(folder: Path) -> None:
    """vLLM's LLaVA loader expects ``vision_tower.vision_model.*``; newer transformers write
    ``vision_tower.*``."""
    from safetensors.torch import load_file, save_file

    for f in folder.glob("*.safetensors"):
        weights = load_file(f)
        renamed = {}
        for k, v in weights.items():
            if ".vision_tower." in f".{k}" and ".vision_model." not in k:
                head, _, tail = k.partition("vision_tower.")
                k = f"{head}vision_tower.vision_model.{tail}"
            renamed[k] = v
        if renamed.keys() != weights.keys():
            save_file(renamed, f, metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    if index.exists():
        raise RuntimeError("tiny model unexpectedly sharded; rename its index too")


if __name__ == "__main__":  # python tests/synth/synth_tiny_vlm.py OUT_DIR
    import sys

    print(build_tiny_llava(sys.argv[1]))
    print(json.dumps(sorted(p.name for p in Path(sys.argv[1]).iterdir())))
