"""Token-level exponential mechanisms over a model's input-embedding space (FedCoT, §2.2–2.5).

A FedCoT client perturbs each prompt before sending it to the server LLM. The perturbed
units are whole-word tokens of the kit's vocabulary V' and whole numbers (runs of digits,
however the tokenizer splits them); each is replaced by a draw from an exponential
mechanism, and every other character of the text is released unchanged.

- `TextPrivacyKit` is built once from a fast tokenizer and the LLM's input embeddings.
  Words use cosine utility; numbers use numeric utility 1 - 2|x - x'| / R over numbers of
  the same length (text_numbers.py). Classes can be excluded on purpose (`exclude`,
  `exclude_tokens`); nothing is excluded by default, special tokens are never perturbed.
- `TokenPerturber(kit, "em", eps)`: exponential mechanism over a candidate set fixed in
  advance: the unit's EM group (words: a partition of V' into groups of about `top_k`
  similar tokens; numbers: consecutive blocks of `top_k` numbers);
  P(t'|t) ∝ exp(eps·u(t,t') / (2Δu)) with Δu the group's computed sensitivity. Proven:
  eps-DP per unit for replacing it by another member of its group (members of different
  groups are distinguishable, as in CUSTEXT).
- `TokenPerturber(kit, "aem", eps)`: adaptive variant (InferDPT/RANTEXT-style). A Laplace
  noised embedding (or value) sets the threshold s* = u(t, noisy t); candidates are the
  units with u(t, t') >= s* (words: among t's `top_m` neighbours), then EM at eps_em with
  Δu = 2 (the range of the utility). eps_lap = f·eps, eps_em = (1 - f)·eps. The candidate
  set depends on the private unit, so the per-unit eps is only claimed (status
  "claimed"); moreover the per-dimension Laplace scale 2Δf_j/eps_lap (as in the reference)
  is not eps_lap-DP for the whole embedding under the standard L1 analysis, which would
  need Σ_j Δf_j/eps_lap. `reference=True` reproduces the FATE-LLM kit: eps_lap = eps_em =
  eps and Δu = 1; the reported eps is the reference's own claim (its EM step alone is only
  2·eps-DP). (The FATE kit also leaves numbers, short and all-caps words in clear: build
  the kit with exclude={"numbers", "short_words", "all_caps"} for that.)
- eps = inf releases the text unchanged.

Each `PerturbedText` carries what the privacy ledger composes: n_perturbable units, each
released by a pure-DP mechanism at eps_per_token, and the status.
"""
from __future__ import annotations

import math
import numbers
import time
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fedsim.privacy.text_candidates import CandidatePool, build_pool, cosine_similarity_block
from fedsim.privacy.text_numbers import (
    MAX_DIGITS,
    NUMBER_PATTERN,
    em_groups,
    format_numbers,
    number_domains,
    sample_two_sided_geometric,
)
from fedsim.privacy.text_vocab import PerturbableVocabulary, TextPrivacyError, perturbable_vocabulary, string_set

Mechanism = Literal["em", "aem"]

AEM_SENSITIVITY = 2.0
"""Δu used by AEM: utilities lie in [-1, 1], so any candidate set has sensitivity <= 2."""
REFERENCE_SENSITIVITY = 1.0
"""Δu of the FATE-LLM reference kit (understates the cosine utility's range of 2)."""
_AEM_NOISE_BYTES = 32 * 2**20  # largest block of Laplace noise drawn at once


@dataclass(frozen=True)
class PerturbedText:
    """One perturbed prompt and the numbers the privacy ledger needs.

    The release is n_perturbable pure-DP mechanisms (one per word token or number) at
    eps_per_token each. unprotected_fraction: share of the text's content tokens (tokens
    that are not pure whitespace) released in clear, i.e. not inside a perturbed unit
    (punctuation, sub-word pieces, excluded classes, special tokens, ...).
    candidate_set_sizes has one entry per perturbed unit, in text order; n_capped counts
    AEM words whose threshold fell below their M-th neighbour (candidate set cut to top-M).
    """

    text: str
    original_tokens: tuple[str, ...]
    n_tokens: int
    n_perturbable: int
    n_changed: int
    eps_per_token: float
    mechanism: Mechanism
    status: Literal["proven", "claimed"]
    unprotected_fraction: float
    candidate_set_sizes: tuple[int, ...]
    n_capped: int


@dataclass(frozen=True)
class LocatedText:
    """A tokenised text, the character spans of its perturbable units and its coverage."""

    tokens: tuple[str, ...]
    word_spans: list[tuple[int, int]]
    word_indices: list[int]
    number_spans: list[tuple[int, int]]
    n_content_tokens: int
    n_protected_tokens: int

    @property
    def unprotected_fraction(self) -> float:
        if not self.n_content_tokens:
            return 0.0
        return 1.0 - self.n_protected_tokens / self.n_content_tokens


class TextPrivacyKit:
    """Perturbable vocabulary V', embeddings, Δf, neighbour lists and EM groups of one LLM."""

    def __init__(self, tokenizer, vocabulary: PerturbableVocabulary, word_embeddings: np.ndarray,
                 word_pool: CandidatePool, top_k: int, top_m: int, perturb_numbers: bool,
                 exclude_tokens: frozenset[str], n_zero_norm_dropped: int, build_seconds: float):
        self.tokenizer = tokenizer
        self.vocabulary = vocabulary
        self.word_embeddings = word_embeddings
        self.word_norms = np.linalg.norm(word_embeddings.astype(np.float64), axis=1)
        self.embedding_ranges = (word_embeddings.max(axis=0) - word_embeddings.min(axis=0)
                                 if word_embeddings.shape[0] else np.zeros(word_embeddings.shape[1], np.float32))
        self.word_pool = word_pool
        self.word_surfaces = vocabulary.word_surfaces
        self.top_k = top_k
        self.top_m = top_m
        self.perturb_numbers = perturb_numbers
        self.exclude_tokens = exclude_tokens
        self.n_zero_norm_dropped = n_zero_norm_dropped
        self.build_seconds = build_seconds
        self._word_index = {surface: i for i, surface in enumerate(self.word_surfaces)}
        self._em_cdf_cache: dict[float, np.ndarray] = {}

    @classmethod
    def from_embeddings(cls, tokenizer, embeddings: np.ndarray, top_k: int = 20, top_m: int = 256,
                        exclude: Iterable[str] = (), exclude_tokens: Iterable[str] = (),
                        chunk_bytes: int = 64 * 2**20) -> TextPrivacyKit:
        """Build the kit from a fast tokenizer and the input-embedding matrix [vocab, d].

        top_k: EM candidate-set (group) size; top_m: neighbour-list length bounding AEM word
        candidate sets (top_m >= the number of words makes AEM exact); exclude: class names
        from text_vocab.EXCLUDABLE_CLASSES; exclude_tokens: surface strings (words or
        numbers) never perturbed; chunk_bytes: memory bound of one block of similarities.
        """
        if not isinstance(top_k, numbers.Integral) or top_k < 2:
            raise TextPrivacyError(f"top_k must be an int >= 2 (EM candidate-set size), got {top_k!r}")
        if not isinstance(top_m, numbers.Integral) or top_m < top_k:
            raise TextPrivacyError(f"top_m must be an int >= top_k={top_k} (AEM neighbour list), got {top_m!r}")
        if not isinstance(chunk_bytes, numbers.Integral) or chunk_bytes <= 0:
            raise TextPrivacyError(f"chunk_bytes must be a positive int, got {chunk_bytes!r}")
        matrix = np.asarray(embeddings)
        if matrix.ndim != 2 or matrix.shape[1] == 0 or not np.issubdtype(matrix.dtype, np.number):
            raise TextPrivacyError(
                f"embeddings must be a numeric [vocab, d] matrix, got shape {matrix.shape} dtype {matrix.dtype}")
        started = time.perf_counter()
        exclude, exclude_tokens = string_set(exclude, "exclude"), string_set(exclude_tokens, "exclude_tokens")
        vocabulary = perturbable_vocabulary(tokenizer, exclude, exclude_tokens)
        if vocabulary.word_ids.size and vocabulary.word_ids.max() >= matrix.shape[0]:
            raise TextPrivacyError(f"embeddings has {matrix.shape[0]} rows but the tokenizer uses "
                                   f"token id {int(vocabulary.word_ids.max())}")
        word_embeddings = matrix[vocabulary.word_ids].astype(np.float32)
        if not np.isfinite(word_embeddings).all():
            raise TextPrivacyError("embeddings contain NaN or infinite values in perturbable rows")
        nonzero = np.linalg.norm(word_embeddings, axis=1) > 0
        n_dropped = int((~nonzero).sum())
        if n_dropped:
            vocabulary = _drop_words(vocabulary, nonzero)
            word_embeddings = word_embeddings[nonzero]
        word_pool = build_pool(word_embeddings.shape[0], cosine_similarity_block(word_embeddings),
                               top_k, top_m, chunk_bytes)
        return cls(tokenizer, vocabulary, word_embeddings, word_pool, top_k, top_m,
                   perturb_numbers="numbers" not in exclude, exclude_tokens=exclude_tokens,
                   n_zero_norm_dropped=n_dropped, build_seconds=time.perf_counter() - started)

    def locate(self, texts: Sequence[str]) -> list[LocatedText]:
        """Tokenise texts and find their perturbable units: whole-word tokens of V' and numbers."""
        for text in texts:
            if not isinstance(text, str):
                raise TextPrivacyError(f"texts must be strings, got {type(text).__name__}")
        encodings = self.tokenizer.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False)
        # the unknown token stands for ordinary text the vocabulary lacks: its digits are numbers
        specials = self.vocabulary.special_ids - {getattr(self.tokenizer, "unk_token_id", None)}
        located = []
        for text, encoding in zip(texts, encodings):
            content_spans: list[tuple[int, int]] = []
            special_spans: list[tuple[int, int]] = []
            word_spans: list[tuple[int, int]] = []
            word_indices: list[int] = []
            for token_id, (start, end) in zip(encoding.ids, encoding.offsets):
                piece = text[start:end]
                core = piece.strip()
                if not core:
                    continue
                word_start = start + len(piece) - len(piece.lstrip())
                word_end = word_start + len(core)
                content_spans.append((word_start, word_end))
                if token_id in specials:
                    special_spans.append((start, end))
                    continue
                index = self._word_index.get(core)
                glued = ((word_start > 0 and text[word_start - 1].isalnum())
                         or (word_end < len(text) and text[word_end].isalnum()))
                if index is None or glued or (word_spans and word_start < word_spans[-1][1]):
                    continue
                word_spans.append((word_start, word_end))
                word_indices.append(index)
            number_spans = self._number_spans(text, special_spans)
            n_protected = _count_covered(content_spans, word_spans + number_spans)
            located.append(LocatedText(tuple(encoding.tokens), word_spans, word_indices, number_spans,
                                       len(content_spans), n_protected))
        return located

    def _number_spans(self, text: str, special_spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Digit runs to perturb: not excluded, at most MAX_DIGITS long, outside special tokens."""
        if not self.perturb_numbers:
            return []
        spans = []
        for match in NUMBER_PATTERN.finditer(text):
            start, end = match.span()
            if (end - start > MAX_DIGITS or match.group() in self.exclude_tokens
                    or any(start < s_end and s_start < end for s_start, s_end in special_spans)):
                continue
            spans.append((start, end))
        return spans

    def unprotected_fraction(self, texts: Sequence[str]) -> float:
        """Share of the texts' content tokens that no mechanism of this kit would perturb."""
        located = self.locate(texts)
        n_content = sum(item.n_content_tokens for item in located)
        n_protected = sum(item.n_protected_tokens for item in located)
        return 1.0 - n_protected / n_content if n_content else 0.0

    def em_cdf(self, eps: float) -> np.ndarray:
        """Cumulative EM probability table of the word pool at eps (cached per eps)."""
        key = float(eps)
        if key not in self._em_cdf_cache:
            self._em_cdf_cache[key] = self.word_pool.em_cdf(key)
        return self._em_cdf_cache[key]

    def em_candidates(self, unit: str) -> tuple[str, ...]:
        """The EM candidate set (group) of a perturbable word or number, itself first."""
        is_number = NUMBER_PATTERN.fullmatch(unit) is not None and len(unit) <= MAX_DIGITS
        if unit in self.exclude_tokens or not (self.perturb_numbers if is_number else unit in self._word_index):
            raise TextPrivacyError(f"{unit!r} is not a perturbable word or number of this kit")
        if is_number:
            domains = number_domains([unit])
            first, last = em_groups(domains, self.top_k)
            members = np.arange(first[0], last[0] + 1.0)
            members = np.concatenate([domains.values, members[members != domains.values[0]]])
            return tuple(format_numbers(members, np.full(members.size, domains.width[0])))
        index = self._word_index[unit]
        members = self.word_pool.group_idx[index, : self.word_pool.group_size[index]]
        return tuple(self.word_surfaces[m] for m in [index] + [int(m) for m in members if m != index])

    def summary(self) -> dict:
        """Sizes, options and build time of the kit (JSON-serialisable)."""
        return {
            "decoder": self.vocabulary.decoder_name,
            "n_special": len(self.vocabulary.special_ids),
            "n_words": self.word_pool.size,
            "n_word_groups": self.word_pool.n_groups,
            "perturb_numbers": self.perturb_numbers,
            "excluded_words": dict(self.vocabulary.excluded_counts),
            "n_zero_norm_dropped": self.n_zero_norm_dropped,
            "top_k": self.top_k,
            "top_m": self.top_m,
            "embedding_dim": int(self.word_embeddings.shape[1]),
            "build_seconds": self.build_seconds,
        }


def _count_covered(spans: list[tuple[int, int]], units: list[tuple[int, int]]) -> int:
    """How many spans lie entirely inside one of the (disjoint) units."""
    units = sorted(units)
    starts = [start for start, _ in units]
    covered = 0
    for start, end in spans:
        i = bisect_right(starts, start) - 1
        covered += i >= 0 and units[i][1] >= end
    return covered


def _drop_words(vocabulary: PerturbableVocabulary, keep: np.ndarray) -> PerturbableVocabulary:
    """The vocabulary without the word tokens where keep is False."""
    surfaces = tuple(s for s, k in zip(vocabulary.word_surfaces, keep) if k)
    return PerturbableVocabulary(vocabulary.word_ids[keep], surfaces, vocabulary.special_ids,
                                 vocabulary.decoder_name, vocabulary.excluded_counts)


@dataclass(frozen=True)
class _Draws:
    """Replacements of a batch of units, with their candidate-set sizes and capped flags."""

    replacements: list[str]
    set_sizes: np.ndarray
    capped: np.ndarray


class TokenPerturber:
    """Perturbs prompts with EM or AEM at a per-unit eps (see the module docstring)."""

    def __init__(self, kit: TextPrivacyKit, mechanism: Mechanism, eps: float,
                 aem_lap_fraction: float = 0.5, reference: bool = False):
        if mechanism not in ("em", "aem"):
            raise TextPrivacyError(f"mechanism must be 'em' or 'aem', got {mechanism!r}")
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or math.isnan(eps) or eps <= 0:
            raise TextPrivacyError(f"eps must be a number > 0 (math.inf for no perturbation), got {eps!r}")
        if (isinstance(aem_lap_fraction, bool) or not isinstance(aem_lap_fraction, numbers.Real)
                or not 0.0 < aem_lap_fraction < 1.0):
            raise TextPrivacyError(
                f"aem_lap_fraction must lie strictly between 0 and 1, got {aem_lap_fraction!r}")
        if reference and mechanism != "aem":
            raise TextPrivacyError("reference=True is the FATE-LLM AEM preset; it does not apply to 'em'")
        if reference and aem_lap_fraction != 0.5:
            raise TextPrivacyError("reference=True uses eps_lap = eps_em = eps; leave aem_lap_fraction at 0.5")
        self.kit = kit
        self.mechanism: Mechanism = mechanism
        self.eps = float(eps)
        self.reference = reference
        if reference:
            self.eps_lap, self.eps_em, self.sensitivity = self.eps, self.eps, REFERENCE_SENSITIVITY
        else:
            self.eps_lap = aem_lap_fraction * self.eps
            self.eps_em = self.eps - self.eps_lap
            self.sensitivity = AEM_SENSITIVITY
        self.status: Literal["proven", "claimed"] = (
            "claimed" if mechanism == "aem" and math.isfinite(self.eps) else "proven")

    def perturb(self, text: str, rng: np.random.Generator) -> PerturbedText:
        """Perturb one prompt."""
        return self.perturb_batch([text], rng)[0]

    def perturb_batch(self, texts: Sequence[str], rng: np.random.Generator) -> list[PerturbedText]:
        """Perturb many prompts with one vectorised draw for all their words and one for all numbers."""
        if isinstance(texts, str):
            raise TextPrivacyError("perturb_batch takes a sequence of strings; use perturb for one text")
        if not isinstance(rng, np.random.Generator):
            raise TextPrivacyError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        located = self.kit.locate(texts)
        word_draws = self._sample_words(
            np.array([i for item in located for i in item.word_indices], dtype=np.int64), rng)
        number_draws = self._sample_numbers(
            [text[s:e] for text, item in zip(texts, located) for s, e in item.number_spans], rng)
        results = []
        word_cursor = number_cursor = 0
        for text, item in zip(texts, located):
            n_words, n_numbers = len(item.word_spans), len(item.number_spans)
            units = sorted(
                [(span, word_draws, word_cursor + k) for k, span in enumerate(item.word_spans)]
                + [(span, number_draws, number_cursor + k) for k, span in enumerate(item.number_spans)],
                key=lambda unit: unit[0])
            results.append(self._assemble(text, item, units))
            word_cursor += n_words
            number_cursor += n_numbers
        return results

    def _sample_words(self, indices: np.ndarray, rng: np.random.Generator) -> _Draws:
        """Replacement words (surfaces) for word-pool indices."""
        pool = self.kit.word_pool
        if not math.isfinite(self.eps) or indices.size == 0:
            chosen, sizes, capped = indices, np.ones(indices.size, np.int64), np.zeros(indices.size, bool)
        elif self.mechanism == "em":
            cdf = self.kit.em_cdf(self.eps)[indices]
            column = (cdf < rng.random(indices.size)[:, None]).sum(axis=1)
            column = np.minimum(column, pool.group_size[indices] - 1)
            chosen, sizes = pool.group_idx[indices, column], pool.group_size[indices]
            capped = np.zeros(indices.size, bool)
        else:
            thresholds = self._cosine_thresholds(indices, rng)
            chosen, sizes, capped = self._sample_above_threshold(indices, thresholds, rng)
        return _Draws([self.kit.word_surfaces[i] for i in chosen.tolist()], sizes, capped)

    def _cosine_thresholds(self, indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """s* = cos(e, e + Laplace(0, 2Δf_j / eps_lap)) for each token's embedding e."""
        embeddings = self.kit.word_embeddings
        scale = 2.0 * self.kit.embedding_ranges.astype(np.float64) / self.eps_lap
        thresholds = np.empty(indices.size, dtype=np.float64)
        rows_per_block = max(1, _AEM_NOISE_BYTES // (8 * embeddings.shape[1]))
        for start in range(0, indices.size, rows_per_block):
            rows = indices[start:start + rows_per_block]
            block = embeddings[rows]
            noisy = rng.laplace(0.0, 1.0, size=block.shape)
            noisy *= scale
            noisy += block
            dots = np.einsum("ij,ij->i", noisy, block)
            norms = self.kit.word_norms[rows] * np.sqrt(np.einsum("ij,ij->i", noisy, noisy))
            thresholds[start:start + rows.size] = dots / np.where(norms > 0, norms, 1.0)
        return thresholds

    def _sample_above_threshold(self, indices: np.ndarray, thresholds: np.ndarray,
                                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """EM at eps_em over each word's neighbours with utility >= its threshold."""
        pool = self.kit.word_pool
        utilities = pool.neighbour_util[indices]  # float32, each row non-increasing
        n_candidates = np.maximum((utilities >= thresholds[:, None]).sum(axis=1), 1)
        n_listed = utilities.shape[1]
        capped = (n_listed < pool.size) & (thresholds < utilities[:, -1])
        weights = np.exp(np.float32(self.eps_em / (2.0 * self.sensitivity)) * (utilities - np.float32(1.0)))
        weights[np.arange(n_listed)[None, :] >= n_candidates[:, None]] = 0.0
        cdf = np.cumsum(weights, axis=1, dtype=np.float64)
        targets = rng.random(indices.size) * cdf[np.arange(indices.size), n_candidates - 1]
        column = np.minimum((cdf < targets[:, None]).sum(axis=1), n_candidates - 1)
        return pool.neighbour_idx[indices, column], n_candidates, capped

    def _sample_numbers(self, digit_strings: list[str], rng: np.random.Generator) -> _Draws:
        """Replacement numbers of the same length (text_numbers.py)."""
        n = len(digit_strings)
        if not math.isfinite(self.eps) or n == 0:
            return _Draws(list(digit_strings), np.ones(n, np.int64), np.zeros(n, bool))
        domains = number_domains(digit_strings)
        values = domains.values
        if self.mechanism == "em":
            first, last = em_groups(domains, self.kit.top_k)
            decay = self.eps / (2.0 * (last - first))
            below, above = values - first, last - values
        else:
            value_range = domains.value_range
            radius = np.floor(np.abs(rng.laplace(0.0, 1.0, size=n)) * 2.0 * value_range / self.eps_lap)
            below = np.minimum(radius, values - domains.low)
            above = np.minimum(radius, domains.high - values)
            decay = self.eps_em / (value_range * self.sensitivity)
        offsets = sample_two_sided_geometric(decay, below, above, rng)
        sizes = (below + above + 1.0).astype(np.int64)
        return _Draws(format_numbers(values + offsets, domains.width), sizes, np.zeros(n, bool))

    def _assemble(self, text: str, item: LocatedText,
                  units: list[tuple[tuple[int, int], _Draws, int]]) -> PerturbedText:
        """Splice the sampled units into the original text, keeping every other character."""
        pieces: list[str] = []
        copied_to = 0
        n_changed = 0
        for (start, end), draws, position in units:
            replacement = draws.replacements[position]
            if replacement != text[start:end]:
                pieces.append(text[copied_to:start])
                pieces.append(replacement)
                copied_to = end
                n_changed += 1
        pieces.append(text[copied_to:])
        return PerturbedText(
            text="".join(pieces),
            original_tokens=item.tokens,
            n_tokens=len(item.tokens),
            n_perturbable=len(units),
            n_changed=n_changed,
            eps_per_token=self.eps,
            mechanism=self.mechanism,
            status=self.status,
            unprotected_fraction=item.unprotected_fraction,
            candidate_set_sizes=tuple(int(draws.set_sizes[position]) for _, draws, position in units),
            n_capped=sum(int(draws.capped[position]) for _, draws, position in units),
        )
