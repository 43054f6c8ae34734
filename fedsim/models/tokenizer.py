"""The built-in tokenizers, trained on the built-in task's text: a byte-level BPE (the default), a much
smaller byte-level BPE and a SentencePiece-style Unigram, so that models of the built-in task can
disagree on tokenization as real ones do (FedMKT, algorithms.md §5).

All write every digit as a token of its own and encode any text without an unknown token, so user
data and LLM prompts never lose a character; all have the specials <pad> (id 0) and <eos> (id 1).

- "bpe": byte-level BPE with GPT-2's 'Ġ' word starts; every word the generator can produce is one
  token, " 7" is one token. Saved under fedsim/models/assets/tokenizer/.
- "bpe-small": the same BPE trainer stopped at 400 tokens (142 merges): frequent words are one
  token, the others split into pieces ("Ġoven" is "Ġo", "v", "en"), so the task's text takes about
  1.5 times as many tokens. Saved under fedsim/models/assets/tokenizer-bpe-small/.
- "unigram": a Unigram language model over pieces with Llama's '▁' word starts; punctuation stays on
  the word before it ("▁marks."), a digit is split from the '▁' before it ("▁", "7") as in Llama, and
  characters outside its pieces fall back to the byte pieces <0x00>..<0xFF>. A third special, <unk>
  (id 2), is what a Unigram model needs to exist and is never produced from ordinary text (the
  literal text "<unk>" reads as it, as "<eos>" does as the eos special in both tokenizers). A literal
  '▁' reads back as a space. Saved under
  fedsim/models/assets/tokenizer-unigram/.

Regenerate all three with `python -m fedsim.models.tokenizer`.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from fedsim.data.prompts import render_prompt, render_target
from fedsim.data.task import generate_examples

TokenizerKind = Literal["bpe", "bpe-small", "unigram"]
BUILTIN_TOKENIZER_DIR = Path(__file__).parent / "assets" / "tokenizer"
UNIGRAM_TOKENIZER_DIR = Path(__file__).parent / "assets" / "tokenizer-unigram"
SMALL_BPE_TOKENIZER_DIR = Path(__file__).parent / "assets" / "tokenizer-bpe-small"
TOKENIZER_DIRS: dict[str, Path] = {"bpe": BUILTIN_TOKENIZER_DIR, "bpe-small": SMALL_BPE_TOKENIZER_DIR,
                                   "unigram": UNIGRAM_TOKENIZER_DIR}
PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
VOCAB_SIZE = 1024  # an upper bound: training stops when no pair is left to merge
# Every token of the Unigram: 3 specials, 256 byte pieces and 341 learned pieces. The BPE has 562
# (256 bytes, 2 specials, 304 merges), so a preset keeps its size on either tokenizer; the task's text
# uses 153 of the learned pieces (whole words with their punctuation, the digits, '▁'), the others
# are characters and sub-word pieces for other text.
UNIGRAM_VOCAB_SIZE = 600
SMALL_BPE_VOCAB_SIZE = 400
BYTE_PIECES = tuple(f"<0x{byte:02X}>" for byte in range(256))
WORD_START = "▁"
_CORPUS_EXAMPLES_PER_SPLIT = 4000
_SCORE_DECIMALS = 6  # the trainer's sums run in parallel: the last digits of its scores vary


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


def _unigram_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Spaces become '▁' word starts (none is added before the text, so decoding is exact); every
    digit is a word of its own."""
    return pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=WORD_START, prepend_scheme="never", split=True),
        pre_tokenizers.Split(Regex(r"[0-9]"), behavior="isolated"),
    ])


def _seed_texts(texts: Sequence[str], pre_tokenizer: pre_tokenizers.PreTokenizer) -> list[str]:
    """Each distinct word of `texts` once more, followed by a newline, and each character alone.

    The Unigram trainer proposes its first pieces from the distinct words only, and only substrings
    followed by two different characters: a word always followed by the end of the word (most words
    of this small corpus) would never be proposed. It drops a character that no segmentation uses and
    adds it back with a score drawn in no fixed order. One extra occurrence of each word and of each
    character avoids both, and is too rare to change any piece's probability."""
    words = {word for text in texts for word, _ in pre_tokenizer.pre_tokenize_str(text)}
    characters = {character for text in texts for character in text}
    return [word.replace(WORD_START, " ") + "\n" for word in sorted(words)] + sorted(characters)


def _learned_pieces(texts: Sequence[str], size: int) -> list[tuple[str, float]]:
    """(piece, log probability) of a Unigram of `size` pieces trained on `texts`, the three specials
    first, then by decreasing probability (ties by text, as the trainer orders them by chance)."""
    pre_tokenizer = _unigram_pre_tokenizer()
    specials = [PAD_TOKEN, EOS_TOKEN, UNK_TOKEN]
    draft = Tokenizer(models.Unigram())
    draft.pre_tokenizer = pre_tokenizer
    trainer = trainers.UnigramTrainer(vocab_size=size, special_tokens=specials, unk_token=UNK_TOKEN,
                                      show_progress=False)
    draft.train_from_iterator([*texts, *_seed_texts(texts, pre_tokenizer)], trainer=trainer)
    pieces = [(piece, round(score, _SCORE_DECIMALS)) for piece, score in json.loads(draft.to_str())["model"]["vocab"]]
    if [piece for piece, _ in pieces[: len(specials)]] != specials:
        raise ValueError(f"the Unigram trainer did not put {specials} first")
    return pieces[: len(specials)] + sorted(pieces[len(specials):], key=lambda item: (-item[1], item[0]))


def train_unigram_tokenizer(texts: Sequence[str], vocab_size: int = UNIGRAM_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train the SentencePiece-style Unigram on `texts` (see the module docstring): ids 0-2 are <pad>,
    <eos> and <unk>, 3-258 the byte pieces, then the learned pieces; `vocab_size` counts them all."""
    specials = [PAD_TOKEN, EOS_TOKEN, UNK_TOKEN]
    learned = _learned_pieces(texts, vocab_size - len(BYTE_PIECES))
    vocab = learned[: len(specials)] + [(piece, 0.0) for piece in BYTE_PIECES] + learned[len(specials):]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=specials.index(UNK_TOKEN), byte_fallback=True))
    tokenizer.pre_tokenizer = _unigram_pre_tokenizer()
    tokenizer.decoder = decoders.Sequence([
        decoders.ByteFallback(), decoders.Metaspace(replacement=WORD_START, prepend_scheme="never"),
    ])
    tokenizer.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN,
                                   unk_token=UNK_TOKEN, padding_side="right")


def builtin_corpus() -> list[str]:
    """Prompts and targets (both modes) of generated examples from every split."""
    texts = []
    for split in ("train", "test", "public"):
        for example in generate_examples(_CORPUS_EXAMPLES_PER_SPLIT, seed=0, split=split, min_steps=1):
            for mode in ("answer", "rationale"):
                texts.append(render_prompt(example, mode) + render_target(example, mode))
    return texts


@lru_cache(maxsize=None)
def _load_builtin(kind: str) -> PreTrainedTokenizerFast:
    if kind not in TOKENIZER_DIRS:
        raise ValueError(f"no built-in tokenizer {kind!r}; the built-in ones are {sorted(TOKENIZER_DIRS)}")
    directory = TOKENIZER_DIRS[kind]
    if not (directory / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"built-in {kind} tokenizer missing at {directory}; run `python -m fedsim.models.tokenizer`"
        )
    return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)


def builtin_tokenizer(kind: TokenizerKind = "bpe") -> PreTrainedTokenizerFast:
    """A saved built-in tokenizer, the BPE unless `kind` says otherwise (loaded once per process per
    kind; callers must not mutate it)."""
    return _load_builtin(kind)


def main() -> None:
    """Retrain the built-in tokenizers and save them under their TOKENIZER_DIRS."""
    corpus = builtin_corpus()
    trained = (("bpe", train_tokenizer(corpus)), ("bpe-small", train_tokenizer(corpus, SMALL_BPE_VOCAB_SIZE)),
               ("unigram", train_unigram_tokenizer(corpus)))
    for kind, tokenizer in trained:
        tokenizer.save_pretrained(str(TOKENIZER_DIRS[kind]))
        print(f"saved the {len(tokenizer)}-token {kind} tokenizer to {TOKENIZER_DIRS[kind]}")


if __name__ == "__main__":
    main()
