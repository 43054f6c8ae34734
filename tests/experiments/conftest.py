"""Run a benchmark script of experiments/bench in this process, as `python <script> <args>` would.

In-process, a script costs no new Python start, imports or Ray start (a script that runs on Ray
joins this session's one Ray instance). Its output is read with capsys; an error in it is raised here.
"""
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "experiments" / "bench"


@pytest.fixture
def run_bench(monkeypatch):
    """run_bench("dpsgd_table", [...]) runs experiments/bench/dpsgd_table.py's main() with those arguments."""
    def run(name: str, args: list[str]) -> None:
        path = BENCH / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        monkeypatch.setattr(sys, "argv", [str(path), *args])
        module.main()

    return run
