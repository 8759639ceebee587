"""Policy serving for large models: an OpenAI-compatible inference server, reloaded after each update.

Small policies generate on the worker (``rl.LocalPolicy``). A large one is served by vLLM or
SGLang on its own GPUs; the agent talks to it through the apps/judging/llm HTTP client like to any
endpoint, and after every update the trainer saves the new weights to a folder the server can
read and asks it to load them:

- SGLang: ``POST {server}/update_weights_from_disk {"model_path": folder}`` (``reload="sglang"``);
- vLLM: ``POST {server}/v1/load_lora_adapter {"lora_name": name, "lora_path": folder}`` for LoRA
  policies (``reload="vllm_lora"``; the rollouts then ask for the adapter's name as the model).
  The folder is the adapter alone (``adapter_config.json`` + its matrices), on the base model the
  server was started with (``--enable-lora``). Full-weight reloads in vLLM need its development
  endpoints or a restart: not done here, and a full-weight policy with ``vllm_lora`` is refused.

Each policy is served as what it is: a LoRA policy sends vLLM its adapter, and SGLang (which
loads whole checkpoints) the base with the adapter merged in; a full policy sends full weights.

Only the client side lives here (config, save, the reload call); it cannot be run end to end on
a machine without such a server, and the tests check the calls against the loopback stub.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from apps.judging.llm.client import (
    ERROR_REPLY_BYTES,
    REDIRECTED,
    TOKEN_PARAMS,
    error_detail,
    make_client,
    read_reply,
)
from apps.judging.llm.config import EndpointConfig, check_base_url, read_api_key
from worker.training.policy_io import is_lora, save_full_weights
from worker.training.rl import WeightGate

RELOAD_STYLES = ("sglang", "vllm_lora", "vllm_sleep", "vllm_nccl")


class ReloadError(RuntimeError):
    """The inference server did not take the new weights: rollouts would use stale ones."""


@dataclass(frozen=True)
class ServerConfig:
    base_url: str  # the OpenAI-compatible API, e.g. http://gpu-node:30000/v1
    model: str  # the served model name (vLLM LoRA: the adapter name prefix)
    reload: str = "sglang"
    api_key_env: str = ""
    timeout_s: float = 600.0  # loading a 100B model from disk takes minutes
    keep_versions: int = 2  # weight folders kept on disk (the served one and the one before)
    concurrency: int = 256  # calls in flight to the engine at once (the pool's sessions; the engine batches them)
    # vllm_sleep: the folder the server was started with; the new weights are written there and
    # the server reloads them in place (its reload_weights reads the model's own path)
    model_path: str = ""
    group_port: int = 51216  # vllm_nccl: the port of the NCCL group the trainer opens with the server's workers

    def __post_init__(self) -> None:
        if self.reload not in RELOAD_STYLES:
            raise ValueError(f"reload must be one of {', '.join(RELOAD_STYLES)}, got {self.reload!r}")
        if self.reload == "vllm_sleep" and not self.model_path:
            raise ValueError("reload vllm_sleep needs model_path: the folder the vLLM server loads its weights from")
        check_base_url(self.base_url)  # an EndpointConfigError (a ValueError) names the problem

    @property
    def server_root(self) -> str:
        """The server's root (the base URL without its /v1), where SGLang's admin routes live."""
        parts = urlsplit(self.base_url.rstrip("/"))
        path = parts.path[: -len("/v1")] if parts.path.endswith("/v1") else parts.path
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def reload_request(config: ServerConfig, folder: Path, version: int) -> tuple[str, dict[str, Any]]:
    """(URL, JSON body) of the reload call for a weight folder."""
    if config.reload == "sglang":
        return f"{config.server_root}/update_weights_from_disk", {"model_path": str(folder)}
    return (f"{config.base_url.rstrip('/')}/load_lora_adapter",
            {"lora_name": f"{config.model}-v{version}", "lora_path": str(folder)})


def reload_steps(config: ServerConfig, folder: Path, version: int) -> list[tuple[str, dict[str, Any]]]:
    """The calls that make the server serve the weights in ``folder``, in order.

    ``vllm_sleep``: vLLM's RLHF sequence on its development endpoints (``VLLM_SERVER_DEV_MODE=1``,
    ``--enable-sleep-mode``): sleep level 2 (weights and KV cache dropped), wake the weights,
    ``collective_rpc reload_weights`` (from the model folder, which now holds the new ones), wake
    the KV cache, reset the prefix cache (its entries were computed with the old weights)."""
    if config.reload == "vllm_sleep":
        root = config.server_root
        return [(f"{root}/sleep?level=2", {}), (f"{root}/wake_up?tags=weights", {}),
                (f"{root}/collective_rpc", {"method": "reload_weights"}),
                (f"{root}/wake_up?tags=kv_cache", {}), (f"{root}/reset_prefix_cache", {})]
    return [reload_request(config, folder, version)]


class RemotePolicy:
    """``Policy`` backed by an inference server: ``publish`` saves the weights and reloads them."""

    def __init__(self, config: ServerConfig, weights_dir: Path, tokenizer: Any = None, version: int = 0) -> None:
        self.config = config
        self.weights_dir = Path(weights_dir)
        self.tokenizer = tokenizer
        self.version = version
        self.gate = WeightGate()  # calls in flight finish on the old weights; new ones wait for the reload
        self._published: list[Path] = []
        self._nccl: Any = None  # vllm_nccl: TRL's client, its NCCL group opened at the first publish

    def __getstate__(self) -> dict[str, Any]:
        """A copy for a rollout driver process (rl_drivers): it calls the server, never publishes;
        its own gate, which the job's swaps drive."""
        state = dict(self.__dict__)
        state.update(gate=None, _published=[], _nccl=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.gate = WeightGate()

    @property
    def served_model(self) -> str:
        """The model name rollouts must ask for (a LoRA adapter has one per version)."""
        if self.config.reload == "vllm_lora":
            return f"{self.config.model}-v{self.version}"
        return self.config.model

    def publish(self, model: Any, version: int) -> None:
        if self.config.reload == "vllm_nccl":
            self._broadcast(model, version)
            return
        in_place = self.config.reload == "vllm_sleep"
        folder = Path(self.config.model_path) if in_place else self.weights_dir / f"policy-v{version}"
        if self.config.reload == "vllm_lora" and not is_lora(model):
            raise ReloadError("vLLM's load_lora_adapter loads LoRA adapters, and this policy trains full weights: "
                              "serve it with SGLang (update_weights_from_disk), or train a LoRA policy")
        with self.gate.swapping():  # calls in flight finish first; new ones wait for the new weights
            if self.config.reload == "vllm_lora":
                model.save_pretrained(folder)  # the adapter folder, not the base's weights
            else:
                save_full_weights(model, folder)  # SGLang and vLLM load whole checkpoints: a LoRA policy merged
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(folder)
            for url, body in reload_steps(self.config, folder, version):
                self._reload(url, body)
            self.version = version
        if in_place:
            return
        self._published.append(folder)
        while len(self._published) > max(1, self.config.keep_versions):
            shutil.rmtree(self._published.pop(0), ignore_errors=True)

    def _broadcast(self, model: Any, version: int) -> None:
        """``vllm_nccl``: the weights streamed from GPU memory to the vLLM workers over NCCL, with TRL's
        client (``trl.generation.vllm_client.VLLMClient``: vLLM's weight-transfer engine, the server
        started with ``--weight-transfer-config '{"backend": "nccl"}'`` and ``VLLM_SERVER_DEV_MODE=1``,
        as ``trl vllm-serve`` starts it), no file system between them. Needs vLLM and CUDA here."""
        if is_lora(model):
            raise ReloadError("NCCL weight transfer streams full weights: serve a LoRA policy with vllm_lora, or "
                              "merge it (lora_mode merge)")
        with self.gate.swapping():
            try:
                client = self._nccl_client()
                with client.weight_update():
                    client.update_model_params(model)
                client.reset_prefix_cache()
            except ReloadError:
                raise
            except Exception as exc:  # noqa: BLE001 - TRL's client raises bare Exceptions for refused requests
                raise ReloadError(f"NCCL weight transfer to {self.config.server_root} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
            self.version = version

    def _nccl_client(self) -> Any:
        if self._nccl is None:
            try:
                # lazy: TRL's vLLM client imports vLLM, needed by this reload style alone
                from trl.generation.vllm_client import VLLMClient

                client = VLLMClient(base_url=self.config.server_root, group_port=self.config.group_port)
                client.init_communicator(device=0)
            except Exception as exc:  # noqa: BLE001 - no vLLM, no CUDA, no weight-transfer engine: all named here
                raise ReloadError(f"NCCL weight transfer to {self.config.server_root} is not available: "
                                  f"{type(exc).__name__}: {exc}") from exc
            self._nccl = client
        return self._nccl

    def _reload(self, url: str, body: dict[str, Any]) -> None:
        """Ask the server to load the weights: the same rules as every endpoint call (an allowed key
        variable, no redirects, a bounded reply, nothing of the reply but an OpenAI-style message)."""


        key = read_api_key(self.config.api_key_env, "The policy server")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        deadline = time.monotonic() + self.config.timeout_s
        try:
            with requests.post(url, json=body, headers=headers, timeout=self.config.timeout_s, stream=True,
                               allow_redirects=False) as response:
                status = response.status_code
                if 300 <= status < 400:
                    raise ReloadError(f"the inference server answered HTTP {status}: {REDIRECTED}")
                reply = read_reply(response, ERROR_REPLY_BYTES, deadline, truncate=True)
        except requests.RequestException as exc:
            raise ReloadError(f"cannot reach the inference server at {url}: {type(exc).__name__}") from exc
        except (TimeoutError, ConnectionError, ValueError) as exc:
            raise ReloadError(f"no complete answer from the inference server at {url}: {str(exc) or 'timed out'}") from exc
        ok = response.ok
        if ok and self.config.reload == "sglang":
            try:
                answer = json.loads(reply)
                ok = bool(answer.get("success", True)) if isinstance(answer, dict) else False
            except (ValueError, RecursionError):
                ok = False
        if not ok:
            detail = error_detail(reply)
            raise ReloadError(f"the inference server refused the weights (HTTP {status})" + (f": {detail}" if detail else ""))

    def chat_client(self) -> Any:
        """A apps/judging/llm client for the agent, pointed at the served policy."""

        # token-in/token-out: every answer comes back with its sampled ids and their log-probs
        return make_client(EndpointConfig(name="rl-policy", model=self.served_model, base_url=self.config.base_url,
                                          api_key_env=self.config.api_key_env, timeout_s=self.config.timeout_s,
                                          params=dict(TOKEN_PARAMS), concurrency=self.config.concurrency))
