"""Smoke test of the FedCoT benchmark script at a tiny budget, with a teacher of a few steps."""
import json
import math

from fedsim.pretrain import PretrainSettings, pretrain


def test_rows_teacher_and_ledger_figures(run_bench, tmp_path, capsys):
    teacher = tmp_path / "teacher"
    pretrain(teacher, PretrainSettings(preset="llama-0.3m", arithmetic_steps=2, steps=2, test_size=2), threads=1)
    out = tmp_path / "result.json"
    run_bench("fedcot_table", [
        "--teacher", str(teacher), "--clients", "2", "--train-per-client", "6",
        "--rounds", "1", "--local-steps", "1", "--test-size", "3", "--eval-clients", "1", "--eps", "inf", "4",
        "--decoder-model", "llama-0.3m", "--decoder-public", "4", "--decoder-steps", "1",
        "--alpha-rows", "0.5", "--scale-clients", "0", "--out", str(out)])
    stdout = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = {row["name"]: row for row in result["rows"]}
    fedcot = [f"{prefix}, recover {recover}" for prefix in ("FedCoT eps inf (clean)", "FedCoT-EM eps 4")
              for recover in ("none", "decoder", "oracle (oracle)")]
    assert list(rows) == ["student before training", "local, answer-only", "local, gold rationales (upper bound)",
                          "teacher itself", *fedcot, "FedCoT eps inf, alpha 0.5, recover none"]
    for row in rows.values():
        assert 0.0 <= row["accuracy_answer"] <= 1.0 and 0.0 <= row["accuracy_rationale"] <= 1.0
    for name in ("student before training", "local, answer-only", "local, gold rationales (upper bound)"):
        assert rows[name]["bytes_up"] == 0 and rows[name]["llm_requests"] == 0
    for name in fedcot:
        decoder = "recover decoder" in name
        assert rows[name]["bytes_up"] > 0 and rows[name]["bytes_down"] > 0
        assert rows[name]["llm_requests"] == 2 + decoder  # one per client, and the server's for the decoder
        assert (rows[name]["bytes_down_decoder"] > 0) == decoder
    assert math.isinf(rows["FedCoT eps inf (clean), recover none"]["eps_client_max"])
    assert 4.0 <= rows["FedCoT-EM eps 4, recover decoder"]["eps_client_max"] < math.inf
    assert [(entry["mechanism"], entry["eps"]) for entry in result["teacher"]] == [("em", math.inf), ("em", 4.0)]
    assert all(0.0 <= entry[key] <= 1.0 for entry in result["teacher"]
               for key in ("raw", "decoder", "decoder_no_reply", "oracle"))
    assert result["setup"]["recover"] == ["none", "decoder", "oracle"] and "scale" not in result
    assert "(oracle)" in stdout
