"""Smoke test of the DP-SGD accuracy table at a tiny budget."""
import json
import math


def test_one_row_per_epsilon_with_the_ledgers_epsilon(ray_session, run_bench, tmp_path):
    out = tmp_path / "result.json"
    tiny = ["rounds=1", "clients.num=4", "clients.per_round=2", "task.train_per_client=8", "task.test_size=4",
            "train.local_steps=2", "eval.max_clients=2", "eval.client_test_size=2", "engine.num_workers=1"]
    run_bench("dpsgd_table", ["--eps", "inf", "4", "--output-dir", str(tmp_path / "runs"), "--out", str(out),
                              *[arg for item in tiny for arg in ("--set", item)]])
    rows = json.loads(out.read_text())["rows"]
    assert [row["target_eps"] for row in rows] == [math.inf, 4.0]
    assert rows[0]["eps_spent_max"] is None and rows[0]["noise_multiplier"] is None
    assert 0 < rows[1]["eps_spent_max"] <= 4.0 + 1e-6 and rows[1]["noise_multiplier"] > 0
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in rows)
