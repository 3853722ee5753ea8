"""vLLM's offline engine: the whole unit of prompts in one batched ``LLM.chat`` call."""

from __future__ import annotations

from typing import Any

from .base import Backend, BackendError, Generation, GenerationRequest, SamplingConfig


class VLLMOfflineBackend(Backend):
    """Structured generation with ``vllm.LLM`` (JSON schema per request, seed per request)."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        max_model_len: int = 8192,
        max_images: int = 3,
        structured_backend: str = "xgrammar",
        disable_any_whitespace: bool = True,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        enforce_eager: bool = False,
        engine_kwargs: dict[str, Any] | None = None,
        sampling: SamplingConfig | None = None,
    ):
        """
        Args:
            model: Hugging Face model id or local folder of a VLM vLLM supports.
            dtype: weights dtype (``auto``, ``bfloat16``, ``float32`` on CPU).
            max_model_len: context length the engine reserves.
            max_images: images per prompt (the synthesis shows at most 3).
            structured_backend: vLLM structured-output backend (``xgrammar``, ``guidance``, ``auto``).
            disable_any_whitespace: forbid free whitespace in the JSON (weak models loop on it).
            tensor_parallel_size: GPUs per model replica.
            gpu_memory_utilization: share of GPU memory vLLM may take.
            enforce_eager: skip CUDA graphs (faster start, slower decoding).
            engine_kwargs: any other ``vllm.LLM`` argument.
            sampling: decoding settings.
        """
        super().__init__(sampling)
        self.model = model
        self.engine_args: dict[str, Any] = {
            "model": model,
            "dtype": dtype,
            "max_model_len": max_model_len,
            "limit_mm_per_prompt": {"image": max_images},
            "structured_outputs_config": {
                "backend": structured_backend,
                "disable_any_whitespace": disable_any_whitespace,
            },
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager,
            "seed": 0,
            **(engine_kwargs or {}),
        }
        self._llm = None
        self.start_seconds: float | None = None

    def describe(self) -> dict[str, Any]:
        args = {k: v for k, v in self.engine_args.items() if k != "gpu_memory_utilization"}
        return {**super().describe(), **args}

    def _engine(self):
        if self._llm is None:
            import time

            try:
                from vllm import LLM  # pyright: ignore[reportMissingImports] (own environment)
            except ImportError as exc:
                raise BackendError(
                    "the vllm backend needs vLLM: pip install 'mme5[synth]' "
                    f"(or scripts/make_vllm_env.sh for the CPU build): {exc}"
                ) from None
            t0 = time.perf_counter()
            self._llm = LLM(**self.engine_args)
            self.start_seconds = time.perf_counter() - t0
        return self._llm

    def start(self) -> None:
        self._engine()

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        from vllm import SamplingParams  # pyright: ignore[reportMissingImports]
        from vllm.sampling_params import StructuredOutputsParams  # pyright: ignore[reportMissingImports]

        llm = self._engine()
        s = self.sampling
        conversations = [
            r.prompt.messages(lambda img: {"type": "image_pil", "image_pil": img}) for r in requests
        ]
        params = [
            SamplingParams(
                temperature=s.temperature,
                top_p=s.top_p if s.temperature > 0 else 1.0,
                max_tokens=s.max_tokens,
                seed=r.seed,
                structured_outputs=StructuredOutputsParams(json=r.schema),
            )
            for r in requests
        ]
        outputs = llm.chat(conversations, sampling_params=params, use_tqdm=False)
        result = []
        for out in outputs:
            o = out.outputs[0]
            result.append(
                Generation(
                    o.text,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(o.token_ids),
                    finish_reason=o.finish_reason,
                )
            )
        return result

    def close(self) -> None:
        if self._llm is not None:
            core = getattr(self._llm.llm_engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()  # stop the engine processes now rather than at interpreter exit
        self._llm = None
