"""The built-in tokenizer: a small byte-level BPE trained on the built-in task's text.

Digits are always single tokens; every word the generator can produce is one token; any other
text still encodes (byte fallback), so user data and LLM prompts never hit an unknown token.
The trained tokenizer is saved in Hugging Face format under fedsim/models/assets/tokenizer/;
regenerate it with `python -m fedsim.models.tokenizer`.
"""
from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from fedsim.data.prompts import render_prompt, render_target
from fedsim.data.task import generate_examples

BUILTIN_TOKENIZER_DIR = Path(__file__).parent / "assets" / "tokenizer"
PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
VOCAB_SIZE = 1024  # an upper bound: training stops when no pair is left to merge
_CORPUS_EXAMPLES_PER_SPLIT = 4000


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`: a digit is never merged with another digit (" 7" can
    be one token, "42" never is); specials <pad> and <eos>."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r" ?[0-9]"), behavior="isolated"),  # one digit per token
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN, padding_side="right"
    )


def builtin_corpus() -> list[str]:
    """Prompts and targets (both modes) of generated examples from every split."""
    texts = []
    for split in ("train", "test", "public"):
        for example in generate_examples(_CORPUS_EXAMPLES_PER_SPLIT, seed=0, split=split, min_steps=1):
            for mode in ("answer", "rationale"):
                texts.append(render_prompt(example, mode) + render_target(example, mode))
    return texts


@lru_cache(maxsize=1)
def _load_builtin() -> PreTrainedTokenizerFast:
    if not (BUILTIN_TOKENIZER_DIR / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"built-in tokenizer missing at {BUILTIN_TOKENIZER_DIR}; run `python -m fedsim.models.tokenizer`"
        )
    return PreTrainedTokenizerFast.from_pretrained(str(BUILTIN_TOKENIZER_DIR), local_files_only=True)


def builtin_tokenizer() -> PreTrainedTokenizerFast:
    """The saved built-in tokenizer (loaded once per process; callers must not mutate it)."""
    return _load_builtin()


def main() -> None:
    """Retrain the built-in tokenizer and save it under BUILTIN_TOKENIZER_DIR."""
    tokenizer = train_tokenizer(builtin_corpus())
    tokenizer.save_pretrained(str(BUILTIN_TOKENIZER_DIR))
    print(f"saved a {len(tokenizer)}-token tokenizer to {BUILTIN_TOKENIZER_DIR}")


if __name__ == "__main__":
    main()
