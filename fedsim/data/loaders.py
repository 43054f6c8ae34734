"""Read and write task examples as JSONL or Parquet files.

Each record has `question` and `answer` (strings; numbers are accepted and turned into
strings) and optionally `rationale` (string), `choices` (list of strings) and `domain`
(string). A malformed record raises DataFileError naming the file, the record (1-based line
for JSONL, 0-based row index for Parquet) and the field.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fedsim.data.task import Example
from fedsim.errors import FedsimError

SUFFIXES = (".jsonl", ".parquet")
_KNOWN_FIELDS = ("question", "answer", "rationale", "choices", "domain")


class DataFileError(FedsimError, ValueError):
    """A data file is missing, of an unknown kind, or holds a malformed record."""


def load_examples(path: str | Path) -> list[Example]:
    """Load every record of a .jsonl or .parquet file as an Example."""
    path = Path(path)
    suffix = _checked_suffix(path)
    if not path.is_file():
        raise DataFileError(f"{path}: data file not found")
    if suffix == ".jsonl":
        return _load_jsonl(path)
    return _load_parquet(path)


def save_examples(examples: Iterable[Example], path: str | Path) -> None:
    """Write examples to a .jsonl or .parquet file (chosen by suffix), creating parent folders."""
    path = Path(path)
    suffix = _checked_suffix(path)
    records = [_to_record(example) for example in examples]
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    schema = pa.schema([
        ("question", pa.string()), ("answer", pa.string()), ("rationale", pa.string()),
        ("choices", pa.list_(pa.string())), ("domain", pa.string()),
    ])
    pq.write_table(pa.Table.from_pylist(records, schema=schema), path)


def _checked_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataFileError(f"{path}: unsupported data file suffix {path.suffix!r}; use one of {SUFFIXES}")
    return suffix


def _to_record(example: Example) -> dict[str, Any]:
    return {
        "question": example.question,
        "answer": example.answer,
        "rationale": example.rationale,
        "choices": list(example.choices) if example.choices is not None else None,
        "domain": example.domain,
    }


def _load_jsonl(path: Path) -> list[Example]:
    examples = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFileError(f"{where}: invalid JSON ({error.msg})") from None
            examples.append(_parse_record(record, where))
    return examples


def _load_parquet(path: Path) -> list[Example]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise DataFileError(f"{path}: not a readable Parquet file ({error})") from None
    present = [name for name in _KNOWN_FIELDS if name in table.column_names]
    return [
        _parse_record(record, f"{path}, row {row_index}")
        for row_index, record in enumerate(table.select(present).to_pylist())
    ]


def _parse_record(record: Any, where: str) -> Example:
    if not isinstance(record, Mapping):
        raise DataFileError(f"{where}: expected an object with fields, got {type(record).__name__}")
    question = _text_field(record, "question", where, required=True)
    answer = _text_field(record, "answer", where, required=True)
    rationale = _text_field(record, "rationale", where, required=False)
    domain = _text_field(record, "domain", where, required=False)
    return Example(
        question=question,
        answer=answer,
        rationale=rationale,
        domain=domain if domain is not None else "general",
        choices=_choices_field(record, where),
    )


def _text_field(record: Mapping[str, Any], name: str, where: str, required: bool) -> str | None:
    value = record.get(name)
    if value is None:
        if required:
            raise DataFileError(f"{where}: field {name!r} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataFileError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise DataFileError(f"{where}: field {name!r} must be a string, got the number {value}")
    text = value if isinstance(value, str) else _number_text(value)
    if required and not text.strip():
        raise DataFileError(f"{where}: field {name!r} is empty")
    return text


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _choices_field(record: Mapping[str, Any], where: str) -> tuple[str, ...] | None:
    value = record.get("choices")
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise DataFileError(f"{where}: field 'choices' must be a list of strings, got {type(value).__name__}")
    for position, choice in enumerate(value):
        if not isinstance(choice, str):
            raise DataFileError(
                f"{where}: field 'choices' item {position} must be a string, got {type(choice).__name__}"
            )
    return tuple(value)
