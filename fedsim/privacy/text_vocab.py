"""Which word tokens of a tokenizer's vocabulary the text mechanisms may perturb (V').

A vocabulary entry is a perturbable word when it starts a word and its surface form (the
text it decodes to, without the leading space) is purely alphabetic. Special and added
tokens, punctuation, mixed tokens and sub-word continuation pieces are never perturbed.
Numbers are handled as digit runs of the text, not as tokens (text_numbers.py). Classes can
be excluded on purpose with `exclude` (class names) and `exclude_tokens` (surface forms).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

EXCLUDABLE_CLASSES: tuple[str, ...] = ("numbers", "short_words", "stopwords", "all_caps")
"""Class names accepted by `exclude`: numbers (digit runs), short_words (alphabetic,
at most 3 characters), stopwords (STOPWORDS, case-insensitive), all_caps (every cased
character upper-case, e.g. "USA", "I")."""

SHORT_WORD_MAX_CHARS = 3

STOPWORDS: frozenset[str] = frozenset(
    """a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each few
    for from further had has have having he her here hers herself him himself his how i if
    in into is it its itself just me might more most must my myself no nor not now of off on
    once only or other ought our ours ourselves out over own same shall she should so some
    such than that the their theirs them themselves then there these they this those through
    to too under until up upon very was we were what when where which while who whom whose
    why will with would you your yours yourself yourselves""".split()
)

_ANCHOR = "a"  # a plain token placed before each token to decode it in context


class TextPrivacyError(ValueError):
    """Invalid input to the text privacy kit or perturber."""


@dataclass(frozen=True)
class PerturbableVocabulary:
    """The perturbable word tokens V': vocabulary ids (one per distinct surface form, the
    lowest id wins) and their surface strings; excluded_counts per exclusion option."""

    word_ids: np.ndarray
    word_surfaces: tuple[str, ...]
    special_ids: frozenset[int]
    decoder_name: str
    excluded_counts: dict[str, int]


def word_start_surface(raw: str, decoder) -> str | None:
    """Surface form of a token that starts a new word, None for a continuation piece.

    The token is decoded after a plain anchor token with the tokenizer's own decoder: it
    starts a word when the decoded text puts whitespace between the two (the word-start
    markers of SentencePiece, byte-level BPE and WordPiece all decode that way). Without
    a decoder tokens are joined by spaces, so every token is a whole word.
    """
    if decoder is None:
        return raw
    anchor_text = decoder.decode([_ANCHOR])
    joined = decoder.decode([_ANCHOR, raw])
    if not joined.startswith(anchor_text):
        return None
    added = joined[len(anchor_text):]
    return added.strip() if added[:1].isspace() else None


def _excluded_reason(surface: str, exclude: frozenset[str], exclude_tokens: frozenset[str]) -> str | None:
    """The exclusion option that removes this word from V', or None."""
    if surface in exclude_tokens:
        return "exclude_tokens"
    if "short_words" in exclude and len(surface) <= SHORT_WORD_MAX_CHARS:
        return "short_words"
    if "stopwords" in exclude and surface.lower() in STOPWORDS:
        return "stopwords"
    if "all_caps" in exclude and surface.isupper():
        return "all_caps"
    return None


def string_set(values: Iterable[str], name: str) -> frozenset[str]:
    """A collection of strings as a frozenset (a lone string is an error, not its characters)."""
    if isinstance(values, str):
        raise TextPrivacyError(f"{name} takes a collection of strings, not one string: {values!r}")
    result = frozenset(values)
    if not all(isinstance(v, str) for v in result):
        raise TextPrivacyError(f"{name} must hold strings, got {sorted(map(repr, result))}")
    return result


def special_token_ids(tokenizer) -> frozenset[int]:
    """Ids of special and added tokens (never perturbed)."""
    ids = set(tokenizer.backend_tokenizer.get_added_tokens_decoder())
    ids.update(int(i) for i in getattr(tokenizer, "all_special_ids", ()))
    return frozenset(ids)


def perturbable_vocabulary(tokenizer, exclude: Iterable[str] = (),
                           exclude_tokens: Iterable[str] = ()) -> PerturbableVocabulary:
    """The perturbable word tokens of a fast tokenizer's vocabulary."""
    if not hasattr(tokenizer, "backend_tokenizer"):
        raise TextPrivacyError(
            f"tokenizer must be a fast (tokenizers-backed) Hugging Face tokenizer, got {type(tokenizer).__name__}")
    exclude_set = string_set(exclude, "exclude")
    unknown = sorted(exclude_set - set(EXCLUDABLE_CLASSES))
    if unknown:
        raise TextPrivacyError(
            f"unknown exclude class(es) {unknown}; allowed: {list(EXCLUDABLE_CLASSES)} "
            "(put literal tokens in exclude_tokens)")
    exclude_token_set = string_set(exclude_tokens, "exclude_tokens")

    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    specials = special_token_ids(tokenizer)
    id_to_raw = sorted((idx, raw) for raw, idx in vocab.items() if idx not in specials)
    decoder = tokenizer.backend_tokenizer.decoder

    seen: set[str] = set()
    words: list[tuple[int, str]] = []
    excluded_counts = {name: 0 for name in ("short_words", "stopwords", "all_caps", "exclude_tokens")}
    for idx, raw in id_to_raw:
        surface = word_start_surface(raw, decoder)
        if not surface or surface in seen or not surface.isalpha():
            continue
        seen.add(surface)
        reason = _excluded_reason(surface, exclude_set, exclude_token_set)
        if reason is None:
            words.append((idx, surface))
        else:
            excluded_counts[reason] += 1

    return PerturbableVocabulary(
        word_ids=np.array([i for i, _ in words], dtype=np.int64),
        word_surfaces=tuple(s for _, s in words),
        special_ids=specials,
        decoder_name=type(decoder).__name__ if decoder is not None else "none",
        excluded_counts=excluded_counts,
    )
