"""Accuracy of fedavg_lora under DP-SGD on the built-in task, for a grid of target epsilons.

Runs the quickstart experiment (experiments/quickstart.yaml, or --config) with fedavg_lora only,
once without DP-SGD (eps = inf) and once per target epsilon, on Ray. For a finite target the
clients' noise multiplier is calibrated (dp-accounting, Poisson-sampled batches) so that a client
taking part in every round spends at most that epsilon at privacy.budget_delta; the table reports
the epsilon the ledger actually recorded (the largest over clients), the noise multiplier, the
final accuracy and the bytes.

    python experiments/bench/dpsgd_table.py                 # eps in {inf, 8, 4, 2}
    python experiments/bench/dpsgd_table.py --eps inf 2 --set rounds=2

Prints a table and writes experiments/bench/results/dpsgd_table.json.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import pandas as pd

from actors.runner import run_experiment
from fedsim.config import load_config
from fedsim.results import ROWS_PARQUET

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results" / "dpsgd_table.json"
EPS_GRID = (math.inf, 8.0, 4.0, 2.0)


def run_one(args: argparse.Namespace, eps: float) -> dict:
    """One fedavg_lora run at target `eps` (inf: no DP-SGD); its final figures."""
    overrides = ["algorithms=[fedavg_lora]", f"name=dpsgd-eps{eps:g}", f"output_dir={args.output_dir}",
                 *args.set]
    if math.isfinite(eps):
        overrides += [f"privacy.dp_sgd.target_eps={eps}", f"privacy.dp_sgd.max_grad_norm={args.max_grad_norm}"]
    config = load_config(args.config, overrides)
    started = time.perf_counter()
    run_dir, (summary,) = run_experiment(config, progress=False)
    rows = pd.read_parquet(run_dir / "fedavg_lora" / ROWS_PARQUET)
    last = rows.iloc[-1]
    return {
        "target_eps": eps,
        "accuracy": summary["accuracy"],
        "eps_spent_max": None if math.isinf(eps) else float(last["eps_client_max"]),
        "noise_multiplier": None if math.isinf(eps) else float(last["dp_sgd_sigma_max"]),
        "bytes_up": summary["bytes_up"], "bytes_down": summary["bytes_down"],
        "rounds": summary["rounds"], "wall_s": time.perf_counter() - started, "run_dir": str(run_dir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "experiments" / "quickstart.yaml")
    parser.add_argument("--eps", type=float, nargs="+", default=list(EPS_GRID))
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--output-dir", default="runs/bench-dpsgd")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    rows = []
    for eps in args.eps:
        rows.append(run_one(args, eps))
        print(f"eps {eps:g}: {rows[-1]}", flush=True)
    print(f"\nfedavg_lora with DP-SGD, {args.config.name} {' '.join(args.set)}")
    print(f"{'target eps':>10}{'eps spent':>11}{'sigma':>8}{'accuracy':>10}{'wall s':>8}")
    for row in rows:
        spent = "-" if row["eps_spent_max"] is None else f"{row['eps_spent_max']:.2f}"
        sigma = "-" if row["noise_multiplier"] is None else f"{row['noise_multiplier']:.2f}"
        print(f"{row['target_eps']:>10g}{spent:>11}{sigma:>8}{100 * row['accuracy']:>9.1f}%{row['wall_s']:>8.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": str(args.config), "overrides": args.set, "rows": rows,
                                    "machine": platform.platform()}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
