"""Benchmark the server-LLM deployment: batching on against batching off.

16 concurrent callers (asyncio tasks in the driver, closed loop: each waits for its answer
before sending its next request) call ``generate`` (via ``complete``, to count tokens) and
``topk_logits`` on the tiny random LLM on CPU. Each request carries several prompts or
token sequences. Prints a table and writes experiments/bench/results/serve.json.

    python experiments/bench/serving.py [--callers 16] [--requests-per-caller 8]
"""
import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
from ray.serve.handle import DeploymentHandle

from serve.backends.hf import HFBackend
from serve.app import replica_stats, start_llm_deployment, stop_llm_deployment
from serve.params import GenerationParams
from serve.settings import ServeSettings
from serve.tiny import WORDS, build_tiny_llm

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"


def caller_workloads(args: argparse.Namespace, vocab_size: int) -> list[list[tuple[list[str], list[list[int]]]]]:
    """Per caller, per request: the prompts (for generate) and token sequences (for top-k)."""
    workloads = []
    for caller in range(args.callers):
        rng = np.random.default_rng(caller)
        requests = []
        for _ in range(args.requests_per_caller + 1):  # +1: the warm-up request
            prompts = [" ".join(rng.choice(WORDS, size=args.prompt_words)) for _ in range(args.items_per_request)]
            sequences = [rng.integers(4, vocab_size, size=args.sequence_length).tolist()
                         for _ in range(args.items_per_request)]
            requests.append((prompts, sequences))
        workloads.append(requests)
    return workloads


async def run_callers(handle: DeploymentHandle, method: str, workloads, args) -> dict:
    """Closed-loop callers; returns wall time, client-side latencies, items and tokens."""
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    latencies: list[float] = []
    generated_tokens = 0

    async def call(request) -> int:
        prompts, sequences = request
        if method == "generate":
            completions = await handle.complete.remote(prompts, params)
            return sum(c.completion_tokens for c in completions)
        if method == "topk_logits":
            await handle.topk_logits.remote(sequences, args.k)
        else:  # routing only: a method that does no model work
            await handle.tokenizer_info.remote()
        return 0

    async def caller(requests) -> None:
        nonlocal generated_tokens
        for request in requests:
            start = time.perf_counter()
            generated_tokens += await call(request)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(call(requests[0]) for requests in workloads))  # warm-up, not timed
    start = time.perf_counter()
    await asyncio.gather(*(caller(requests[1:]) for requests in workloads))
    wall = time.perf_counter() - start
    n_requests = len(latencies)
    return {"wall_s": wall, "requests": n_requests, "items": n_requests * args.items_per_request,
            "generated_tokens": generated_tokens,
            "requests_per_s": n_requests / wall, "items_per_s": n_requests * args.items_per_request / wall,
            "latency_p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "latency_p95_ms": 1000 * float(np.percentile(latencies, 95))}


def bench_mode(name: str, settings: ServeSettings, workloads, args) -> list[dict]:
    handle = start_llm_deployment(settings, name=f"bench-{name}")
    rows = []
    try:
        for method in ("generate", "topk_logits"):
            handle.reset_stats.remote().result()
            measured = asyncio.run(run_callers(handle, method, workloads, args))
            (server,) = [stats[method] for stats in replica_stats(handle)]
            rows.append({"method": method, "mode": name, "max_batch_size": settings.max_batch_size,
                         "batch_wait_timeout_s": settings.batch_wait_timeout_s, **measured,
                         # server-side means include the untimed warm-up batches
                         "mean_batch_requests": server["mean_batch_requests"],
                         "mean_batch_items": server["mean_batch_items"],
                         "server_latency_p50_ms": 1000 * server["latency_p50_s"]})
    finally:
        stop_llm_deployment(f"bench-{name}")
    return rows


def routing_cap(settings: ServeSettings, workloads, args) -> dict:
    """The same callers calling a method that does no model work: what Serve's routing alone
    allows on this machine, an upper bound on any row's requests per second."""
    handle = start_llm_deployment(settings, name="bench-routing")
    try:
        return asyncio.run(run_callers(handle, "tokenizer_info", workloads, args))
    finally:
        stop_llm_deployment("bench-routing")


def compute_ceilings(model_path: Path, workloads, args) -> dict[str, dict]:
    """Backend-only times (this process, no Serve): one request alone (mean over the
    requests of a full batch) and all of them in one call. Their ratio bounds what batching
    can gain from compute alone.
    """
    backend = HFBackend({"model_path": str(model_path), "cpu_threads": 1})
    requests = [requests[1] for requests in workloads][:args.max_batch_size]
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    calls = {
        "generate": lambda reqs: backend.generate([p for prompts, _ in reqs for p in prompts],
                                                  params.rows(len(reqs) * args.items_per_request)),
        "topk_logits": lambda reqs: backend.topk_logits([s for _, seqs in reqs for s in seqs], args.k),
    }
    def median_ms(function, repeats: int = 3) -> float:
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            function()
            samples.append(1000 * (time.perf_counter() - start))
        return float(np.median(samples))

    ceilings = {}
    for method, call in calls.items():
        call(requests)  # warm-up
        one = float(np.mean([median_ms(lambda: call([request])) for request in requests]))
        full = median_ms(lambda: call(requests))
        ceilings[method] = {"one_request_ms": one, "full_batch_ms": full,
                            "ceiling_speedup": len(requests) * one / full}
    return ceilings


def print_table(rows: list[dict]) -> None:
    header = (f"{'method':<12} {'mode':<11} {'mbs':>4} {'req/s':>8} {'items/s':>8} {'p50 ms':>8} "
              f"{'p95 ms':>8} {'batch req':>9} {'batch items':>11} {'speedup':>8}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['method']:<12} {row['mode']:<11} {row['max_batch_size']:>4} {row['requests_per_s']:>8.1f} "
              f"{row['items_per_s']:>8.1f} {row['latency_p50_ms']:>8.1f} {row['latency_p95_ms']:>8.1f} "
              f"{row['mean_batch_requests']:>9.2f} {row['mean_batch_items']:>11.1f} "
              f"{row.get('speedup', 1.0):>7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--requests-per-caller", type=int, default=8)
    parser.add_argument("--items-per-request", type=int, default=4)
    parser.add_argument("--prompt-words", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--sequence-length", type=int, default=32)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-timeout-s", type=float, nargs="+", default=[0.02],
                        help="one batched run per value")
    parser.add_argument("--hidden-size", type=int, default=64, help="of the random Llama served")
    parser.add_argument("--num-layers", type=int, default=2, help="of the random Llama served")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fedsim-bench-llm-") as folder:
        model_path = build_tiny_llm(folder, hidden_size=args.hidden_size, num_layers=args.num_layers)
        vocab_size = json.loads((model_path / "config.json").read_text())["vocab_size"]
        workloads = caller_workloads(args, vocab_size)
        ceilings = compute_ceilings(model_path, workloads, args)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        try:
            options = {"model_path": str(model_path), "cpu_threads": 1}
            common = {"backend_options": options, "max_ongoing_requests": max(64, args.callers)}
            modes = {f"batch-{round(wait * 1000)}ms": ServeSettings(**common, max_batch_size=args.max_batch_size,
                                                                      batch_wait_timeout_s=wait)
                     for wait in args.batch_wait_timeout_s}
            modes["unbatched"] = ServeSettings(**common, max_batch_size=1, batch_wait_timeout_s=0.0)
            rows = [row for name, settings in modes.items() for row in bench_mode(name, settings, workloads, args)]
            routing = routing_cap(modes["unbatched"], workloads, args)
        finally:
            ray.shutdown()
    unbatched = {row["method"]: row["requests_per_s"] for row in rows if row["mode"] == "unbatched"}
    for row in rows:
        row["speedup"] = row["requests_per_s"] / unbatched[row["method"]]
    print_table(rows)
    for method, ceiling in ceilings.items():
        print(f"backend only, {method}: one request {ceiling['one_request_ms']:.1f} ms, "
              f"{args.max_batch_size} requests in one call {ceiling['full_batch_ms']:.1f} ms "
              f"-> compute-bound ceiling {ceiling['ceiling_speedup']:.2f}x")
    print(f"Serve routing alone ({args.callers} callers, a method with no model work): "
          f"{routing['requests_per_s']:.1f} req/s, p50 {routing['latency_p50_ms']:.1f} ms")
    report = {"benchmark": "serve", "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
              "rows": rows, "backend_only": ceilings, "routing_only": routing}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
