"""Any OpenAI-compatible chat-completions server (``vllm serve``, the vLLM API server, ...).

Requests go over plain HTTP (standard library), ``concurrency`` at a time, with the JSON schema as
``response_format`` so the server decodes under it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .base import Backend, Generation, GenerationRequest, SamplingConfig, jpeg_data_url


class OpenAIServerBackend(Backend):
    """Chat completions with ``response_format: json_schema``; failed requests are retried, then counted."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 600.0,
        max_retries: int = 3,
        extra_body: dict[str, Any] | None = None,
        sampling: SamplingConfig | None = None,
    ):
        """
        Args:
            base_url: server root including ``/v1`` (e.g. ``http://127.0.0.1:8000/v1``).
            model: model name as the server knows it.
            api_key: bearer token, if the server wants one.
            concurrency: requests in flight at once (the server batches them).
            timeout_s: per-request timeout.
            max_retries: retries of a request after a connection error or a 5xx answer.
            extra_body: extra JSON fields of every request (server-specific options).
            sampling: decoding settings.
        """
        super().__init__(sampling)
        self.base_url, self.model, self.api_key = base_url.rstrip("/"), model, api_key
        self.concurrency, self.timeout_s, self.max_retries = concurrency, timeout_s, max_retries
        self.extra_body = extra_body or {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base_url": self.base_url, "model": self.model}

    def _body(self, req: GenerationRequest) -> dict[str, Any]:
        s = self.sampling
        messages = req.prompt.messages(
            lambda img: {"type": "image_url", "image_url": {"url": jpeg_data_url(img)}}
        )
        return {
            "model": self.model,
            "messages": messages,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "seed": req.seed,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "mme5_sample", "schema": req.schema, "strict": True},
            },
            **self.extra_body,
        }

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(f"{self.base_url}/chat/completions", data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
            return json.loads(resp.read())

    def _one(self, req: GenerationRequest) -> Generation:
        body = self._body(req)
        error = ""
        for attempt in range(self.max_retries + 1):
            try:
                answer = self._post(body)
                choice = answer["choices"][0]
                usage = answer.get("usage") or {}
                return Generation(
                    choice["message"].get("content"),
                    int(usage.get("prompt_tokens", 0)),
                    int(usage.get("completion_tokens", 0)),
                    choice.get("finish_reason"),
                )
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}: {exc.read()[:300].decode(errors='replace')}"
                if exc.code < 500:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            except (KeyError, IndexError, json.JSONDecodeError) as exc:
                error = f"malformed answer: {exc}"
                break
            time.sleep(min(2.0**attempt, 30.0))
        return Generation(None, error=f"{self.base_url}: {error}")

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self._one, requests))
