"""Run folders: rows, summaries, the table, plots and `fedsim report`."""
import json

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import yaml

from fedsim.cli import main
from fedsim.results import accuracy_figures, finalize, format_table, load_summaries, write_plots, write_rows


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
    start = {"round": 0, "algorithm": "fedcot", "accuracy": 0.05, "accuracy/answer": 0.05, "accuracy/rationale": 0.25,
             "bytes_up_total": 0, "bytes_down_total": 0, "wall_s": 0.5, "sim_time_s": 0.0}
    rows = [start, {"round": 1, "algorithm": "fedcot", "accuracy": 0.1, "accuracy/answer": 0.1, "accuracy/rationale": 0.3,
                    "loss": 1.0, "bytes_up_total": 10, "bytes_down_total": 20, "wall_s": 1.0, "sim_time_s": 2.0}]
    write_rows(tmp_path, rows)
    summary = finalize(tmp_path, rows)
    assert summary["accuracy_by_mode"] == {"answer": 0.1, "rationale": 0.3}
    assert summary["start_accuracy_by_mode"] == {"answer": 0.05, "rationale": 0.25}
    header, _, line = format_table([summary]).splitlines()
    assert header.split()[:10] == ["algorithm", "rounds", "round", "0", "(answer)", "accuracy", "(answer)",
                                   "round", "0", "(rationale)"]
    assert line.split()[2:6] == ["5.0%", "10.0%", "25.0%", "30.0%"]


def test_round_zero_column_is_a_dash_without_a_round_zero_row(tmp_path):
    rows = [{"round": 1, "algorithm": "local", "accuracy": 0.4, "loss": 1.0, "bytes_up_total": 0,
             "bytes_down_total": 0, "wall_s": 1.0, "sim_time_s": 2.0}]
    header, _, line = format_table([finalize(tmp_path, rows)]).splitlines()
    assert header.split()[2:5] == ["round", "0", "accuracy"] and line.split()[2:4] == ["-", "40.0%"]


def two_mode_rows(name, sends):
    return pd.DataFrame([{"round": r, "algorithm": name, "accuracy": 0.1 * (r + 1), "accuracy/answer": 0.1 * (r + 1),
                          "accuracy/rationale": 0.2 + 0.1 * r, "bytes_up_total": sends * r, "bytes_down_total": sends * r}
                         for r in range(4)])


def test_plots_start_at_round_zero_one_panel_per_decoding_mode_bytes_on_a_log_axis():
    figures = accuracy_figures({"local": two_mode_rows("local", 0), "fedavg_lora": two_mode_rows("fedavg_lora", 5000)})
    by_round, by_bytes = figures["accuracy_vs_round.png"], figures["accuracy_vs_bytes.png"]
    assert [a.get_title() for a in by_round.axes] == ["decoding: answer directly", "decoding: rationale first"]
    rationale = by_round.axes[1]
    curves = {line.get_label(): line for line in rationale.get_lines()}
    assert list(curves["fedavg_lora"].get_xdata()) == [0, 1, 2, 3]
    assert list(curves["fedavg_lora"].get_ydata()) == pytest.approx([20, 30, 40, 50])
    starts = [line for line in rationale.get_lines() if line.get_linestyle() == "--"]
    assert len(starts) == 2 and all(list(line.get_ydata()) == pytest.approx([20, 20]) for line in starts)
    ticks = [t for t in rationale.get_xticks() if 0 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)
    answer = by_bytes.axes[0]
    assert answer.get_xscale() == "log"
    lines = {line.get_label(): line for line in answer.get_lines()}
    assert list(lines["fedavg_lora"].get_xdata()) == [10000, 20000, 30000]  # round 0 sent nothing: not on a log axis
    assert lines["local (sends nothing): final"].get_linestyle() == ":"
    assert list(lines["local (sends nothing): final"].get_ydata()) == pytest.approx([40, 40])
    for figure in figures.values():
        plt.close(figure)


def test_summary_keeps_the_final_round_and_reports_round_zero_apart(tmp_path):
    rows = [{"round": r, "algorithm": "local", "accuracy": a, "loss": None if r == 0 else 1.0, "bytes_up_total": 0,
             "bytes_down_total": 0, "wall_s": 1.0, "sim_time_s": float(r)} for r, a in ((0, 0.6), (1, 0.2), (2, 0.3))]
    summary = finalize(tmp_path, rows)
    assert (summary["rounds"], summary["accuracy"], summary["best_accuracy"], summary["start_accuracy"]) == (2, 0.3, 0.3, 0.6)
