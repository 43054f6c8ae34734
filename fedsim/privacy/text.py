"""Token-level exponential mechanisms over a model's input-embedding space (FedCoT, §2.2–2.5).

A FedCoT client perturbs each prompt before sending it to the server LLM: every
perturbable token (a whole word or a whole number of the kit's vocabulary V') is replaced
by a token drawn from an exponential mechanism; everything else is released unchanged and
counted as unprotected.

- `TextPrivacyKit` is built once from a fast tokenizer and the LLM's input embeddings.
  Words use cosine utility; numbers use numeric utility 1 - 2|x - x'| / R and only other
  numbers as candidates. Classes can be excluded on purpose (`exclude`, `exclude_tokens`).
- `TokenPerturber(kit, "em", eps)`: exponential mechanism over a candidate set fixed in
  advance: the token's EM group, a partition of V' into groups of about `top_k` similar
  tokens; P(t'|t) ∝ exp(eps·u(t,t') / (2Δu)) with Δu the group's computed sensitivity.
  Proven: eps-DP per token for replacing a token by another token of its group (tokens of
  different groups are distinguishable, as in CUSTEXT).
- `TokenPerturber(kit, "aem", eps)`: adaptive variant (InferDPT/RANTEXT-style). A Laplace
  noised embedding sets the threshold s* = u(t, noisy t), candidates are the tokens with
  u(t, t') >= s* among t's `top_m` neighbours, then EM at eps_em with Δu = 2 (the range
  of the utility). eps_lap = f·eps, eps_em = (1 - f)·eps. The candidate set depends on the
  private token, so the per-token eps is only claimed (status "claimed").
  `reference=True` reproduces the FATE-LLM kit: eps_lap = eps_em = eps and Δu = 1; the
  reported eps is the reference's own claim (its EM step alone is only 2·eps-DP).
- eps = inf releases the text unchanged.

Each `PerturbedText` carries what the privacy ledger composes: n_perturbable tokens, each
released at eps_per_token (pure DP), and the status.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fedsim.privacy.text_candidates import (
    CandidatePool,
    build_pool,
    cosine_similarity_block,
    numeric_similarity_block,
)
from fedsim.privacy.text_vocab import PerturbableVocabulary, perturbable_vocabulary

Mechanism = Literal["em", "aem"]
PoolName = Literal["word", "number"]
POOL_NAMES: tuple[PoolName, ...] = ("word", "number")

AEM_SENSITIVITY = 2.0
"""Δu used by AEM: utilities lie in [-1, 1], so any candidate set has sensitivity <= 2."""
REFERENCE_SENSITIVITY = 1.0
"""Δu of the FATE-LLM reference kit (understates the cosine utility's range of 2)."""
_AEM_NOISE_BYTES = 32 * 2**20  # largest block of Laplace noise drawn at once


class TextPrivacyError(ValueError):
    """Invalid input to the text privacy kit or perturber."""


@dataclass(frozen=True)
class PerturbedText:
    """One perturbed prompt and the numbers the privacy ledger needs.

    The release is n_perturbable pure-DP token mechanisms at eps_per_token each.
    unprotected_fraction = 1 - n_perturbable / n_tokens: the share of tokens released in
    clear (punctuation, sub-word pieces, excluded classes, special tokens, ...).
    candidate_set_sizes has one entry per perturbable token; n_capped counts AEM tokens
    whose threshold fell below their M-th neighbour (candidate set cut to the top-M list).
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
    """A tokenised text and the character spans of its perturbable tokens."""

    tokens: tuple[str, ...]
    spans: list[tuple[int, int]]
    pools: list[PoolName]
    indices: list[int]


class TextPrivacyKit:
    """Perturbable vocabulary V', embeddings, Δf, neighbour lists and EM groups of one LLM."""

    def __init__(self, tokenizer, vocabulary: PerturbableVocabulary, word_embeddings: np.ndarray,
                 pools: dict[PoolName, CandidatePool], top_k: int, top_m: int,
                 n_zero_norm_dropped: int, build_seconds: float):
        self.tokenizer = tokenizer
        self.vocabulary = vocabulary
        self.word_embeddings = word_embeddings
        self.embedding_ranges = (word_embeddings.max(axis=0) - word_embeddings.min(axis=0)
                                 if word_embeddings.shape[0] else np.zeros(word_embeddings.shape[1], np.float32))
        values = vocabulary.number_values
        self.number_range = float(values.max() - values.min()) if values.size else 0.0
        self.pools = pools
        self.top_k = top_k
        self.top_m = top_m
        self.n_zero_norm_dropped = n_zero_norm_dropped
        self.build_seconds = build_seconds
        self.surfaces: dict[PoolName, tuple[str, ...]] = {
            "word": vocabulary.word_surfaces, "number": vocabulary.number_surfaces}
        self._lookup: dict[str, tuple[PoolName, int]] = {
            surface: (name, i) for name in POOL_NAMES for i, surface in enumerate(self.surfaces[name])}
        self._em_cdf_cache: dict[tuple[PoolName, float], np.ndarray] = {}

    @classmethod
    def from_embeddings(cls, tokenizer, embeddings: np.ndarray, top_k: int = 20, top_m: int = 256,
                        exclude: Iterable[str] = (), exclude_tokens: Iterable[str] = (),
                        chunk_bytes: int = 64 * 2**20) -> TextPrivacyKit:
        """Build the kit from a fast tokenizer and the input-embedding matrix [vocab, d].

        top_k: EM candidate-set (group) size; top_m: neighbour-list length bounding AEM
        candidate sets (top_m >= the pool size makes AEM exact); exclude: class names from
        text_vocab.EXCLUDABLE_CLASSES; exclude_tokens: surface strings never perturbed;
        chunk_bytes: memory bound of one block of similarities during construction.
        """
        if not isinstance(top_k, int) or top_k < 2:
            raise TextPrivacyError(f"top_k must be an int >= 2 (EM candidate-set size), got {top_k!r}")
        if not isinstance(top_m, int) or top_m < top_k:
            raise TextPrivacyError(f"top_m must be an int >= top_k={top_k} (AEM neighbour list), got {top_m!r}")
        if not isinstance(chunk_bytes, int) or chunk_bytes <= 0:
            raise TextPrivacyError(f"chunk_bytes must be a positive int, got {chunk_bytes!r}")
        matrix = np.asarray(embeddings)
        if matrix.ndim != 2 or matrix.shape[1] == 0 or not np.issubdtype(matrix.dtype, np.number):
            raise TextPrivacyError(
                f"embeddings must be a numeric [vocab, d] matrix, got shape {matrix.shape} dtype {matrix.dtype}")
        started = time.perf_counter()
        vocabulary = perturbable_vocabulary(tokenizer, exclude, exclude_tokens)
        all_ids = np.concatenate([vocabulary.word_ids, vocabulary.number_ids])
        if all_ids.size and all_ids.max() >= matrix.shape[0]:
            raise TextPrivacyError(
                f"embeddings has {matrix.shape[0]} rows but the tokenizer uses token id {int(all_ids.max())}")

        word_embeddings = matrix[vocabulary.word_ids].astype(np.float32)
        if not np.isfinite(word_embeddings).all():
            raise TextPrivacyError("embeddings contain NaN or infinite values in perturbable rows")
        nonzero = np.linalg.norm(word_embeddings, axis=1) > 0
        n_dropped = int((~nonzero).sum())
        if n_dropped:
            vocabulary = _drop_words(vocabulary, nonzero)
            word_embeddings = word_embeddings[nonzero]

        pools = {
            "word": build_pool(word_embeddings.shape[0], cosine_similarity_block(word_embeddings),
                               top_k, top_m, chunk_bytes),
            "number": build_pool(vocabulary.number_values.size, numeric_similarity_block(vocabulary.number_values),
                                 top_k, top_m, chunk_bytes),
        }
        return cls(tokenizer, vocabulary, word_embeddings, pools, top_k, top_m, n_dropped,
                   time.perf_counter() - started)

    def locate(self, texts: Sequence[str]) -> list[LocatedText]:
        """Tokenise texts and find their perturbable tokens (whole words/numbers of V')."""
        for text in texts:
            if not isinstance(text, str):
                raise TextPrivacyError(f"texts must be strings, got {type(text).__name__}")
        encodings = self.tokenizer.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False)
        specials = self.vocabulary.special_ids
        located = []
        for text, encoding in zip(texts, encodings):
            spans: list[tuple[int, int]] = []
            pools: list[PoolName] = []
            indices: list[int] = []
            previous_end = -1
            for token_id, (start, end) in zip(encoding.ids, encoding.offsets):
                if token_id in specials or start < previous_end:
                    continue
                piece = text[start:end]
                core = piece.strip()
                if not core:
                    continue
                word_start = start + len(piece) - len(piece.lstrip())
                word_end = word_start + len(core)
                found = self._lookup.get(core)
                glued = ((word_start > 0 and text[word_start - 1].isalnum())
                         or (word_end < len(text) and text[word_end].isalnum()))
                if found is None or glued:
                    continue
                spans.append((word_start, word_end))
                pools.append(found[0])
                indices.append(found[1])
                previous_end = word_end
            located.append(LocatedText(tuple(encoding.tokens), spans, pools, indices))
        return located

    def unprotected_fraction(self, texts: Sequence[str]) -> float:
        """Share of the texts' tokens that no mechanism of this kit would perturb."""
        located = self.locate(texts)
        n_tokens = sum(len(item.tokens) for item in located)
        n_perturbable = sum(len(item.spans) for item in located)
        return 1.0 - n_perturbable / n_tokens if n_tokens else 0.0

    def em_cdf(self, pool: PoolName, eps: float) -> np.ndarray:
        """Cumulative EM probability table of a pool at eps (cached per eps)."""
        key = (pool, float(eps))
        if key not in self._em_cdf_cache:
            self._em_cdf_cache[key] = self.pools[pool].em_cdf(float(eps))
        return self._em_cdf_cache[key]

    def em_candidates(self, surface: str) -> tuple[str, ...]:
        """The EM candidate set (group) of a perturbable token, itself first."""
        if surface not in self._lookup:
            raise TextPrivacyError(f"{surface!r} is not a perturbable token of this kit")
        name, index = self._lookup[surface]
        pool = self.pools[name]
        members = pool.group_idx[index, : pool.group_size[index]]
        ordered = [index] + [int(m) for m in members if m != index]
        return tuple(self.surfaces[name][m] for m in ordered)

    def summary(self) -> dict:
        """Sizes, options and build time of the kit (JSON-serialisable)."""
        return {
            "decoder": self.vocabulary.decoder_name,
            "n_special": len(self.vocabulary.special_ids),
            "n_words": self.pools["word"].size,
            "n_numbers": self.pools["number"].size,
            "n_word_groups": self.pools["word"].n_groups,
            "n_number_groups": self.pools["number"].n_groups,
            "excluded": dict(self.vocabulary.excluded_counts),
            "n_zero_norm_dropped": self.n_zero_norm_dropped,
            "top_k": self.top_k,
            "top_m": self.top_m,
            "embedding_dim": int(self.word_embeddings.shape[1]),
            "build_seconds": self.build_seconds,
        }


def _drop_words(vocabulary: PerturbableVocabulary, keep: np.ndarray) -> PerturbableVocabulary:
    """The vocabulary without the word tokens where keep is False."""
    surfaces = tuple(s for s, k in zip(vocabulary.word_surfaces, keep) if k)
    return PerturbableVocabulary(vocabulary.word_ids[keep], surfaces, vocabulary.number_ids,
                                 vocabulary.number_surfaces, vocabulary.number_values,
                                 vocabulary.special_ids, vocabulary.decoder_name,
                                 vocabulary.excluded_counts)


class TokenPerturber:
    """Perturbs prompts with EM or AEM at a per-token eps (see the module docstring)."""

    def __init__(self, kit: TextPrivacyKit, mechanism: Mechanism, eps: float,
                 aem_lap_fraction: float = 0.5, reference: bool = False):
        if mechanism not in ("em", "aem"):
            raise TextPrivacyError(f"mechanism must be 'em' or 'aem', got {mechanism!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or math.isnan(eps) or eps <= 0:
            raise TextPrivacyError(f"eps must be a number > 0 (math.inf for no perturbation), got {eps!r}")
        if not isinstance(aem_lap_fraction, (int, float)) or not 0.0 < aem_lap_fraction < 1.0:
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
        """Perturb many prompts with one vectorised draw per token class."""
        if isinstance(texts, str):
            raise TextPrivacyError("perturb_batch takes a sequence of strings; use perturb for one text")
        if not isinstance(rng, np.random.Generator):
            raise TextPrivacyError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        located = self.kit.locate(texts)
        replacements: dict[PoolName, np.ndarray] = {}
        set_sizes: dict[PoolName, np.ndarray] = {}
        capped: dict[PoolName, np.ndarray] = {}
        for name in POOL_NAMES:
            indices = np.array([i for item in located for p, i in zip(item.pools, item.indices) if p == name],
                               dtype=np.int64)
            replacements[name], set_sizes[name], capped[name] = self._sample(name, indices, rng)
        cursor = {name: 0 for name in POOL_NAMES}
        return [self._assemble(text, item, replacements, set_sizes, capped, cursor)
                for text, item in zip(texts, located)]

    def _sample(self, name: PoolName, indices: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """New pool indices, candidate-set sizes and capped flags for the given tokens."""
        pool = self.kit.pools[name]
        if not math.isfinite(self.eps) or indices.size == 0:
            return indices, np.ones(indices.size, dtype=np.int64), np.zeros(indices.size, dtype=bool)
        if self.mechanism == "em":
            cdf = self.kit.em_cdf(name, self.eps)[indices]
            column = (cdf < rng.random(indices.size)[:, None]).sum(axis=1)
            column = np.minimum(column, pool.group_size[indices] - 1)
            return (pool.group_idx[indices, column].astype(np.int64), pool.group_size[indices].astype(np.int64),
                    np.zeros(indices.size, dtype=bool))
        if name == "word":
            thresholds = self._cosine_thresholds(indices, rng)
        else:
            thresholds = self._numeric_thresholds(indices, rng)
        return self._sample_above_threshold(pool, indices, thresholds, rng)

    def _cosine_thresholds(self, indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """s* = cos(e, e + Laplace(0, 2Δf_j / eps_lap)) for each token's embedding e."""
        embeddings = self.kit.word_embeddings
        scale = 2.0 * self.kit.embedding_ranges.astype(np.float64) / self.eps_lap
        thresholds = np.empty(indices.size, dtype=np.float64)
        rows_per_block = max(1, _AEM_NOISE_BYTES // (8 * embeddings.shape[1]))
        for start in range(0, indices.size, rows_per_block):
            block = embeddings[indices[start:start + rows_per_block]].astype(np.float64)
            noisy = block + rng.laplace(0.0, 1.0, size=block.shape) * scale
            dots = np.einsum("ij,ij->i", block, noisy)
            norms = np.linalg.norm(block, axis=1) * np.linalg.norm(noisy, axis=1)
            thresholds[start:start + block.shape[0]] = dots / np.where(norms > 0, norms, 1.0)
        return thresholds

    def _numeric_thresholds(self, indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """s* = u(x, x + Laplace(0, 2R / eps_lap)) = 1 - 2|noise| / R, R the number range."""
        value_range = self.kit.number_range if self.kit.number_range > 0 else 1.0
        noise = rng.laplace(0.0, 2.0 * value_range / self.eps_lap, size=indices.size)
        return 1.0 - 2.0 * np.abs(noise) / value_range

    def _sample_above_threshold(self, pool: CandidatePool, indices: np.ndarray, thresholds: np.ndarray,
                                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """EM at eps_em over each token's neighbours with utility >= its threshold."""
        utilities = pool.neighbour_util[indices].astype(np.float64)
        n_candidates = np.maximum((utilities >= thresholds[:, None]).sum(axis=1), 1)
        n_listed = utilities.shape[1]
        capped = (n_listed < pool.size) & (thresholds < utilities[:, -1])
        inside = np.arange(n_listed)[None, :] < n_candidates[:, None]
        weights = np.where(inside, np.exp(self.eps_em * (utilities - 1.0) / (2.0 * self.sensitivity)), 0.0)
        cdf = np.cumsum(weights, axis=1)
        targets = rng.random(indices.size) * cdf[np.arange(indices.size), n_candidates - 1]
        column = np.minimum((cdf < targets[:, None]).sum(axis=1), n_candidates - 1)
        return pool.neighbour_idx[indices, column].astype(np.int64), n_candidates.astype(np.int64), capped

    def _assemble(self, text: str, item: LocatedText, replacements: dict[PoolName, np.ndarray],
                  set_sizes: dict[PoolName, np.ndarray], capped: dict[PoolName, np.ndarray],
                  cursor: dict[PoolName, int]) -> PerturbedText:
        """Splice the sampled tokens into the original text, keeping every other character."""
        pieces: list[str] = []
        copied_to = 0
        n_changed = 0
        sizes: list[int] = []
        n_capped = 0
        for (start, end), name, index in zip(item.spans, item.pools, item.indices):
            position = cursor[name]
            cursor[name] += 1
            new_index = int(replacements[name][position])
            sizes.append(int(set_sizes[name][position]))
            n_capped += int(capped[name][position])
            if new_index != index:
                pieces.append(text[copied_to:start])
                pieces.append(self.kit.surfaces[name][new_index])
                copied_to = end
                n_changed += 1
        pieces.append(text[copied_to:])
        n_tokens = len(item.tokens)
        n_perturbable = len(item.spans)
        return PerturbedText(
            text="".join(pieces),
            original_tokens=item.tokens,
            n_tokens=n_tokens,
            n_perturbable=n_perturbable,
            n_changed=n_changed,
            eps_per_token=self.eps,
            mechanism=self.mechanism,
            status=self.status,
            unprotected_fraction=1.0 - n_perturbable / n_tokens if n_tokens else 0.0,
            candidate_set_sizes=tuple(sizes),
            n_capped=n_capped,
        )
