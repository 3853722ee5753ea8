"""Local Hugging Face transformers backend with grammar-constrained decoding through xgrammar.

CPU-capable; the tests run it with a tiny random-initialised VLM, whose output is valid JSON of the
schema only because every step's logits are masked by xgrammar's token bitmask.
"""

from __future__ import annotations

import json
from typing import Any

from .base import Backend, BackendError, Generation, GenerationRequest, SamplingConfig


class TransformersBackend(Backend):
    """A VLM loaded with ``AutoModelForImageTextToText``; one request at a time, seeded per request."""

    name = "transformers"

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: str = "float32",
        sampling: SamplingConfig | None = None,
        chat_template: str | None = None,
        threads: int | None = None,
    ):
        """
        Args:
            model: local folder of a Hugging Face VLM (weights, processor, tokenizer with a chat template),
                or a ``tiny-<family>`` twin of ``mme5.backbones`` (random weights, for tests and demos).
            device: torch device (``cpu``, ``cuda``, ``cuda:1``).
            dtype: ``float32``, ``bfloat16`` or ``float16``.
            sampling: decoding settings.
            chat_template: a Jinja chat template replacing the processor's own.
            threads: CPU threads torch may use (default: torch's choice). On a shared or small
                machine 1 is often fastest for small models.
        """
        super().__init__(sampling)
        self.model_path, self.device, self.dtype, self.chat_template = model, device, dtype, chat_template
        self.threads = threads
        self._model: Any = None
        self._grammars: dict[str, Any] = {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.model_path, "device": self.device, "dtype": self.dtype}

    def _load(self) -> None:
        import torch
        import xgrammar as xgr
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if self.threads:
            torch.set_num_threads(self.threads)

        path = self.model_path
        try:
            processor = None
            try:  # mme5's adapters know each family's quirks (e.g. Qwen2-VL without torchvision)
                from mme5.backbones import BackboneError, get_adapter
            except ImportError:
                pass
            else:
                try:
                    adapter = get_adapter(path)  # also resolves tiny-<family> twins
                    path = str(getattr(adapter, "path", None) or path)
                    processor = adapter.load_processor(path)
                except BackboneError:
                    processor = None  # a family mme5 does not train on can still generate
            self._processor = processor or AutoProcessor.from_pretrained(path)
            self._model = (
                _auto_model(AutoModelForImageTextToText, path, getattr(torch, self.dtype))
                .to(self.device)
                .eval()
            )
        except (OSError, ValueError) as exc:
            raise BackendError(
                f"transformers backend: cannot load model '{self.model_path}': {exc}"
            ) from None
        tokenizer = self._processor.tokenizer
        vocab = self._model.config.get_text_config().vocab_size
        eos = [tokenizer.eos_token_id, self._model.generation_config.eos_token_id]
        stop = sorted({t for e in eos for t in (e if isinstance(e, list) else [e]) if isinstance(t, int)})
        if not stop:
            raise BackendError(
                f"transformers backend: model '{self.model_path}' has no end-of-sequence token"
            )
        self._stop_ids = stop
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab, stop_token_ids=stop)
        self._compiler = xgr.GrammarCompiler(info)
        self._torch = torch

    def start(self) -> None:
        if self._model is None:
            self._load()

    def _grammar(self, schema: dict[str, Any]):
        key = json.dumps(schema)  # property order kept: the model writes fields in schema order
        if key not in self._grammars:
            # No free whitespace: a weak model otherwise loops on spaces and newlines between tokens.
            self._grammars[key] = self._compiler.compile_json_schema(key, any_whitespace=False)
        return self._grammars[key]

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        if self._model is None:
            self._load()
        return [self._one(r) for r in requests]

    def _one(self, req: GenerationRequest) -> Generation:
        from xgrammar.contrib.hf import LogitsProcessor

        torch = self._torch
        proc = self._processor
        text = proc.apply_chat_template(
            req.prompt.messages(),
            add_generation_prompt=True,
            tokenize=False,
            chat_template=self.chat_template,
        )
        inputs = proc(text=[text], images=req.prompt.images or None, return_tensors="pt").to(self.device)
        s = self.sampling
        greedy = s.temperature <= 0
        torch.manual_seed(req.seed)
        with torch.no_grad():
            out = self._model.generate(
                **inputs,
                max_new_tokens=s.max_tokens,
                do_sample=not greedy,
                temperature=None if greedy else s.temperature,
                top_p=None if greedy else s.top_p,
                logits_processor=[LogitsProcessor(self._grammar(req.schema))],
                eos_token_id=self._stop_ids,
                pad_token_id=proc.tokenizer.pad_token_id or self._stop_ids[0],
            )
        new = out[0, inputs["input_ids"].shape[1] :].tolist()
        finished = bool(new) and new[-1] in self._stop_ids
        body = [t for t in new if t not in self._stop_ids]
        return Generation(
            proc.tokenizer.decode(body, skip_special_tokens=True),
            prompt_tokens=int(inputs["input_ids"].shape[1]),
            completion_tokens=len(new),
            finish_reason="stop" if finished else "length",
        )


def _auto_model(auto_class: Any, path: str, dtype: Any) -> Any:
    """``auto_class.from_pretrained`` (the Auto classes' signatures are generated, so typed loosely)."""
    return auto_class.from_pretrained(path, dtype=dtype)
