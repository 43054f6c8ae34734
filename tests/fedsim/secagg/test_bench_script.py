"""experiments/bench/secagg.py runs and its measured and predicted bytes agree (tiny grid)."""
import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "experiments" / "bench" / "secagg.py"


def test_bench_rows_agree(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_secagg", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "secagg.json"
    bench.main(["--clients", "6", "--params", "64", "--graph", "complete", "log", "--dropout", "0.34",
                "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 and all(row["bytes_agree"] and row["sums_agree"] for row in rows)
    assert all(row["dropped"] == 2 and row["up_bytes_per_client"] > 0 for row in rows)
    assert "wrote" in capsys.readouterr().out
