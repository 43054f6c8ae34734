"""Smoke test of the FedCoT benchmark script at a tiny budget, with a teacher of a few steps."""
import json
import math
import subprocess
import sys
from pathlib import Path

from fedsim.pretrain import PretrainSettings, pretrain

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "bench" / "fedcot_table.py"


def test_rows_teacher_and_ledger_figures(tmp_path):
    teacher = tmp_path / "teacher"
    pretrain(teacher, PretrainSettings(preset="llama-0.3m", arithmetic_steps=2, steps=2, test_size=2))
    out = tmp_path / "result.json"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--teacher", str(teacher), "--clients", "2", "--train-per-client", "6",
         "--rounds", "1", "--local-steps", "1", "--test-size", "3", "--eval-clients", "1", "--eps", "inf", "4",
         "--alpha-rows", "0.5", "--scale-clients", "0", "--recover", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["student before training", "local, answer-only", "local, gold rationales",
                          "FedCoT eps inf (clean)", "FedCoT-EM eps 4", "FedCoT-AEM eps 4", "FedCoT eps inf, alpha 0.5"]
    for row in rows.values():
        assert 0.0 <= row["accuracy_answer"] <= 1.0 and 0.0 <= row["accuracy_rationale"] <= 1.0
    for name in ("student before training", "local, answer-only", "local, gold rationales"):
        assert rows[name]["bytes_up"] == 0 and rows[name]["llm_requests"] == 0
    for name in ("FedCoT eps inf (clean)", "FedCoT-EM eps 4", "FedCoT-AEM eps 4"):
        assert rows[name]["bytes_up"] > 0 and rows[name]["bytes_down"] > 0 and rows[name]["llm_requests"] == 2
    assert math.isinf(rows["FedCoT eps inf (clean)"]["eps_client_max"])
    assert 4.0 <= rows["FedCoT-EM eps 4"]["eps_client_max"] < math.inf
    assert [entry["eps"] for entry in result["teacher"]] == [math.inf, 4.0]
    assert result["setup"]["recover"] is True and "scale" not in result
