"""`make demo`: the quickstart and the FedCoT experiment end to end, on one local Ray.

Runs experiments/quickstart.yaml (local, FedAvg-LoRA and centralized on the shipped pretrained base)
and experiments/fedcot.yaml (FedCoT with the shipped teacher llama-1m-teacher as the server LLM), prints
each run's table, and ends with the run folders and the plot files to open.

    python experiments/demo.py [--output-dir runs]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from actors.runner import print_summary, run_experiment
from fedsim.config import load_config
from fedsim.errors import FedsimError
from fedsim.results import write_plots

EXPERIMENTS = Path(__file__).resolve().parent
DEMO_FILES = [EXPERIMENTS / "quickstart.yaml", EXPERIMENTS / "fedcot.yaml"]


def run_demo() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="runs", help="where the run folders go (default runs)")
    args = parser.parse_args()
    configs = [load_config(path, [f"output_dir={args.output_dir}"]) for path in DEMO_FILES]  # all checked first
    started = time.perf_counter()
    finished: list[tuple[Path, list[Path]]] = []
    for config in configs:
        run_dir, summaries = run_experiment(config)
        print_summary(run_dir, summaries)
        finished.append((run_dir, write_plots(run_dir)))
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    for run_dir, plots in finished:
        print(f"run folder: {run_dir}")
        for plot in plots:
            print(f"  plot: {plot}")


def main() -> int:
    try:
        run_demo()
    except FedsimError as error:
        print(f"demo: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
