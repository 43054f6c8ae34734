"""Tiny model presets built from transformers configs, and loading/saving of local models.

A preset name ("llama-1m", "gpt2-5m", ...) builds a seeded, randomly initialised causal LM
sized for its built-in tokenizer (fedsim.models.tokenizer: the BPE, the Unigram for the "-uni"
presets, the small BPE for the "-sbpe" ones); the number in the name is the approximate parameter count.
A pretrained base name ("llama-0.3m-pt", the clients' base; "llama-1m-teacher", the server LLM of
the built-in task; "llama-1m-2dom", a server LLM that knows only the shopping and travel domains,
for FedCoLLM, and "llama-1m-2dom-sbpe", the same on the small BPE, for FedMKT; "gpt2-0.3m-uni-pt", a
client base on the Unigram tokenizer) loads a preset that
fedsim.pretrain trained on the task's public split, shipped with the package (`make bases` rebuilds
them; each directory's pretrain.json says how and how well). Anything else is a local Hugging Face
directory: nothing is ever fetched from the hub. A real checkpoint's name ("smollm2-135m",
fedsim.models.checkpoints) stands for its installed cache directory. `model_tokenizer` says which
tokenizer any of them uses.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from fedsim.errors import FedsimError
from fedsim.models.checkpoints import CHECKPOINTS, CheckpointError, installed_directory
from fedsim.models.tokenizer import TokenizerKind, builtin_tokenizer

Architecture = Literal["llama", "gpt2"]


class ModelPathError(FedsimError, ValueError):
    """A model path that is missing, not a model directory, or holds unloadable weights."""


@dataclass(frozen=True)
class PresetSpec:
    """Shape of a tiny causal LM and the built-in tokenizer it is sized for; input and output
    embeddings are tied."""

    architecture: Architecture
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int = 256
    tokenizer: TokenizerKind = "bpe"

    def config(self, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
        """A transformers config for this shape and `tokenizer`'s vocabulary and specials."""
        specials = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
                    "bos_token_id": tokenizer.bos_token_id}
        if self.architecture == "llama":
            return LlamaConfig(
                vocab_size=len(tokenizer), hidden_size=self.hidden_size,
                intermediate_size=self.intermediate_size, num_hidden_layers=self.num_layers,
                num_attention_heads=self.num_heads, num_key_value_heads=self.num_heads,
                max_position_embeddings=self.max_positions, tie_word_embeddings=True, **specials,
            )
        return GPT2Config(
            vocab_size=len(tokenizer), n_embd=self.hidden_size, n_layer=self.num_layers,
            n_head=self.num_heads, n_inner=self.intermediate_size, n_positions=self.max_positions,
            tie_word_embeddings=True, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **specials,
        )


PRESETS: dict[str, PresetSpec] = {
    "llama-0.3m": PresetSpec("llama", hidden_size=64, num_layers=5, num_heads=4, intermediate_size=176),
    "llama-1m": PresetSpec("llama", hidden_size=128, num_layers=5, num_heads=4, intermediate_size=320),
    "llama-5m": PresetSpec("llama", hidden_size=256, num_layers=6, num_heads=8, intermediate_size=688),
    "gpt2-0.3m": PresetSpec("gpt2", hidden_size=64, num_layers=5, num_heads=4, intermediate_size=256),
    "gpt2-1m": PresetSpec("gpt2", hidden_size=128, num_layers=5, num_heads=4, intermediate_size=512),
    "gpt2-5m": PresetSpec("gpt2", hidden_size=256, num_layers=6, num_heads=8, intermediate_size=1024),
    "llama-0.3m-uni": PresetSpec("llama", hidden_size=64, num_layers=5, num_heads=4, intermediate_size=176,
                                 tokenizer="unigram"),
    "gpt2-0.3m-uni": PresetSpec("gpt2", hidden_size=64, num_layers=5, num_heads=4, intermediate_size=256,
                                tokenizer="unigram"),
    "llama-1m-sbpe": PresetSpec("llama", hidden_size=128, num_layers=5, num_heads=4, intermediate_size=320,
                                tokenizer="bpe-small"),
}


BASES_DIR = Path(__file__).resolve().parent / "assets" / "bases"
# Names of the shipped pretrained bases: each is a directory under BASES_DIR whose pretrain.json
# names its preset and training.
PRETRAINED_BASES: frozenset[str] = frozenset({"llama-0.3m-pt", "llama-1m-teacher", "llama-1m-2dom",
                                              "gpt2-0.3m-uni-pt", "llama-1m-2dom-sbpe"})


def model_directory(name_or_path: str | Path) -> Path:
    """The directory a pretrained base name, an installed checkpoint's name or a local path stands for."""
    if str(name_or_path) in PRETRAINED_BASES:
        return BASES_DIR / str(name_or_path)
    if str(name_or_path) in CHECKPOINTS:
        try:
            return installed_directory(str(name_or_path))
        except CheckpointError as error:
            raise ModelPathError(str(error)) from None
    return Path(name_or_path).expanduser()


def check_model_name(name_or_path: str) -> None:
    """Raise ModelPathError unless `name_or_path` is a preset, a shipped base or a model directory."""
    if name_or_path in PRESETS:
        return
    directory = model_directory(name_or_path)
    if name_or_path in PRETRAINED_BASES and not (directory / "config.json").is_file():
        raise ModelPathError(f"{name_or_path}: the pretrained base is missing from {directory}; "
                             f"rebuild it with `make bases`")
    if not (directory / "config.json").is_file():
        raise ModelPathError(f"{name_or_path}: not a preset ({sorted(PRESETS)}), a pretrained base "
                             f"({sorted(PRETRAINED_BASES)}), a checkpoint ({sorted(CHECKPOINTS)}) "
                             f"or a Hugging Face model directory with a config.json")


def model_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer a model uses: a preset's built-in one (loaded once per process per kind; callers
    must not mutate it), else the one saved with the base, checkpoint or local model directory."""
    if str(name_or_path) in PRESETS:
        return builtin_tokenizer(PRESETS[str(name_or_path)].tokenizer)
    directory = _model_files(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as error:  # the loaders raise many kinds (OSError, ValueError, ...)
        raise ModelPathError(f"{name_or_path}: could not load the tokenizer: {error}") from None


def load_model(name_or_path: str, seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model and its tokenizer (model_tokenizer): a preset built with random weights drawn from
    `seed`, or the model saved under a base's or checkpoint's name or a local path (`seed` unused)."""
    if name_or_path in PRESETS:
        tokenizer = model_tokenizer(name_or_path)
        return build_model(name_or_path, tokenizer, seed), tokenizer
    return load_pretrained(name_or_path)


def build_model(name_or_path: str, tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """A preset built with random weights drawn from `seed` (`tokenizer` must be its own), or the
    model saved at a local path (`tokenizer` must fit in its vocabulary)."""
    if name_or_path in PRESETS:
        _check_preset_tokenizer(name_or_path, tokenizer)
        config = PRESETS[name_or_path].config(model_tokenizer(name_or_path))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config)
    else:
        model = _load_weights(name_or_path)
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            raise ModelPathError(
                f"{name_or_path}: the model's vocabulary ({model.get_input_embeddings().num_embeddings}) "
                f"is smaller than the tokenizer's ({len(tokenizer)})"
            )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def _check_preset_tokenizer(name: str, tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise ModelPathError unless `tokenizer` has the vocabulary of preset `name`'s tokenizer."""
    own = model_tokenizer(name)
    if tokenizer is not own and tokenizer.get_vocab() != own.get_vocab():
        raise ModelPathError(f"{name}: the preset is built for the {PRESETS[name].tokenizer} tokenizer "
                             f"({len(own)} tokens), not this {len(tokenizer)}-token one; "
                             f"use model_tokenizer({name!r})")


def architecture_key(name_or_path: str) -> str:
    """What identifies a base model: the preset or base name, or the resolved local path."""
    if name_or_path in PRESETS or name_or_path in PRETRAINED_BASES or name_or_path in CHECKPOINTS:
        return name_or_path
    return str(Path(name_or_path).expanduser().resolve())


def _model_files(path: str | Path) -> Path:
    """The directory of a saved model (a base's or checkpoint's name, or a local path), checked to
    hold a config.json."""
    if str(path) in PRETRAINED_BASES:
        check_model_name(str(path))  # names the missing base and how to rebuild it
    directory = model_directory(path)
    if not directory.exists():
        raise ModelPathError(f"{path}: no such model directory (and not a preset: {sorted(PRESETS)})")
    if not directory.is_dir():
        raise ModelPathError(f"{path}: not a directory")
    if not (directory / "config.json").is_file():
        raise ModelPathError(f"{path}: no config.json, so not a Hugging Face model directory")
    return directory


def _load_weights(path: str | Path) -> PreTrainedModel:
    """The causal LM saved in a local Hugging Face directory (or under a base's name)."""
    directory = _model_files(path)
    try:
        return AutoModelForCausalLM.from_pretrained(str(directory), local_files_only=True)
    except Exception as error:  # the loaders raise many kinds (OSError, SafetensorError, ...)
        raise ModelPathError(f"{path}: could not load the model weights: {error}") from None


def load_pretrained(path: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local Hugging Face directory (or a base's name)."""
    return _load_weights(path), model_tokenizer(path)


def save_pretrained(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path) -> None:
    """Save a model (LoRA adapters merged into a copy) and its tokenizer in Hugging Face format."""
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))


def num_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters of a model (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
