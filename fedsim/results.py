"""Run folders: per-round rows (JSONL and parquet), summaries, the comparison table and plots.

Layout: runs/<run>/config.yaml, and per algorithm runs/<run>/<algorithm>/{rows.jsonl, rows.parquet,
summary.json, checkpoint.pkl}. Every write is atomic (temporary file, then rename).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

import pandas as pd

ROWS_JSONL = "rows.jsonl"
ROWS_PARQUET = "rows.parquet"
SUMMARY_JSON = "summary.json"
TEMPORARY_SUFFIX = ".tmp"


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write a file so that readers see either the old or the new content, never half of it:
    `write` fills `<name>.tmp`, which is flushed to disk (fsync) and then renamed over `path`."""
    temporary = path.with_name(path.name + TEMPORARY_SUFFIX)
    with open(temporary, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (see atomic_write)."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def remove_temporaries(directory: Path) -> list[Path]:
    """Delete the `.tmp` files an interrupted write left anywhere under `directory`; returns them."""
    leftovers = sorted(Path(directory).rglob("*" + TEMPORARY_SUFFIX))
    for path in leftovers:
        path.unlink()
    return leftovers


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
    """Final figures of one algorithm's run: those of its last evaluated row; `start_accuracy` is row
    0's (the starting model, before any training), which `best_accuracy` leaves out."""
    evaluated = [row for row in rows if row.get("accuracy") is not None]
    trained = [row for row in evaluated if row["round"] > 0]
    start_row = next((row for row in evaluated if row["round"] == 0), None)
    last = rows[-1]
    modes = sorted(key.split("/", 1)[1] for key in (evaluated[-1] if evaluated else {}) if key.startswith("accuracy/"))
    return {
        "algorithm": last["algorithm"],
        "rounds": last["round"],
        "accuracy": evaluated[-1]["accuracy"] if evaluated else None,
        "accuracy_by_mode": {mode: evaluated[-1][f"accuracy/{mode}"] for mode in modes},
        "start_accuracy": start_row["accuracy"] if start_row else None,
        "start_accuracy_by_mode": {mode: start_row.get(f"accuracy/{mode}") for mode in modes} if start_row else {},
        "best_accuracy": max(row["accuracy"] for row in trained) if trained else None,
        "bytes_up": last["bytes_up_total"],
        "bytes_down": last["bytes_down_total"],
        "wall_s": sum(row["wall_s"] for row in rows),
        "sim_time_s": last["sim_time_s"],
    }


def finalize(run_dir: Path, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write parquet rows and the summary JSON of one algorithm's run."""
    summary = summarize(rows) | (extra or {})
    frame = pd.DataFrame(rows)
    atomic_write(run_dir / ROWS_PARQUET, lambda handle: frame.to_parquet(handle, index=False))
    atomic_write_text(run_dir / SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")
    return summary


def _human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def format_table(summaries: list[dict[str, Any]]) -> str:
    """The comparison table printed at the end of a run and by `fedsim report`: each accuracy next to
    the round-0 accuracy of the same starting model ("-" when round 0 was not evaluated)."""
    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    # With several decoding modes evaluated, one pair of accuracy columns per mode.
    modes = sorted({mode for s in summaries for mode in s.get("accuracy_by_mode", {})})
    suffixes = tuple(f" ({mode})" for mode in modes) if len(modes) > 1 else ("",)
    accuracy_columns = tuple(f"{name}{suffix}" for suffix in suffixes for name in ("round 0", "accuracy"))
    header = ("algorithm", "rounds", *accuracy_columns, "bytes up", "bytes down", "wall s", "simulated s")
    lines = [header]
    for s in summaries:
        if len(modes) > 1:
            starts = s.get("start_accuracy_by_mode", {})
            pairs = [(starts.get(mode), s["accuracy_by_mode"].get(mode)) for mode in modes]
        else:
            pairs = [(s.get("start_accuracy"), s["accuracy"])]
        accuracies = tuple(percent(value) for pair in pairs for value in pair)
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


MODE_TITLES = {"answer": "answer directly", "rationale": "rationale first"}
PLOT_FILES = ("accuracy_vs_round.png", "accuracy_vs_bytes.png")


def _panels(frames: dict[str, pd.DataFrame]) -> list[tuple[str, str]]:
    """(accuracy column, panel title): one panel per decoding mode the rows hold."""
    modes = sorted({c.split("/", 1)[1] for f in frames.values() for c in f.columns if c.startswith("accuracy/")})
    if len(modes) > 1:
        return [(f"accuracy/{mode}", f"decoding: {MODE_TITLES.get(mode, mode)}") for mode in modes]
    return [("accuracy", f"decoding: {MODE_TITLES.get(modes[0], modes[0])}" if modes else "")]


def _starting_accuracy(frame: pd.DataFrame, column: str) -> float | None:
    start = frame[(frame["round"] == 0) & frame[column].notna()]
    return None if start.empty else float(start[column].iloc[0])


def _draw_panel(axis: Any, frames: dict[str, pd.DataFrame], column: str, by_round: bool) -> None:
    """One panel: each algorithm's accuracy `column` against round or cumulative bytes."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    started = False
    for index, (algorithm, frame) in enumerate(frames.items()):
        frame = frame[frame[column].notna()] if column in frame else frame.iloc[0:0]
        if frame.empty:
            continue
        colour, accuracy = f"C{index}", 100 * frame[column]
        start = _starting_accuracy(frame, column)
        if start is not None:
            axis.axhline(100 * start, color=colour, linestyle="--", linewidth=1, alpha=0.8)
            started = True
        if by_round:
            axis.plot(frame["round"], accuracy, marker="o", color=colour, label=algorithm)
            continue
        total = frame["bytes_up_total"] + frame["bytes_down_total"]
        sent = total > 0
        if sent.any():
            axis.plot(total[sent], accuracy[sent], marker="o", color=colour, label=algorithm)
        else:
            axis.axhline(accuracy.iloc[-1], color=colour, linestyle=":", linewidth=2,
                         label=f"{algorithm} (sends nothing): final")
    if by_round:
        axis.set_xlabel("round")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    elif any(line.get_marker() == "o" for line in axis.get_lines()):
        axis.set_xscale("log")
        low, high = axis.get_xlim()
        narrow = high / low < 100  # under two decades: label 1, 2 and 5 of each decade
        axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5) if narrow else (1,)))
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _human_bytes(value)))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("bytes up + down, cumulative (log scale)")
    else:
        axis.set_xticks([])
        axis.set_xlabel("bytes up + down: no algorithm sent any")
    axis.grid(alpha=0.3)
    handles, _ = axis.get_legend_handles_labels()
    if started:
        handles.append(Line2D([], [], color="grey", linestyle="--", linewidth=1, label="round 0: before any training"))
    if handles:
        axis.legend(handles=handles, fontsize="small")


def accuracy_figures(frames: dict[str, pd.DataFrame], title: str = "") -> dict[str, Any]:
    """Matplotlib figures (by file name) of accuracy against round and against cumulative bytes (up
    + down), one line per algorithm and one panel per decoding mode; each algorithm's round-0
    accuracy (its untrained starting model) is a dashed line of its colour. The bytes axis is
    logarithmic, so each algorithm's line starts at its first round (round 0 has sent nothing); an
    algorithm that sends nothing at all is a dotted line at its final accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(frames)
    figures = {}
    for name in PLOT_FILES:
        figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), sharey=True, squeeze=False)
        for axis, (column, panel_title) in zip(axes[0], panels):
            _draw_panel(axis, frames, column, by_round=name == "accuracy_vs_round.png")
            axis.set_title(panel_title)
        axes[0][0].set_ylabel("mean client accuracy (%)")
        if title:
            figure.suptitle(title)
        figure.tight_layout()
        figures[name] = figure
    return figures


def write_plots(run_dir: Path) -> list[Path]:
    """Write the run's accuracy figures (accuracy_figures) as PNG files in the run folder."""
    frames = {d.name: read_rows(d) for d in algorithm_dirs(run_dir)}
    figures = accuracy_figures(frames, Path(run_dir).name)
    import matplotlib.pyplot as plt

    written = []
    for name, figure in figures.items():
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
