"""A tiny random causal LM with a word-level tokenizer, saved like any local HF model.

Tests and benchmarks of the serve package load it through the real hf backend code path
(``from_pretrained(path, local_files_only=True)``). Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
WORDS = ("the a one two three four five six seven eight nine ten cat dog bird fish sat ran flew "
         "swam on in under over mat tree pond sky red blue green big small fast slow and then "
         "because so answer question is what how many plus minus equals step therefore end").split()


def build_tiny_llm(directory: str | Path, *, hidden_size: int = 64, num_layers: int = 2,
                   num_heads: int = 4, max_positions: int = 256, seed: int = 0) -> Path:
    """Write a random LlamaForCausalLM and its tokenizer to ``directory``; return the path."""
    directory = Path(directory)
    hf_logging.disable_progress_bar()
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.train_from_iterator([" ".join(WORDS)],
                                  trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS)))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>")
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads,
                         num_key_value_heads=num_heads, max_position_embeddings=max_positions,
                         initializer_range=0.2, pad_token_id=fast.pad_token_id,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory
