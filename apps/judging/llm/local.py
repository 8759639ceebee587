"""Local transformers backend: a chat model loaded in-process from a folder (no hub access).

Same ``chat`` interface and ``CallRecord`` as the HTTP client, with exact token counts from the
model's own tokenizer. Generation is serialised with a lock: one model on one device gains
nothing from concurrent ``generate`` calls and would need the memory twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apps.judging.llm.config import EndpointConfig, EndpointConfigError
from apps.judging.llm.records import CallRecord, ChatResult, LLMBadResponse

Message = dict[str, Any]
_models: dict[str, tuple[Any, Any]] = {}
_models_lock = threading.Lock()


def check_model_folder(path: str) -> list[str]:
    """Problems that would stop a folder from loading, without importing torch (for the web)."""
    folder = Path(path)
    if not folder.is_dir():
        return [f"{path} is not a folder"]
    problems = []
    if not (folder / "config.json").is_file():
        problems.append("config.json is missing")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        problems.append("no tokenizer files (tokenizer.json / tokenizer_config.json)")
    return problems


def _load(path: str) -> tuple[Any, Any]:
    with _models_lock:
        if path not in _models:
            # lazy: torch only when a local model is loaded, never in the web process
            from transformers import AutoModelForCausalLM, AutoTokenizer

            problems = check_model_folder(path)
            if problems:
                raise EndpointConfigError(f"Cannot load {path}: {'; '.join(problems)}")
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            # lazy: torch only when a local model is loaded, never in the web process
            import torch

            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
            # On a GPU host the model goes to the GPU; CI and laptops stay on the CPU.
            model.to("cuda" if torch.cuda.is_available() else "cpu")
            model.eval()
            _models[path] = (tokenizer, model)
        return _models[path]


class LocalChatClient:
    def __init__(self, config: EndpointConfig) -> None:
        if config.backend != "transformers":
            raise EndpointConfigError("LocalChatClient needs backend='transformers'")
        self.config = config
        self._lock = threading.Lock()

    def close(self) -> None:
        pass

    def chat(self, messages: Sequence[Message], *, max_retries: int | None = None, **params: Any) -> ChatResult:
        # lazy: torch only when a local model is loaded, never in the web process
        import torch

        cfg = self.config
        options = {**cfg.params, **params}
        max_new = int(options.get("max_tokens") or options.get("max_new_tokens") or 256)
        temperature = float(options.get("temperature", 0.0) or 0.0)
        record = CallRecord(endpoint=cfg.name, model=cfg.model, attempts=1)
        started = time.monotonic()
        tokenizer, model = _load(cfg.model)
        encoded = tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        input_ids = encoded["input_ids"].to(model.device)
        attention_mask = encoded.get("attention_mask")
        if attention_mask is not None:
            attention_mask = attention_mask.to(model.device)
        generate_kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "do_sample": temperature > 0,
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        }
        if temperature > 0:
            generate_kwargs["temperature"] = temperature
        with self._lock, torch.no_grad():
            t0 = time.monotonic()
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)
            record.latency_s = time.monotonic() - t0
        new_tokens = output[0, input_ids.shape[1]:]
        if new_tokens.numel() == 0:
            raise LLMBadResponse("the local model generated no tokens", record)
        text = tokenizer.decode(new_tokens, skip_special_tokens=True)
        record.prompt_tokens = int(input_ids.shape[1])
        record.completion_tokens = int(new_tokens.numel())
        record.cost_usd = cfg.cost(record.prompt_tokens, record.completion_tokens)
        record.total_s = time.monotonic() - started
        record.ok = True
        eos = tokenizer.eos_token_id
        finish = "stop" if eos is not None and int(new_tokens[-1]) == eos else "length"
        return ChatResult(text=text, record=record, finish_reason=finish)
