"""Engine overhead: client-rounds per second of fedsim on Ray against an in-process loop.

Workloads (see shared/reference/peers.md §14): W0 = FedAvg of a 100k float32 vector with zero compute
per client; W2 = FedAvg-LoRA on the tiny `llama-0.3m` preset, 5 local steps of batch 32. K = 20
sampled clients out of N registered. Each (workload, N, mode) runs in its own Python process, so
cold start and peak memory are its own. Round time is the median over rounds 2..R.

    python experiments/bench/overhead.py            # full grid, writes experiments/bench/results/overhead.json
    python experiments/bench/overhead.py --quick    # N = 100 and 10000 only, fewer rounds, one repeat

Each configuration runs --repeats times (default 3); the run with the median round time is reported,
with every repeat's median round time beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results" / "overhead.json"

WORKLOADS = {
    "W0": {"algorithms": ["fedavg_vector"], "synthetic": {"vector_size": 100_000, "busy_ms": 0.0}},
    "W2": {"algorithms": ["fedavg_lora"], "clients": {"presets": {"llama-0.3m": 1.0}},
           "train": {"local_steps": 5, "batch_size": 32, "target": "rationale"}, "task": {"train_per_client": 32}},
}


def _config(workload: str, num_clients: int, per_round: int, rounds: int) -> dict:
    raw = json.loads(json.dumps(WORKLOADS[workload]))
    raw["rounds"] = rounds
    raw.setdefault("clients", {}).update({"num": num_clients, "per_round": per_round})
    raw.setdefault("task", {}).update({"test_size": 8, "public_size": 0})
    raw["eval"] = {"every": 0}
    raw["engine"] = {"num_workers": 2, "num_cpus_per_worker": 1}
    return raw


class PeakMemory:
    """Samples the summed RSS of this process and all its descendants (the Ray processes it started)."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)

    def _run(self, interval_s: float) -> None:
        root = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [root, *root.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(interval_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(workload: str, num_clients: int, per_round: int, rounds: int, mode: str) -> dict:
    """Run one configuration in this process and return its figures."""
    started = time.perf_counter()
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from fedsim.config import validate
    from fedsim.data.federated import build_federated_data

    config = validate(_config(workload, num_clients, per_round, rounds))
    algorithm = config.algorithms[0]
    with PeakMemory() as memory:
        data = build_federated_data(config)
        if mode == "ray":
            import ray

            from actors.runner import init_ray, pool_size
            from actors.client_worker import ClientWorker
            from actors.coordinator import Coordinator

            init_ray(config)
            data_ref = ray.put(data)
            workers = [ClientWorker.options(num_cpus=1).remote(config, algorithm, data_ref, None, 0)
                       for _ in range(pool_size(config))]
            coordinator = Coordinator.remote(config, algorithm, data_ref, workers, None, False)
            run_round = lambda: ray.get(coordinator.run_round.remote())  # noqa: E731
        else:
            from fedsim.engine.coordinator import RoundEngine
            from fedsim.engine.inprocess import InProcessExecutor

            engine = RoundEngine(config, algorithm, data, InProcessExecutor(config, algorithm, data, None, 1), None)
            run_round = engine.run_round
        times, rows = [], []
        for index in range(rounds):
            if index == 0:
                cold_start_s = time.perf_counter() - started
            begin = time.perf_counter()
            rows.append(run_round())
            times.append(time.perf_counter() - begin)
    steady = times[1:]
    median = statistics.median(steady)
    return {
        "workload": workload, "mode": mode, "num_clients": num_clients, "per_round": per_round,
        "rounds": rounds, "cold_start_s": cold_start_s, "median_round_s": median,
        "p95_round_s": sorted(steady)[max(0, int(round(0.95 * len(steady))) - 1)],
        "client_rounds_per_s": per_round / median, "peak_rss_mb": memory.peak / 2**20,
        "bytes_up_per_round": rows[-1]["bytes_up"], "bytes_down_per_round": rows[-1]["bytes_down"],
    }


def _run_child(args: list[str], per_round: int) -> dict:
    command = [sys.executable, __file__, "--per-round", str(per_round), "--child", *args]
    output = subprocess.run(command, check=True, capture_output=True,
                            text=True, env=os.environ | {"OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"})
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workloads", default="W0,W2")
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration; the median is kept")
    parser.add_argument("--child", nargs=4, metavar=("WORKLOAD", "N", "ROUNDS", "MODE"))
    args = parser.parse_args()
    if args.child:
        workload, n, rounds, mode = args.child
        print(json.dumps(measure(workload, int(n), args.per_round, int(rounds), mode)))
        return
    sizes = [100, 10_000] if args.quick else [100, 1_000, 10_000]
    rounds = 6 if args.quick else args.rounds
    results = []
    for workload in args.workloads.split(","):
        for n in sizes:
            for mode in ("inprocess", "ray"):
                runs = [_run_child([workload, str(n), str(rounds), mode], args.per_round)
                        for _ in range(1 if args.quick else args.repeats)]
                runs.sort(key=lambda r: r["median_round_s"])
                result = runs[len(runs) // 2] | {"repeats": len(runs),
                                                 "median_round_s_all": [r["median_round_s"] for r in runs]}
                results.append(result)
                print(f"{workload} N={n:>6} {mode:>9}: {result['client_rounds_per_s']:.1f} client-rounds/s, "
                      f"median round {result['median_round_s']:.3f} s, peak {result['peak_rss_mb']:.0f} MB",
                      flush=True)
    print_table(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                                   "results": results}, indent=2))
    print(f"wrote {RESULTS}")


def print_table(results: list[dict]) -> None:
    """Per workload and N: fedsim on Ray beside the in-process loop, the ratio, memory and scaling."""
    by_key = {(r["workload"], r["num_clients"], r["mode"]): r for r in results}
    header = f"{'workload':<8} {'N':>6} {'K':>3} {'ray round s':>11} {'ray c-r/s':>9} {'loop c-r/s':>10} " \
             f"{'ray/loop':>8} {'ray peak MB':>11} {'loop peak MB':>12} {'cold s':>6}"
    print(header)
    print("-" * len(header))
    for (workload, n, mode), ray_result in sorted(by_key.items()):
        if mode != "ray":
            continue
        loop = by_key.get((workload, n, "inprocess"))
        ratio = ray_result["client_rounds_per_s"] / loop["client_rounds_per_s"] if loop else float("nan")
        print(f"{workload:<8} {n:>6} {ray_result['per_round']:>3} {ray_result['median_round_s']:>11.3f} "
              f"{ray_result['client_rounds_per_s']:>9.1f} {loop['client_rounds_per_s'] if loop else float('nan'):>10.1f} "
              f"{ratio:>8.2f} {ray_result['peak_rss_mb']:>11.0f} {loop['peak_rss_mb'] if loop else float('nan'):>12.0f} "
              f"{ray_result['cold_start_s']:>6.1f}")


if __name__ == "__main__":
    main()
