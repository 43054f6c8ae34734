"""Smoke test of the rationale benchmark script at a tiny budget."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "bench" / "rationale_check.py"


def test_runs_and_writes_one_row_per_student(tmp_path):
    out = tmp_path / "result.json"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "2", "--n-train", "8", "--n-test", "4",
         "--methods", "full", "lora", "--out", str(out), "--base-steps", "2", "--base-dir", str(tmp_path / "base")],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert "rationale - answer" in completed.stdout
    result = json.loads(out.read_text())
    assert [(row["method"], row["target"]) for row in result["rows"]] == [
        ("full", "answer"), ("full", "rationale"), ("lora", "answer"), ("lora", "rationale")]
    for row in result["rows"]:
        assert 0.0 <= row["exact_match"] <= 1.0 and row["train_seconds"] > 0
    assert result["rows"][2]["trained_params"] < result["rows"][0]["trained_params"]
    assert set(result["gap_points"]) == {"full", "lora"}
    assert result["base_report"]["settings"] == {**result["base_report"]["settings"], "arithmetic_steps": 2, "steps": 0}
