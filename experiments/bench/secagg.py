"""Secure aggregation cost: time per round and bytes per client of the `protocol` mode, beside the
`cost` mode's predicted bytes (they must agree message by message).

Grid: n clients in {10, 50, 100}; adapters of 32 KB and 1 MB (float32: 8192 and 262144 parameters);
complete graph and sparse graph (2*ceil(log2 n) neighbours); dropout fractions {0, 0.1} (clients
dropping after masking, so their masks are rebuilt from shares). Everything runs in this process on
one core, every party one after another. Round wall and CPU seconds cover all parties; client CPU is
the mean over clients of the CPU seconds spent in its own stages, server CPU the server's stages'
(CPU time, time.process_time, is what a party costs; wall time also shows a busy shared machine).

    python experiments/bench/secagg.py            # full grid, writes experiments/bench/results/secagg.json
    python experiments/bench/secagg.py --quick    # n in {10, 50}, 32 KB adapters only
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from fedsim.engine.secure_sum import QUANTIZATION_PURPOSE
from fedsim.rng import stream_seed
from fedsim.secagg import Dropouts, SecAggClient, SecAggConfig, SecAggServer, TensorSpec, cost_aggregate, \
    encode_update
from fedsim.secagg.graph import resolve_degree

RESULTS = Path(__file__).resolve().parent / "results" / "secagg.json"
GRAPHS = {"complete": None, "log": "log"}


def _updates(n: int, params: int, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    updates = {client: {"adapter": rng.normal(0.0, 0.01, params).astype(np.float32)} for client in range(n)}
    weights = {client: int(rng.integers(1, 1000)) for client in range(n)}
    return updates, weights


def _ledger(messages) -> list[tuple]:
    """Every message as (kind, stage, sender, receiver, bytes), in a canonical order."""
    return sorted((m.kind, m.stage, m.sender, m.receiver, m.nbytes()) for m in messages)


def _per_client(messages, n: int, direction: str) -> float:
    return sum(m.nbytes() for m in messages if m.direction == direction) / n


def run_protocol(updates, weights, config: SecAggConfig, round_index: int, dropped: frozenset, seed: int):
    """All stages, timing each party's CPU seconds; returns (result, messages, mean client CPU s, server CPU s)."""
    spec = TensorSpec.from_update(updates[0])
    clock: dict = {}

    def timed(party, call, *args):
        start = time.process_time()
        out = call(*args)
        clock[party] = clock.get(party, 0.0) + time.process_time() - start
        return out

    server = timed("server", SecAggServer, config, round_index, list(updates), spec)
    clients = {c: timed(c, SecAggClient, c, round_index, spec, config,
                        stream_seed(seed, c, round_index, QUANTIZATION_PURPOSE)) for c in updates}
    log = []
    for c, client in clients.items():
        log.append(timed(c, client.advertise_keys))
        timed("server", server.receive_keys, log[-1])
    for message in timed("server", server.broadcast_keys):
        log += [message, timed(message.receiver, clients[message.receiver].share_keys, message)]
        timed("server", server.receive_shares, log[-1])
    for message in timed("server", server.forward_shares):
        log.append(message)
        if message.receiver not in dropped:
            c = message.receiver
            log.append(timed(c, clients[c].masked_input, updates[c], weights[c], message))
            timed("server", server.receive_masked_input, log[-1])
    for message in timed("server", server.request_unmask):
        log += [message, timed(message.receiver, clients[message.receiver].unmask, message)]
        timed("server", server.receive_unmask, log[-1])
    result = timed("server", server.finish)
    client_seconds = [seconds for party, seconds in clock.items() if party != "server"]
    return result, log, float(np.mean(client_seconds)), clock["server"]


def run_cost(updates, weights, config: SecAggConfig, round_index: int, dropped: frozenset, seed: int):
    """The cost mode: encode in plaintext, sum, and list the protocol's messages."""
    spec = TensorSpec.from_update(updates[0])
    encoded = {c: encode_update(updates[c], weights[c], spec, config,
                                np.random.default_rng(stream_seed(seed, c, round_index, QUANTIZATION_PURPOSE)),
                                f"client {c}")
               for c in updates if c not in dropped}
    return cost_aggregate(encoded, list(updates), spec, config, round_index, Dropouts(before_input=dropped))


def measure(n: int, params: int, graph: str, dropout: float, seed: int) -> dict:
    updates, weights = _updates(n, params, seed)
    dropped = frozenset(range(round(dropout * n)))
    protocol = SecAggConfig(clip_range=0.1, neighbours=GRAPHS[graph], threshold=0.5)
    cost = SecAggConfig(clip_range=0.1, neighbours=GRAPHS[graph], threshold=0.5, mode="cost")
    start, start_cpu = time.perf_counter(), time.process_time()
    result, measured, client_s, server_s = run_protocol(updates, weights, protocol, 1, dropped, seed)
    round_s, round_cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    start = time.perf_counter()
    cost_result, predicted = run_cost(updates, weights, cost, 1, dropped, seed)
    cost_s = time.perf_counter() - start
    plain = sum(weights[c] * updates[c]["adapter"].astype(np.float64) for c in result.survivors)
    return {
        "clients": n, "params": params, "adapter_kb": params * 4 / 1024, "graph": graph,
        "degree": resolve_degree(GRAPHS[graph], n), "dropout": dropout, "dropped": len(dropped),
        "round_wall_s": round_s, "round_cpu_s": round_cpu_s, "client_cpu_s_mean": client_s,
        "server_cpu_s": server_s, "cost_mode_wall_s": cost_s,
        "up_bytes_per_client": _per_client(measured, n, "up"),
        "down_bytes_per_client": _per_client(measured, n, "down"),
        "cost_up_bytes_per_client": _per_client(predicted, n, "up"),
        "cost_down_bytes_per_client": _per_client(predicted, n, "down"),
        "plain_adapter_bytes": params * 4,
        "bytes_agree": _ledger(measured) == _ledger(predicted),
        "sums_agree": all(np.array_equal(result.weighted_sum[k], cost_result.weighted_sum[k])
                          for k in result.weighted_sum),
        "max_abs_error_vs_float_sum": float(np.max(np.abs(result.weighted_sum["adapter"] - plain))),
        "total_weight": result.total_weight,
    }


def _table(rows: list[dict]) -> str:
    header = (f"{'n':>4} {'KB':>6} {'graph':>8} {'deg':>4} {'drop':>4} {'wall s':>7} {'cpu s':>7} "
              f"{'client cpu':>10} {'server cpu':>10} {'up KB/cl':>9} {'cost up':>9} {'down KB/cl':>10} "
              f"{'cost down':>10} {'agree':>5} {'max err':>9}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['clients']:>4} {r['adapter_kb']:>6.0f} {r['graph']:>8} {r['degree']:>4} {r['dropped']:>4} "
            f"{r['round_wall_s']:>7.2f} {r['round_cpu_s']:>7.2f} {r['client_cpu_s_mean']:>10.3f} "
            f"{r['server_cpu_s']:>10.3f} "
            f"{r['up_bytes_per_client'] / 1024:>9.1f} {r['cost_up_bytes_per_client'] / 1024:>9.1f} "
            f"{r['down_bytes_per_client'] / 1024:>10.1f} {r['cost_down_bytes_per_client'] / 1024:>10.1f} "
            f"{'yes' if r['bytes_agree'] and r['sums_agree'] else 'NO':>5} {r['max_abs_error_vs_float_sum']:>9.1e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n in {10, 50}, 32 KB adapters only")
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--params", type=int, nargs="+", default=[8192, 262144])
    parser.add_argument("--graph", choices=sorted(GRAPHS), nargs="+", default=["complete", "log"])
    parser.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.params = [10, 50], [8192]
    measure(4, 64, "complete", 0.0, args.seed)  # warm-up: first calls into OpenSSL and numpy are slower
    rows = []
    for params in args.params:
        for n in args.clients:
            for graph in args.graph:
                for dropout in args.dropout:
                    rows.append(measure(n, params, graph, dropout, args.seed))
                    print(_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(_table(rows))
    machine = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
               "load_average_at_end": os.getloadavg(),
               "note": "one process, one core, all parties sequential; the machine is shared with other jobs"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
