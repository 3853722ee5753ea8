"""The model card (README.md) an export carries: what it is, how it was trained and scored, how to load it.

:func:`model_card` writes the base model, the recipe (the run's ``config.yaml`` when the checkpoint
sits in a ``mme5 fit`` run folder), the scores the run measured (its evaluation callbacks'
``eval/<benchmark>_history.json``), the pooling and prompt format, and how to load the folder with
mme5, sentence-transformers, transformers and vLLM.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["model_card", "run_folder", "run_scores"]

#: Recipe files longer than this are cut in the card (the whole file is in the run folder).
MAX_RECIPE_LINES = 120
VLLM_FAMILIES = ("qwen2_vl", "llava_next", "llava")


def run_folder(ckpt: str | os.PathLike | None) -> Path | None:
    """The ``mme5 fit`` run folder of a checkpoint (``<run>/checkpoints/last.ckpt`` -> ``<run>``)."""
    if ckpt is None:
        return None
    path = Path(ckpt).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else None


def run_scores(run: Path | None) -> dict[str, dict[str, Any]]:
    """benchmark -> the last evaluation the run recorded (``{"step": N, "mmeb/Overall": ..., ...}``)."""
    scores: dict[str, dict[str, Any]] = {}
    if run is None or not (run / "eval").is_dir():
        return scores
    for file in sorted((run / "eval").glob("*_history.json")):
        try:
            history = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(history, list) and history and isinstance(history[-1], dict):
            scores[file.name.removesuffix("_history.json")] = history[-1]
    return scores


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def model_card(
    config: dict[str, Any],
    *,
    layout: dict[str, str],
    notes: list[str],
    ckpt: str | os.PathLike | None = None,
    repo_id: str | None = None,
) -> str:
    """The README.md of an export whose ``mme5_config.json`` is ``config``.

    Args:
        config: the export's ``mme5_config.json`` (family, encoder settings, instructions).
        layout: the family's prompt layout (:func:`mme5.model.st_format.prompt_layout`).
        notes: the one-line serving limits :func:`mme5.model.export.export` reports.
        ckpt: the checkpoint exported, for the recipe and the run's scores.
        repo_id: the hub repository the card is pushed to (the load examples name it).
    """
    encoder = config["encoder"]
    family = config["family"]
    where = repo_id or "path/to/export"
    run = run_folder(ckpt)
    pooling = "the last non-pad token" if encoder["pooling"] == "last" else "the mean over non-pad tokens"
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: feature-extraction",
        "tags: [mme5, embeddings, multimodal, sentence-transformers]",
        "---",
        "",
        f"# {Path(where).name}: a multimodal embedding model trained with mme5",
        "",
        f"- **Base model**: `{encoder['model']}` ({family}, `{config.get('model_type', family)}`), weights "
        f"in {encoder['dtype']}{', LoRA merged' if encoder.get('lora') else ''}.",
        f"- **Embedding**: {pooling} of the last hidden state"
        f"{', L2-normalised' if encoder['normalize'] else ''}; dimension from the backbone's hidden size.",
        f"- **Text limit**: {encoder['max_length']} text tokens per input (image tokens come on top).",
        "",
        "## Prompt format",
        "",
        "Each input is one text, one image, or both; an instruction (a *prompt*) goes before the text as "
        "`{instruction}\\n{text}`, laid out with the family's image token:",
        "",
        f"- text: `{layout['text_pre']}{{instruction}}\\n{{text}}{layout['text_post']}`",
        f"- image and text: `{layout['image_pre']}{{instruction}}\\n{{text}}{layout['image_post']}`",
        f"- image only: `{layout['image_only']}`",
        "",
        "The folder's chat template renders exactly this (the instruction as the system message), so "
        "sentence-transformers and vLLM build the training prompt. Saved instructions (prompt names):",
        "",
        "| name | instruction |",
        "| --- | --- |",
        *[f"| `{k}` | {v} |" for k, v in config.get("instructions", {}).items()],
        "",
        "## Scores measured by the training run",
        "",
    ]
    scores = run_scores(run)
    if scores:
        for bench, entry in scores.items():
            numbers = ", ".join(f"{k} {_fmt(v)}" for k, v in entry.items() if k != "step")
            lines.append(f"- **{bench.upper()}** (step {entry.get('step', '?')}): {numbers}")
    else:
        lines.append(
            "The run recorded no evaluation results (no `eval/*_history.json` beside the checkpoint)."
        )
    lines += ["", "## Recipe", ""]
    recipe = run / "config.yaml" if run is not None else None
    if recipe is not None and recipe.is_file():
        text = recipe.read_text().splitlines()
        cut = len(text) > MAX_RECIPE_LINES
        lines += [
            f"The `mme5 fit` configuration of the run (`{recipe.name}`{', first lines' if cut else ''}):",
            "",
            "```yaml",
            *text[:MAX_RECIPE_LINES],
            *(["# ..."] if cut else []),
            "```",
        ]
    else:
        lines.append("Not recorded: the export did not come from a `mme5 fit` run folder.")
    lines += [
        "",
        "## Load it",
        "",
        "mme5 (sentence-transformers' `encode` arguments):",
        "",
        "```python",
        "import mme5",
        f'model = mme5.load("{where}")',
        'inputs = ["a red circle", {"image": "photo.jpg", "text": "a cat"}]',
        'vectors = model.encode(inputs, prompt_name="retrieval")',
        "```",
        "",
        "sentence-transformers (>= 6):",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        f'model = SentenceTransformer("{where}")',
        'inputs = ["a red circle", {"image": "photo.jpg", "text": "a cat"}]',
        'vectors = model.encode(inputs, prompt_name="retrieval")',
        "```",
        "",
        "transformers (the prompt as above, then the pooling):",
        "",
        "```python",
        "from transformers import AutoModel, AutoProcessor",
        f'processor = AutoProcessor.from_pretrained("{where}")',
        f'model = AutoModel.from_pretrained("{where}")',
        'messages = [{"role": "system", "content": [{"type": "text", "text": "Represent the given text."}]},',
        '            {"role": "user", "content": [{"type": "text", "text": "a red circle"}]}]',
        "inputs = processor.apply_chat_template(",
        "    messages, tokenize=True, return_dict=True, return_tensors='pt'",
        ")",
        "hidden = model(**inputs).last_hidden_state",
        (
            "vector = hidden[0, -1]  # last-token pooling, as trained"
            if encoder["pooling"] == "last"
            else "vector = hidden[0].mean(0)  # mean pooling, as trained"
        ),
        *(["vector = vector / vector.norm()"] if encoder["normalize"] else []),
        "```",
        "",
    ]
    if family in VLLM_FAMILIES:
        lines += [
            "vLLM (pooling runner; the instruction as the system message of a chat-style request):",
            "",
            "```bash",
            f"vllm serve {where} --runner pooling --dtype float32",
            "curl http://localhost:8000/v1/embeddings -H 'Content-Type: application/json' -d '{",
            f'  "model": "{where}",',
            '  "messages": [{"role": "system", "content": "Represent the given text."},',
            '               {"role": "user", "content": [{"type": "text", "text": "a red circle"}]}]}\'',
            "```",
            "",
        ]
    if notes:
        lines += ["## Limits", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)
