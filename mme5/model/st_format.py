"""The serving files of an export: sentence-transformers' module files and the embedding chat template.

An export folder is a transformers checkpoint; these files let other runtimes embed exactly as mme5
trained:

* ``chat_template.jinja`` (and ``chat_template.json`` where the processor keeps one): a chat template
  that renders one input -- a system message holding the instruction, a user message holding an
  image and/or a text -- into the very prompt mme5 builds (``{instruction}\\n{text}`` laid out with the
  family's image token by :meth:`~mme5.backbones.base.BackboneAdapter.format_text`). It is derived from
  the adapter by rendering probe sides, so it follows each family's formatting. sentence-transformers
  and vLLM both render their multimodal inputs through it; the processor then adds the tokenizer's
  special tokens as mme5's processor call does.
* ``modules.json``, ``sentence_bert_config.json`` (the transformer module: the ``message`` modality,
  i.e. every input goes through the chat template), ``1_Pooling/config.json`` (last token or mean, as
  trained), ``2_Normalize`` (when trained normalised) and ``config_sentence_transformers.json`` (the
  saved instructions as ``prompts``: sentence-transformers puts a prompt in the system message).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PIL import Image

from mme5.records import Side

__all__ = [
    "POOLING_MODES",
    "embedding_chat_template",
    "prompt_layout",
    "sentence_transformers_note",
    "serving_notes",
    "write_chat_template",
    "write_sentence_transformers_files",
]

#: mme5 pooling -> sentence-transformers' ``pooling_mode``.
POOLING_MODES = {"last": "lasttoken", "mean": "mean"}
#: A text no family rewrites: it marks where the text goes in a formatted prompt.
_PROBE = "MME5PROBETEXT"
#: The sentence-transformers files an export writes (besides the chat template).
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def _split(formatted: str, what: str) -> tuple[str, str]:
    if formatted.count(_PROBE) != 1:
        raise ValueError(f"the family's prompt for {what} does not hold the text exactly once: {formatted!r}")
    before, after = formatted.split(_PROBE)
    return before, after


def prompt_layout(adapter: Any) -> dict[str, str]:
    """How ``adapter`` lays out a side's text: the strings around the text of a text-only side and of an
    image side, and the whole prompt of an image without text."""
    image = Image.new("RGB", (8, 8))
    text_pre, text_post = _split(adapter.format_text(Side(_PROBE)), "a text")
    image_pre, image_post = _split(adapter.format_text(Side(_PROBE, image)), "an image with text")
    return {
        "text_pre": text_pre,
        "text_post": text_post,
        "image_pre": image_pre,
        "image_post": image_post,
        "image_only": adapter.format_text(Side(None, image)),
    }


def _literal(text: str) -> str:
    """A Jinja string literal (JSON's escapes are Jinja's)."""
    return json.dumps(text)


def embedding_chat_template(adapter: Any) -> str:
    """A chat template that renders one embedding input into mme5's prompt for ``adapter``'s family.

    The system message's text is the instruction; the user message holds at most one image part
    (``image``, or ``image_url`` / ``input_image`` as OpenAI-style clients send) and text parts. The
    text becomes ``{instruction}\\n{text}`` (either may be missing), laid out as the family formats a
    side. No special tokens are added here: the processor adds the tokenizer's, as in training.
    """
    lay = prompt_layout(adapter)
    image_types = "('image', 'image_url', 'input_image')"
    add_text = (
        "{%- if message['role'] == 'system' -%}{%- set ns.prompt = ns.prompt ~ TEXT -%}"
        "{%- else -%}{%- set ns.text = ns.text ~ TEXT -%}{%- endif -%}"
    )
    return (
        "{#- mme5 embedding prompt: the instruction (system message), then the user's image and/or text,"
        " laid out as in training -#}\n"
        "{%- set ns = namespace(prompt='', text='', images=0) -%}\n"
        "{%- for message in messages -%}\n"
        "{%- if message['content'] is string -%}\n"
        + add_text.replace("TEXT", "message['content']")
        + "\n{%- else -%}\n"
        "{%- for part in message['content'] -%}\n"
        f"{{%- if part['type'] in {image_types} -%}}{{%- set ns.images = ns.images + 1 -%}}\n"
        "{%- elif part['type'] == 'text' -%}"
        + add_text.replace("TEXT", "part['text']")
        + "\n{%- else -%}{{ raise_exception('an mme5 embedding input holds text and image parts only, "
        "not ' ~ part['type']) }}\n"
        "{%- endif -%}\n"
        "{%- endfor -%}\n"
        "{%- endif -%}\n"
        "{%- endfor -%}\n"
        "{%- if ns.images > 1 -%}{{ raise_exception('an mme5 embedding input holds at most one image') }}"
        "{%- endif -%}\n"
        "{%- set body = ns.prompt ~ ('\\n' if ns.prompt and ns.text else '') ~ ns.text -%}\n"
        "{%- if ns.images and body -%}"
        f"{{{{ {_literal(lay['image_pre'])} }}}}{{{{ body }}}}{{{{ {_literal(lay['image_post'])} }}}}\n"
        f"{{%- elif ns.images -%}}{{{{ {_literal(lay['image_only'])} }}}}\n"
        f"{{%- else -%}}{{{{ {_literal(lay['text_pre'])} }}}}{{{{ body }}}}"
        f"{{{{ {_literal(lay['text_post'])} }}}}\n"
        "{%- endif -%}"
    )


def write_chat_template(folder: str | os.PathLike, template: str) -> None:
    """Make ``template`` the folder's chat template, wherever the processor and tokenizer keep one."""
    out = Path(folder)
    (out / "chat_template.jinja").write_text(template)
    legacy = out / "chat_template.json"
    if legacy.is_file():
        legacy.write_text(json.dumps({"chat_template": template}, indent=2, ensure_ascii=False))
    for name in ("tokenizer_config.json", "processor_config.json"):
        file = out / name
        if not file.is_file():
            continue
        data = json.loads(file.read_text())
        if isinstance(data, dict) and "chat_template" in data:
            data["chat_template"] = template
            file.write_text(json.dumps(data, indent=2, ensure_ascii=False))


def adds_special_tokens(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` adds special tokens (a BOS, an EOS) to a text by default."""
    return tokenizer("a")["input_ids"] != tokenizer("a", add_special_tokens=False)["input_ids"]


def serving_notes(family: str, tokenizer: Any) -> list[str]:
    """One line for each thing sentence-transformers or vLLM cannot reproduce for this export."""
    notes = []
    st_note = sentence_transformers_note(family)
    if st_note:
        notes.append(st_note)
    if family == "mllama":
        notes.append(
            "vLLM: Mllama (Llama-3.2-Vision) is not served by vLLM after 0.10.2; train Qwen2-VL, "
            "Qwen2.5-VL, Qwen3-VL or LLaVA-NeXT to serve with vLLM"
        )
    elif family in ("llava", "llava_next"):
        notes.append(
            "vLLM: vLLM 0.32 does not load this export (its vision tower weights, saved by transformers "
            "5 as vision_tower.embeddings.*, do not match vLLM's vision_tower.vision_model.* names); "
            "Qwen2-VL exports serve"
        )
    if family != "mllama" and adds_special_tokens(tokenizer):
        notes.append(
            'vLLM: send chat-style /v1/embeddings requests with "add_special_tokens": true (this '
            "tokenizer's special tokens are part of the training prompt; vLLM leaves them out of chat "
            "requests by default)"
        )
    return notes


def sentence_transformers_note(family: str) -> str | None:
    """One line on what sentence-transformers cannot reproduce for ``family`` (None: nothing)."""
    if family == "mllama":
        return (
            "sentence-transformers: Mllama text-only inputs embed as in mme5 only in batches without "
            "images (transformers' Mllama attends to a blank image for text rows of a mixed batch); "
            "encode texts and images in separate calls"
        )
    return None


def write_sentence_transformers_files(
    folder: str | os.PathLike,
    *,
    hidden_size: int,
    pooling: str,
    normalize: bool,
    instructions: dict[str, str],
    dtype: str,
) -> list[str]:
    """Write sentence-transformers' module files into an export ``folder``; returns the files written.

    The transformer module is the folder itself (``AutoModel`` of the saved model type, its processor
    and chat template); pooling and normalisation are as trained; ``prompts`` are the instructions.
    """
    out = Path(folder)
    modules: list[dict[str, Any]] = [
        {
            "idx": 0,
            "name": "0",
            "path": "",
            "type": "sentence_transformers.base.modules.transformer.Transformer",
        },
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.base.modules.normalize.Normalize",
            }
        )
    written = []

    def put(name: str, data: Any) -> None:
        file = out / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        written.append(name)

    put("modules.json", modules)
    forward = {"method": "forward", "method_output_name": "last_hidden_state"}
    put(
        "sentence_bert_config.json",
        {
            "transformer_task": "feature-extraction",
            # every input goes through the chat template (message); the other entries declare the input
            # forms sentence-transformers then accepts (it turns each into a message)
            "modality_config": {
                **{m: dict(forward) for m in ("text", "image", "image+text")},
                "message": {**forward, "format": "structured"},
            },
            "module_output_name": "token_embeddings",
            "model_kwargs": {"dtype": dtype},
        },
    )
    put(
        "1_Pooling/config.json",
        {"embedding_dimension": hidden_size, "pooling_mode": POOLING_MODES[pooling], "include_prompt": True},
    )
    if normalize:
        put(
            "2_Normalize/config.json",
            {"module_input_name": "sentence_embedding", "module_output_name": "sentence_embedding"},
        )
    put(
        "config_sentence_transformers.json",
        {
            "model_type": "SentenceTransformer",
            "prompts": dict(instructions),
            "default_prompt_name": None,
            "similarity_fn_name": "cosine" if normalize else "dot",
        },
    )
    return written
