"""Run folders: per-round rows (JSONL and parquet), summaries, the comparison table and plots.

Layout: runs/<run>/config.yaml, and per algorithm runs/<run>/<algorithm>/{rows.jsonl, rows.parquet,
summary.json, checkpoint.pkl}. Every write is atomic (temporary file, then rename).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

ROWS_JSONL = "rows.jsonl"
ROWS_PARQUET = "rows.parquet"
SUMMARY_JSON = "summary.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see either the old or the new content, never half of it."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite a JSONL file atomically."""
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def write_rows(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the JSONL rows of one algorithm's run."""
    write_jsonl(run_dir / ROWS_JSONL, rows)


def read_rows(run_dir: Path) -> pd.DataFrame:
    """The per-round rows of one algorithm's run as a DataFrame."""
    path = Path(run_dir) / ROWS_JSONL
    if not path.is_file():
        raise FileNotFoundError(f"no {ROWS_JSONL} in {run_dir}")
    return pd.read_json(path, lines=True)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Final figures of one algorithm's run."""
    evaluated = [row for row in rows if row.get("accuracy") is not None]
    last = rows[-1]
    modes = sorted(key.split("/", 1)[1] for key in (evaluated[-1] if evaluated else {}) if key.startswith("accuracy/"))
    return {
        "algorithm": last["algorithm"],
        "rounds": last["round"],
        "accuracy": evaluated[-1]["accuracy"] if evaluated else None,
        "accuracy_by_mode": {mode: evaluated[-1][f"accuracy/{mode}"] for mode in modes},
        "best_accuracy": max(row["accuracy"] for row in evaluated) if evaluated else None,
        "bytes_up": last["bytes_up_total"],
        "bytes_down": last["bytes_down_total"],
        "wall_s": sum(row["wall_s"] for row in rows),
        "sim_time_s": last["sim_time_s"],
    }


def finalize(run_dir: Path, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write parquet rows and the summary JSON of one algorithm's run."""
    summary = summarize(rows) | (extra or {})
    frame = pd.DataFrame(rows)
    temporary = run_dir / (ROWS_PARQUET + ".tmp")
    frame.to_parquet(temporary, index=False)
    os.replace(temporary, run_dir / ROWS_PARQUET)
    atomic_write_text(run_dir / SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")
    return summary


def _human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def format_table(summaries: list[dict[str, Any]]) -> str:
    """The comparison table printed at the end of a run and by `fedsim report`."""
    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    # With several decoding modes evaluated, one accuracy column per mode.
    modes = sorted({mode for s in summaries for mode in s.get("accuracy_by_mode", {})})
    accuracy_columns = tuple(f"accuracy ({mode})" for mode in modes) if len(modes) > 1 else ("accuracy",)
    header = ("algorithm", "rounds", *accuracy_columns, "bytes up", "bytes down", "wall s", "simulated s")
    lines = [header]
    for s in summaries:
        if len(modes) > 1:
            accuracies = tuple(percent(s["accuracy_by_mode"].get(mode)) for mode in modes)
        else:
            accuracies = (percent(s["accuracy"]),)
        lines.append((s["algorithm"], str(s["rounds"]), *accuracies, _human_bytes(s["bytes_up"]),
                      _human_bytes(s["bytes_down"]), f"{s['wall_s']:.1f}", f"{s['sim_time_s']:.1f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in lines]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(rendered)


def algorithm_dirs(run_dir: Path) -> list[Path]:
    """The per-algorithm folders of a run, in the order the config lists them."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a fedsim run folder (no config.yaml)")
    import yaml

    names = yaml.safe_load(config_path.read_text())["algorithms"]
    return [run_dir / name for name in names if (run_dir / name / ROWS_JSONL).is_file()]


def write_plots(run_dir: Path) -> list[Path]:
    """PNG plots of accuracy against round and against total bytes, one line per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = {d.name: read_rows(d) for d in algorithm_dirs(run_dir)}
    written = []
    for x_key, x_label, name in (("round", "round", "accuracy_vs_round.png"),
                                 ("bytes_total", "bytes up + down (MB)", "accuracy_vs_bytes.png")):
        figure, axis = plt.subplots(figsize=(6, 4))
        for algorithm, frame in frames.items():
            frame = frame[frame["accuracy"].notna()]
            if frame.empty:
                continue
            x = frame["round"] if x_key == "round" else (frame["bytes_up_total"] + frame["bytes_down_total"]) / 1e6
            axis.plot(x, 100 * frame["accuracy"], marker="o", label=algorithm)
        axis.set_xlabel(x_label)
        axis.set_ylabel("mean client accuracy (%)")
        axis.grid(alpha=0.3)
        axis.legend()
        figure.tight_layout()
        path = Path(run_dir) / name
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def load_summaries(run_dir: Path) -> list[dict[str, Any]]:
    """Summaries of a run's algorithms (from summary.json, or from the rows of an unfinished one)."""
    summaries = []
    for directory in algorithm_dirs(run_dir):
        path = directory / SUMMARY_JSON
        if path.is_file():
            summaries.append(json.loads(path.read_text()))
        else:
            rows = read_rows(directory).to_dict("records")
            summaries.append(summarize([{k: (None if isinstance(v, float) and math.isnan(v) else v)
                                         for k, v in row.items()} for row in rows]))
    return summaries
