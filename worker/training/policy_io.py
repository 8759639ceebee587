"""A policy from a folder, ready to train: full weights or a LoRA adapter, fp32 master weights.

One loader for every trainer (the local RL trainer, the sharded one, the reference model):

- a full checkpoint (``config.json`` + weights) loads as itself;
- a LoRA adapter folder (``adapter_config.json``, what an SFT job with LoRA writes) loads its base
  model (``base_model_name_or_path``) with the adapter on top, through peft's own API: trainable
  as LoRA (``lora="train"``: only the adapter's matrices learn, and what is saved is an adapter
  folder again), or merged into the base (``lora="merge"``: full fine-tuning from base + adapter,
  saved as a full checkpoint).

Whatever dtype the checkpoint is stored in (real checkpoints ship bf16), a trainable policy's
parameters are float32: the optimizer's master weights. AdamW on bf16 parameters rounds an
update of 1e-6 on a weight of 0.02 (bf16 spacing there: 1.2e-4) back to the weight itself, so
one step at RL's usual learning rate moved 2% of a bf16 checkpoint's weights. ``precision``
is applied at compute time instead: ``autocast(precision, device)`` runs the forward pass in
bf16 (on CPUs too) while the weights, gradients and optimizer state stay fp32, which is what
TRL (``bf16=True``), verl (FSDP mixed precision) and slime (Megatron's fp32 main params) do.
A frozen model (the KL reference) has no master weights: under bf16 it is held in bf16.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM

PRECISIONS = ("fp32", "bf16")
LORA_MODES = ("train", "merge")
ADAPTER_CONFIG = "adapter_config.json"


class PolicyLoadError(ValueError):
    """The folder is not a policy this code can train from (the message says why)."""


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise PolicyLoadError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def is_adapter(path: str | Path) -> bool:
    """A LoRA (peft) adapter folder rather than a full checkpoint."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base model an adapter folder was trained on (a local folder: nothing comes from a hub)."""
    try:
        config = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise PolicyLoadError(f"{path}: unreadable {ADAPTER_CONFIG}: {exc}") from exc
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base or not (Path(base) / "config.json").is_file():
        raise PolicyLoadError(f"{path} is a LoRA adapter whose base model {base!r} is not a local model folder: "
                              "the base must be on this worker's disk")
    return str(base)


def autocast(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """The forward pass's compute dtype: bf16 autocast for ``bf16``, nothing for ``fp32``."""
    check_precision(precision)
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def load_policy(path: str | Path, device: str | torch.device = "cpu", *, precision: str = "bf16",
                lora: str = "train", trainable: bool = True, gradient_checkpointing: bool = False) -> Any:
    """The model in ``path`` on ``device``: trainable with fp32 master weights, or frozen.

    ``lora`` says what becomes of an adapter folder ("train": LoRA stays LoRA; "merge": merged
    into the base, every weight trainable); ignored for a full checkpoint. ``precision`` ("fp32" /
    "bf16") is the compute precision (use ``autocast``); it sets the storage dtype of a frozen
    model only. ``gradient_checkpointing`` recomputes each layer's activations in the backward
    pass instead of keeping them: a long window's activations are the memory that grows with it.
    """
    check_precision(precision)
    if lora not in LORA_MODES:
        raise PolicyLoadError(f"lora must be one of {', '.join(LORA_MODES)}, got {lora!r}")
    dtype = torch.float32 if trainable or precision == "fp32" else torch.bfloat16
    folder = Path(path)
    if is_adapter(folder):
        base = AutoModelForCausalLM.from_pretrained(adapter_base(folder), dtype=dtype, local_files_only=True)
        model: Any = PeftModel.from_pretrained(base, str(folder), is_trainable=trainable and lora == "train")
        if lora == "merge":
            model = model.merge_and_unload()
            for p in model.parameters():  # peft froze the base: merged, every weight learns
                p.requires_grad_(trainable)
    elif (folder / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    else:
        raise PolicyLoadError(f"{path} is neither a model folder (config.json) nor a LoRA adapter ({ADAPTER_CONFIG})")
    model = model.to(device)
    if not trainable:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model
    if isinstance(model, PeftModel):
        for p in model.parameters():  # the adapter's own matrices are fp32 masters too
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
    if gradient_checkpointing:
        # non-reentrant: works with frozen inputs (LoRA's frozen embeddings) without input hooks
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if not any(p.requires_grad for p in model.parameters()):
        raise PolicyLoadError(f"{path}: no trainable parameter after loading")
    return model


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    """What the optimizer steps: every weight of a full policy, the adapter's matrices of a LoRA one."""
    return [p for p in model.parameters() if p.requires_grad]


def is_lora(model: Any) -> bool:
    return isinstance(model, PeftModel)


def merged_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """A LoRA policy's full weights (base + each adapter delta), under the base model's own names,
    without touching the model: merging in place and unmerging after would leave the frozen base
    off by a rounding error at every publish. Only the adapted weights are new tensors."""
    base = model.get_base_model()
    adapters = list(model.active_adapters)
    state: dict[str, torch.Tensor] = {}
    for key, value in base.state_dict().items():
        # a module trained whole beside the adapter (modules_to_save, e.g. lm_head after new tokens)
        # serves its trained copy; its frozen original is left out
        if "lora_" in key or ".original_module." in key:
            continue
        for adapter in adapters:
            key = key.replace(f".modules_to_save.{adapter}.", ".")
        state[key.replace(".base_layer.", ".")] = value.detach()
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer) and not module.merged:
                key = f"{name}.weight"
                for adapter in adapters:
                    if adapter in module.lora_A or adapter in getattr(module, "lora_embedding_A", {}):
                        state[key] = state[key] + module.get_delta_weight(adapter).to(state[key].dtype)
    return state


def save_full_weights(model: Any, folder: str | Path) -> None:
    """Full weights in ``folder``, what a server loading whole checkpoints takes: a LoRA policy
    merged (``merged_state_dict``), a full one as it is."""
    if is_lora(model):
        model.get_base_model().save_pretrained(folder, state_dict=merged_state_dict(model))
    else:
        model.save_pretrained(folder)
