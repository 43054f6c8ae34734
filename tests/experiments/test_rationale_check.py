"""Smoke test of the rationale benchmark script at a tiny budget."""
import json


def test_runs_and_writes_one_row_per_student(run_bench, tmp_path, capsys):
    out = tmp_path / "result.json"
    run_bench("rationale_check", ["--steps", "2", "--n-train", "8", "--n-test", "4", "--methods", "full", "lora",
                                  "--out", str(out), "--base-steps", "2", "--base-dir", str(tmp_path / "base")])
    assert "rationale - answer" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [(row["method"], row["target"]) for row in result["rows"]] == [
        ("full", "answer"), ("full", "rationale"), ("lora", "answer"), ("lora", "rationale")]
    for row in result["rows"]:
        assert 0.0 <= row["exact_match"] <= 1.0 and row["train_seconds"] > 0
    assert result["rows"][2]["trained_params"] < result["rows"][0]["trained_params"]
    assert set(result["gap_points"]) == {"full", "lora"} and result["torch_threads"] == 1
    assert result["base_report"]["settings"] == {**result["base_report"]["settings"], "arithmetic_steps": 2, "steps": 0}
