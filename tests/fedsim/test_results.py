"""Run folders: rows, summaries, the table, plots and `fedsim report`."""
import json

import pandas as pd
import yaml

from fedsim.cli import main
from fedsim.results import finalize, format_table, load_summaries, write_plots, write_rows


def make_run(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"algorithms": ["local", "fedavg_lora"]}))
    for name, acc in (("local", 0.2), ("fedavg_lora", 0.5)):
        rows = [{"round": r, "algorithm": name, "accuracy": acc * r / 2 if r % 2 == 0 else None, "loss": 1.0,
                 "bytes_up_total": 1000 * r, "bytes_down_total": 2000 * r, "wall_s": 1.5, "sim_time_s": 10.0 * r}
                for r in (1, 2)]
        (tmp_path / name).mkdir()
        write_rows(tmp_path / name, rows)
        if name == "local":
            finalize(tmp_path / name, rows)
    return tmp_path


def test_summaries_table_and_plots(tmp_path):
    run = make_run(tmp_path)
    summaries = load_summaries(run)
    assert [s["algorithm"] for s in summaries] == ["local", "fedavg_lora"]
    assert summaries[1]["accuracy"] == 0.5 and summaries[1]["bytes_down"] == 4000 and summaries[1]["wall_s"] == 3.0
    table = format_table(summaries)
    assert "fedavg_lora" in table and "50.0%" in table and "4.0 KB" in table
    assert pd.read_parquet(run / "local" / "rows.parquet")["round"].tolist() == [1, 2]
    assert json.loads((run / "local" / "summary.json").read_text())["accuracy"] == 0.2
    paths = write_plots(run)
    assert all(path.is_file() and path.stat().st_size > 1000 for path in paths)


def test_report_command(tmp_path, capsys):
    run = make_run(tmp_path)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "fedavg_lora" in out and "accuracy_vs_bytes.png" in out
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_one_accuracy_column_per_decoding_mode(tmp_path):
    rows = [{"round": 1, "algorithm": "fedcot", "accuracy": 0.1, "accuracy/answer": 0.1, "accuracy/rationale": 0.3,
             "loss": 1.0, "bytes_up_total": 10, "bytes_down_total": 20, "wall_s": 1.0, "sim_time_s": 2.0}]
    write_rows(tmp_path, rows)
    summary = finalize(tmp_path, rows)
    assert summary["accuracy_by_mode"] == {"answer": 0.1, "rationale": 0.3}
    header, _, line = format_table([summary]).splitlines()
    assert "accuracy (answer)" in header and "accuracy (rationale)" in header
    assert "10.0%" in line and "30.0%" in line
