"""A tiny random-initialised LLaVA with an offline byte-level BPE tokenizer (tests only).

Sizes follow what vLLM's CPU build accepts (text head size 32). Runs under the main environment
(transformers 5.24) and the vLLM one (transformers 5.19).
"""

from __future__ import annotations

import json
from pathlib import Path

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

    keys = ["visual_interpretation", *INTERPRETATION_KEYS, "sample", "instruction", "query", "positive",
            "hard_negative", "self_evaluation", *SCORE_KEYS, "improvements", "revised_sample"]
    # The JSON skeleton repeated, so BPE merges keys and punctuation into few tokens (short generations).
    skeleton = " ".join(f'{{"{k}": "' for k in keys) + ' ", "' + '"}, "' + '"}}'
    texts = [prompts.SYSTEM_PROMPT, prompts.STYLE_EXAMPLES, *prompts.TASK_GUIDE.values(),
             *prompts.QUERY_GUIDE.values(), *prompts.DOC_GUIDE.values(), *prompts.FIELD_GUIDE.values(),
             "the quick brown fox jumps over the lazy dog 0123456789"] + [skeleton] * 20
    return texts * 4


def build_tiny_llava(out_dir: str | Path, seed: int = 0, vocab_size: int = 700) -> Path:
    """Save a tiny LLaVA (weights, tokenizer, processor, chat template) to ``out_dir``; returns it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|eos|>",
                                        bos_token=None, unk_token=None, extra_special_tokens={"image_token": "<image>"})
    tokenizer.chat_template = CHAT_TEMPLATE
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=32, patch_size=8, projection_dim=64),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=end_id, bos_token_id=None),
        image_token_id=image_token_id, vision_feature_layer=-1, vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = end_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                               num_additional_image_tokens=1, image_token="<image>")
    processor.save_pretrained(out)
    _rename_for_vllm(out)
    return out


def _rename_for_vllm(folder: Path) -> None:
    """vLLM's LLaVA loader expects ``vision_tower.vision_model.*``; newer transformers save ``vision_tower.*``."""
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
