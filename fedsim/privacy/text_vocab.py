"""Which tokens of a tokenizer's vocabulary the text mechanisms may perturb (the set V').

A vocabulary entry is perturbable when it starts a word and its surface form (the text it
decodes to, without the leading space) is purely alphabetic ("word") or purely ASCII
digits ("number"). Special and added tokens, punctuation, mixed tokens and
sub-word continuation pieces are never perturbed. Classes of tokens can be excluded on
purpose with `exclude` (class names) and `exclude_tokens` (surface forms).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

EXCLUDABLE_CLASSES: tuple[str, ...] = ("numbers", "short_words", "stopwords", "all_caps")
"""Class names accepted by `exclude`: numbers (all-digit tokens), short_words (alphabetic,
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


class VocabularyError(ValueError):
    """The tokenizer or the exclusion options cannot define a perturbable vocabulary."""


@dataclass(frozen=True)
class PerturbableVocabulary:
    """The perturbable tokens V', split into the word pool and the number pool.

    `*_ids` are vocabulary ids (one per distinct surface form, the lowest id wins),
    `*_surfaces` their surface strings; numbers are sorted by value.
    """

    word_ids: np.ndarray
    word_surfaces: tuple[str, ...]
    number_ids: np.ndarray
    number_surfaces: tuple[str, ...]
    number_values: np.ndarray
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


def surface_class(surface: str) -> str | None:
    """"number" for ASCII digits, "word" for alphabetic strings, None otherwise."""
    if surface.isascii() and surface.isdigit():
        return "number"
    if surface.isalpha():
        return "word"
    return None


def _excluded_reason(surface: str, kind: str, exclude: frozenset[str],
                     exclude_tokens: frozenset[str]) -> str | None:
    if surface in exclude_tokens:
        return "exclude_tokens"
    if kind == "number":
        return "numbers" if "numbers" in exclude else None
    if "short_words" in exclude and len(surface) <= SHORT_WORD_MAX_CHARS:
        return "short_words"
    if "stopwords" in exclude and surface.lower() in STOPWORDS:
        return "stopwords"
    if "all_caps" in exclude and surface.isupper():
        return "all_caps"
    return None


def special_token_ids(tokenizer) -> frozenset[int]:
    """Ids of special and added tokens (never perturbed)."""
    ids = set(tokenizer.backend_tokenizer.get_added_tokens_decoder())
    ids.update(int(i) for i in getattr(tokenizer, "all_special_ids", ()))
    return frozenset(ids)


def perturbable_vocabulary(tokenizer, exclude: Iterable[str] = (),
                           exclude_tokens: Iterable[str] = ()) -> PerturbableVocabulary:
    """Classify the vocabulary of a fast tokenizer into the word and number pools of V'."""
    if not hasattr(tokenizer, "backend_tokenizer"):
        raise VocabularyError(
            f"tokenizer must be a fast (tokenizers-backed) Hugging Face tokenizer, got {type(tokenizer).__name__}")
    if isinstance(exclude, str) or isinstance(exclude_tokens, str):
        raise VocabularyError("exclude and exclude_tokens take collections of strings, not one string")
    exclude_set = frozenset(exclude)
    unknown = sorted(exclude_set - set(EXCLUDABLE_CLASSES))
    if unknown:
        raise VocabularyError(
            f"unknown exclude class(es) {unknown}; allowed: {list(EXCLUDABLE_CLASSES)} "
            "(put literal tokens in exclude_tokens)")
    exclude_token_set = frozenset(exclude_tokens)

    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    specials = special_token_ids(tokenizer)
    id_to_raw = sorted((idx, raw) for raw, idx in vocab.items() if idx not in specials)
    decoder = tokenizer.backend_tokenizer.decoder

    seen: set[str] = set()
    words: list[tuple[int, str]] = []
    numbers: list[tuple[int, str]] = []
    excluded_counts = {name: 0 for name in (*EXCLUDABLE_CLASSES, "exclude_tokens")}
    for idx, raw in id_to_raw:
        surface = word_start_surface(raw, decoder)
        if not surface or surface in seen:
            continue
        kind = surface_class(surface)
        if kind is None:
            continue
        seen.add(surface)
        reason = _excluded_reason(surface, kind, exclude_set, exclude_token_set)
        if reason is not None:
            excluded_counts[reason] += 1
        elif kind == "word":
            words.append((idx, surface))
        else:
            numbers.append((idx, surface))

    numbers.sort(key=lambda item: (int(item[1]), item[0]))
    return PerturbableVocabulary(
        word_ids=np.array([i for i, _ in words], dtype=np.int64),
        word_surfaces=tuple(s for _, s in words),
        number_ids=np.array([i for i, _ in numbers], dtype=np.int64),
        number_surfaces=tuple(s for _, s in numbers),
        number_values=np.array([float(int(s)) for _, s in numbers], dtype=np.float64),
        special_ids=specials,
        decoder_name=type(decoder).__name__ if decoder is not None else "none",
        excluded_counts=excluded_counts,
    )
