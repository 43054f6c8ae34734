"""Tests of the JSONL / Parquet example loaders."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedsim.data.loaders import DataFileError, load_examples, save_examples
from fedsim.data.task import Example, generate_examples


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_round_trip(tmp_path, suffix):
    examples = generate_examples(5, seed=0) + [
        Example("Which is red?", "b", choices=("sky", "apple")),
        Example("2 + 2?", "4"),
    ]
    path = tmp_path / "sub" / f"data{suffix}"
    save_examples(examples, path)
    assert load_examples(path) == examples


def _write_jsonl(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")


def test_numbers_are_coerced_and_blank_lines_skipped(tmp_path):
    path = tmp_path / "d.jsonl"
    _write_jsonl(path, [{"question": "q", "answer": 7}, "", {"question": "r", "answer": 2.0, "domain": "x"}])
    assert load_examples(path) == [Example("q", "7"), Example("r", "2", domain="x")]


@pytest.mark.parametrize("bad_record, field", [
    ({"answer": "1"}, "question"),
    ({"question": "q"}, "answer"),
    ({"question": "q", "answer": ["1"]}, "answer"),
    ({"question": "q", "answer": "1", "choices": "a,b"}, "choices"),
    ({"question": "q", "answer": "1", "choices": ["a", 2]}, "choices"),
    ({"question": "q", "answer": "1", "rationale": {"x": 1}}, "rationale"),
    ({"question": "", "answer": "1"}, "question"),
])
def test_malformed_jsonl_names_file_line_and_field(tmp_path, bad_record, field):
    path = tmp_path / "bad.jsonl"
    _write_jsonl(path, [{"question": "ok", "answer": "1"}, bad_record])
    with pytest.raises(DataFileError) as error:
        load_examples(path)
    message = str(error.value)
    assert str(path) in message and "line 2" in message and repr(field) in message


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    _write_jsonl(path, [{"question": "ok", "answer": "1"}, "{not json"])
    with pytest.raises(DataFileError, match="line 2: invalid JSON"):
        load_examples(path)


def test_malformed_parquet_names_row_and_field(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"question": ["a", None, "c"], "answer": [1, 2, 3]}), path)
    with pytest.raises(DataFileError, match=r"bad\.parquet, row 1: field 'question' is missing"):
        load_examples(path)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataFileError, match="not found"):
        load_examples(tmp_path / "none.jsonl")
    with pytest.raises(DataFileError, match="unsupported data file suffix '.csv'"):
        load_examples(tmp_path / "data.csv")
    with pytest.raises(DataFileError, match="unsupported"):
        save_examples([], tmp_path / "data.txt")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet")
    with pytest.raises(DataFileError, match="not a readable Parquet file"):
        load_examples(garbage)
