"""Vocabulary maps between two tokenizers (algorithms.md §5.2, MinED).

Every token is first turned into a canonical text: what it stands for, with a word start shown as
one leading space, whatever the tokenizer's marker ('Ġ' byte-level, '▁' Metaspace, no '##'
WordPiece). A source token maps to the target token with the same canonical text, else to the one
at the least Levenshtein distance (ties: the lowest target id). Special tokens map among
themselves, by role.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SPECIAL_ROLES = ("eos", "bos", "unk", "pad")  # a token holding several roles maps by the first
_CDIST_CELLS = 1 << 24  # distances computed per cdist call (64 MiB of int32)
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: printable Latin-1 bytes stand for themselves,
    the others for the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [byte for byte in range(256) if byte not in printable]
    char_of_byte = {byte: chr(byte) for byte in printable}
    char_of_byte.update({byte: chr(256 + rank) for rank, byte in enumerate(shifted)})
    return {char: byte for byte, char in char_of_byte.items()}


_BYTE_OF_CHAR = _byte_level_alphabet()


def _bytes_text(data: bytes) -> str:
    """UTF-8 text of `data`; bytes that are not valid UTF-8 on their own read as '\\xNN'."""
    return data.decode("utf-8", errors="backslashreplace")


def _byte_level_text(piece: str) -> str:
    """The bytes a byte-level piece ('Ġ' = space) stands for, as text; a piece off the alphabet as is."""
    if any(char not in _BYTE_OF_CHAR for char in piece):
        return piece
    return _bytes_text(bytes(_BYTE_OF_CHAR[char] for char in piece))


def _components(node: Any) -> Iterator[dict]:
    """A normalizer, pre-tokenizer or decoder and, for a Sequence, its members."""
    if isinstance(node, dict):
        yield node
        for key in ("normalizers", "pretokenizers", "decoders"):
            for child in node.get(key) or []:
                yield from _components(child)


def _replaces_metaspace(part: dict) -> bool:
    """A Replace(' ', '▁') normalizer or Replace('▁', ' ') decoder (SentencePiece, e.g. LLaMA)."""
    return part.get("type") == "Replace" and "▁" in (part.get("content"), *(part.get("pattern") or {}).values())


def _piece_text(spec: dict) -> Callable[[str], str]:
    """The function from a vocabulary piece to its canonical text, for this tokenizer.json."""
    model = spec.get("model") or {}
    parts = [part for key in ("normalizer", "pre_tokenizer", "decoder") for part in _components(spec.get(key))]
    kinds = {part.get("type") for part in parts}
    if "ByteLevel" in kinds:
        return _byte_level_text
    if model.get("type") == "WordPiece" or "WordPiece" in kinds:
        prefix = next((part["prefix"] for part in parts if part.get("type") == "WordPiece"),
                      model.get("continuing_subword_prefix") or "##")
        return lambda piece: piece[len(prefix):] if piece.startswith(prefix) else " " + piece
    marker = next((part.get("replacement", "▁") for part in parts if part.get("type") == "Metaspace"), None)
    if marker is None and any(_replaces_metaspace(part) for part in parts):
        marker = "▁"
    byte_fallback = bool(model.get("byte_fallback"))

    def text(piece: str) -> str:
        if byte_fallback and (byte := _BYTE_FALLBACK.fullmatch(piece)):
            return _bytes_text(bytes([int(byte.group(1), 16)]))
        return piece.replace(marker, " ") if marker else piece

    return text


def special_roles(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """Role -> id of the special tokens: 'eos', 'bos', 'unk', 'pad' where set; every other special
    token under its own text."""
    roles = {role: token_id for role in SPECIAL_ROLES
             if (token_id := getattr(tokenizer, f"{role}_token_id", None)) is not None}
    for token_id, token in tokenizer.backend_tokenizer.get_added_tokens_decoder().items():
        if token.special and token_id not in roles.values():
            roles[token.content] = token_id
    return roles


def token_texts(tokenizer: PreTrainedTokenizerFast) -> list[str]:
    """Canonical text of every token, in id order (len(tokenizer) of them).

    Added and special tokens keep their literal text; an id without a token reads as ''.
    """
    backend = tokenizer.backend_tokenizer
    spec = json.loads(backend.to_str())
    piece_text = _piece_text(spec)
    literal = {token["id"] for token in spec.get("added_tokens", [])} | set(special_roles(tokenizer).values())
    texts = []
    for token_id in range(len(tokenizer)):
        piece = backend.id_to_token(token_id)
        if piece is None:
            texts.append("")
        else:
            texts.append(piece if token_id in literal else piece_text(piece))
    return texts


def _nearest(queries: Sequence[str], choices: Sequence[str]) -> np.ndarray:
    """Index into `choices` of each query's identical text, else of its least Levenshtein
    distance; ties go to the lowest index."""
    if queries and not choices:
        raise ValueError(f"cannot map {len(queries)} tokens onto an empty set of target tokens")
    first_index: dict[str, int] = {}
    for index, text in enumerate(choices):
        first_index.setdefault(text, index)
    nearest = np.array([first_index.get(text, -1) for text in queries], dtype=np.int64)
    unmatched = np.flatnonzero(nearest < 0)
    rows_per_call = max(1, _CDIST_CELLS // len(choices)) if choices else 1
    for start in range(0, unmatched.size, rows_per_call):
        rows = unmatched[start:start + rows_per_call]
        distances = process.cdist([queries[row] for row in rows], choices,
                                  scorer=Levenshtein.distance, dtype=np.int32, workers=-1)
        nearest[rows] = distances.argmin(axis=1)  # the first minimum: the lowest index
    return nearest


def _check_specials(specials: Mapping[str, int], size: int, side: str) -> None:
    for role, token_id in specials.items():
        if not 0 <= token_id < size:
            raise ValueError(f"{side} special {role!r} has id {token_id}, outside a vocabulary of {size}")


def _map_specials(source_specials: Mapping[str, int], target_specials: Mapping[str, int],
                  source_texts: Sequence[str], target_texts: Sequence[str]) -> dict[int, int]:
    """Source special id -> target special id: by a shared role, else by nearest text."""
    roles_of: dict[int, list[str]] = {}
    for role, token_id in source_specials.items():
        roles_of.setdefault(token_id, []).append(role)
    if roles_of and not target_specials:
        raise ValueError(f"the target has no special tokens for the source's {sorted(source_specials)}")
    priority = {role: rank for rank, role in enumerate(SPECIAL_ROLES)}
    target_ids = sorted(set(target_specials.values()))
    mapped = {}
    for source_id, roles in roles_of.items():
        shared = sorted((role for role in roles if role in target_specials), key=lambda role: priority.get(role, 99))
        if shared:
            mapped[source_id] = target_specials[shared[0]]
        else:
            nearest = _nearest([source_texts[source_id]], [target_texts[target_id] for target_id in target_ids])
            mapped[source_id] = target_ids[int(nearest[0])]
    return mapped


def build_vocab_map(source_texts: Sequence[str], target_texts: Sequence[str],
                    source_specials: Mapping[str, int], target_specials: Mapping[str, int]) -> np.ndarray:
    """Target id of every source token (int32, len(source_texts)), from canonical texts.

    Specials (role -> id, as from `special_roles`) map only onto specials: by a shared role, else
    by nearest text; other tokens only onto non-special tokens: identical text, else least
    Levenshtein distance, ties to the lowest target id.
    """
    _check_specials(source_specials, len(source_texts), "source")
    _check_specials(target_specials, len(target_texts), "target")
    mapping = np.empty(len(source_texts), dtype=np.int32)
    for source_id, target_id in _map_specials(source_specials, target_specials, source_texts, target_texts).items():
        mapping[source_id] = target_id
    target_special_ids = set(target_specials.values())
    plain_targets = np.array([token_id for token_id in range(len(target_texts)) if token_id not in target_special_ids],
                             dtype=np.int32)
    source_special_ids = set(source_specials.values())
    plain_sources = [token_id for token_id in range(len(source_texts)) if token_id not in source_special_ids]
    nearest = _nearest([source_texts[token_id] for token_id in plain_sources],
                       [target_texts[token_id] for token_id in plain_targets])
    mapping[plain_sources] = plain_targets[nearest]
    return mapping


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerFast) -> str:
    """sha256 hex of the backend tokenizer's JSON, without its padding and truncation settings
    (transformers rewrites those whenever it pads or truncates a batch)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec.pop("padding", None)
    spec.pop("truncation", None)
    return hashlib.sha256(json.dumps(spec, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass(frozen=True, eq=False)
class VocabMapping:
    """A vocabulary map and the fingerprints of the two tokenizers it joins."""

    source_fingerprint: str
    target_fingerprint: str
    ids: np.ndarray  # int32 [source vocabulary]: the target id of each source token

    @property
    def nbytes(self) -> int:
        """Bytes of the map itself: what sending it costs."""
        return int(self.ids.nbytes)


def _load_cached(path: Path, source_size: int, target_size: int) -> np.ndarray | None:
    """The cached map at `path`, or None when it is missing or not a valid map."""
    try:
        ids = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if ids.dtype != np.int32 or ids.shape != (source_size,):
        return None
    if ids.size and not 0 <= ids.min() <= ids.max() < target_size:
        return None
    return ids


def _save_atomically(path: Path, ids: np.ndarray) -> None:
    """Write `ids` to `path` through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as handle:
        temporary = Path(handle.name)
        try:
            np.save(handle, ids)
        except BaseException:
            temporary.unlink()
            raise
    os.replace(temporary, path)


def vocab_mapping(source_tokenizer: PreTrainedTokenizerFast, target_tokenizer: PreTrainedTokenizerFast,
                  cache_dir: Path | None = None) -> VocabMapping:
    """The source -> target vocabulary map, cached as
    `<cache_dir>/vocab-map-<source fingerprint[:16]>-<target fingerprint[:16]>.npy`."""
    source_fingerprint = tokenizer_fingerprint(source_tokenizer)
    target_fingerprint = tokenizer_fingerprint(target_tokenizer)
    path = None if cache_dir is None else (
        Path(cache_dir) / f"vocab-map-{source_fingerprint[:16]}-{target_fingerprint[:16]}.npy")
    ids = None if path is None else _load_cached(path, len(source_tokenizer), len(target_tokenizer))
    if ids is None:
        ids = build_vocab_map(token_texts(source_tokenizer), token_texts(target_tokenizer),
                              special_roles(source_tokenizer), special_roles(target_tokenizer))
        if path is not None:
            _save_atomically(path, ids)
    return VocabMapping(source_fingerprint, target_fingerprint, ids)


def vocab_map(source_tokenizer: PreTrainedTokenizerFast, target_tokenizer: PreTrainedTokenizerFast,
              cache_dir: Path | None = None) -> np.ndarray:
    """The ids of `vocab_mapping(source_tokenizer, target_tokenizer, cache_dir)`."""
    return vocab_mapping(source_tokenizer, target_tokenizer, cache_dir).ids
