"""LoRA adapters through peft, and their exchange as named float32 arrays.

Adapter arrays are keyed by the parameter's name inside the base model with peft's wrapper
prefix and adapter name removed (e.g. "model.layers.0.self_attn.q_proj.lora_A.weight"), so
two workers that build the same base model agree on every key whatever their adapter names.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import peft
import torch
from transformers import PreTrainedModel

TargetModules = Literal["attention", "all-linear"] | list[str]

_LLAMA_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
# Attention projections per model_type (a string is a full-match regular expression for peft).
_ATTENTION_MODULES: dict[str, str | list[str]] = {
    "llama": _LLAMA_ATTENTION, "mistral": _LLAMA_ATTENTION, "qwen2": _LLAMA_ATTENTION,
    "qwen3": _LLAMA_ATTENTION, "gemma": _LLAMA_ATTENTION, "gemma2": _LLAMA_ATTENTION,
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "gpt2": r".*\.attn\.(c_attn|c_proj)",  # mlp.c_proj must not match
}
_WRAPPER_PREFIX = "base_model.model."


class AdapterMismatchError(ValueError):
    """Adapter arrays whose names or shapes do not match the model's trainable parameters."""


@dataclass(frozen=True)
class LoraSettings:
    """What to adapt and how.

    `train_embeddings` also trains the token embeddings (input and output, one matrix when
    tied) and `train_norms` the weights (and biases) of every normalisation layer; both are
    trained in place and become part of the exchanged adapter. Both are off by default, as
    for a large pretrained model (r 8, alpha 16, dropout 0.05 as in the reference defaults).
    """

    r: int = 8
    alpha: float = 16
    dropout: float = 0.05
    target_modules: TargetModules = "all-linear"
    train_embeddings: bool = False
    train_norms: bool = False


def attach_lora(model: PreTrainedModel, settings: LoraSettings) -> peft.PeftModel:
    """Freeze `model` and wrap it with a LoRA adapter as `settings` say."""
    model_type = model.config.model_type
    if settings.r < 1:
        raise ValueError(f"LoRA rank r must be >= 1, got {settings.r}")
    if settings.target_modules == "attention":
        if model_type not in _ATTENTION_MODULES:
            raise ValueError(
                f"attention module names are known for {sorted(_ATTENTION_MODULES)}, not {model_type!r}; "
                f"give target_modules as a list of module names"
            )
        targets: str | list[str] = _ATTENTION_MODULES[model_type]
    elif settings.target_modules == "all-linear":
        targets = "all-linear"  # peft: every linear layer but the output head
    elif isinstance(settings.target_modules, list) and settings.target_modules:
        targets = list(settings.target_modules)
    else:
        raise ValueError(
            f"target_modules must be 'attention', 'all-linear' or a non-empty list of module names, "
            f"got {settings.target_modules!r}"
        )
    config = peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        fan_in_fan_out=model_type == "gpt2",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft 0.21 calls an API transformers 5 deprecates
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = peft.get_peft_model(model, config)
    if settings.train_embeddings:
        model.get_input_embeddings().weight.requires_grad_(True)
        model.get_output_embeddings().weight.requires_grad_(True)
    if settings.train_norms:
        for module in model.modules():
            if "Norm" in type(module).__name__:
                for parameter in module.parameters(recurse=False):
                    parameter.requires_grad_(True)
    return peft_model


def _stable_name(name: str, adapter_name: str) -> str:
    return name.removeprefix(_WRAPPER_PREFIX).replace(f".{adapter_name}.", ".")


def _named_trainable(model: peft.PeftModel) -> dict[str, torch.nn.Parameter]:
    adapter_name = model.active_adapter
    named: dict[str, torch.nn.Parameter] = {}
    seen: set[int] = set()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and id(parameter) not in seen:
            seen.add(id(parameter))
            named[_stable_name(name, adapter_name)] = parameter
    return named


def get_adapter(model: peft.PeftModel) -> dict[str, np.ndarray]:
    """Float32 copies of every trainable parameter, by stable name."""
    return {name: p.detach().to(torch.float32).cpu().numpy().copy() for name, p in _named_trainable(model).items()}


def set_adapter(model: peft.PeftModel, arrays: dict[str, np.ndarray]) -> None:
    """Load adapter arrays into the model's trainable parameters (names and shapes must match)."""
    named = _named_trainable(model)
    missing, unexpected = sorted(set(named) - set(arrays)), sorted(set(arrays) - set(named))
    if missing or unexpected:
        raise AdapterMismatchError(
            f"adapter names do not match the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for name, parameter in named.items():
        if tuple(arrays[name].shape) != tuple(parameter.shape):
            raise AdapterMismatchError(
                f"adapter array {name!r} has shape {tuple(arrays[name].shape)}, the model expects "
                f"{tuple(parameter.shape)}"
            )
    with torch.no_grad():
        for name, parameter in named.items():
            parameter.copy_(torch.as_tensor(arrays[name], dtype=parameter.dtype))


def adapter_num_params(model: peft.PeftModel) -> int:
    """Number of trainable (exchanged) parameters."""
    return sum(p.numel() for p in _named_trainable(model).values())
