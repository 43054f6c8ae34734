"""FedMKT against its reference rows, on the setup of experiments/fedmkt.yaml, in process.

SLM rows, per SLM type (each on its own tokenizer; mean accuracy of that type's clients on their own
domains): the untrained start, local training alone, after FedMKT, and the centralized upper bound
(one model of that type trained on the pooled data of all clients, scored on the same clients'
domains). LLM rows (exact match over all
four domains, and per domain): its start, after FedMKT, and centralized_llm (its LoRA fine-tuned on
the pooled client data). Also the bytes of top-k lists per client per round beside the dense
B x L x V float32 size the reference sends, the alignment coverage (share of positions with a 1:1
next-token match) for each tokenizer pair, the vocabulary-map build time of SmolLM2's tokenizer
(49,152 tokens) against a built-in one when that checkpoint is installed, and the server step's time.

    .venv/bin/python experiments/bench/fedmkt_table.py [--set fedmkt.strategy=weighted_mean ...] [--out FILE]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from fedsim.align.transfer import ListTransfer  # noqa: E402
from fedsim.align.vocab import build_vocab_map, special_roles, token_texts  # noqa: E402
from fedsim.config import validate  # noqa: E402
from fedsim.models.checkpoints import CheckpointError, installed_directory  # noqa: E402
from fedsim.models.presets import model_tokenizer  # noqa: E402
from fedsim.models.tokenizer import builtin_tokenizer  # noqa: E402

from fedcollm_table import llm_fields, run, write_result  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "fedmkt.yaml"


def overridden(raw: dict, assignments: list[str]) -> dict:
    for assignment in assignments:
        path, _, value = assignment.partition("=")
        *sections, key = path.split(".")
        target = raw
        for section in sections:
            target = target.setdefault(section, {})
        target[key] = yaml.safe_load(value)
    return raw


def vocab_map_seconds() -> dict[str, float] | None:
    """Seconds to build SmolLM2's map onto the built-in BPE and back (uncached), if it is installed."""
    try:
        smollm2 = model_tokenizer(str(installed_directory("smollm2-135m")))
    except CheckpointError:
        return None
    builtin = builtin_tokenizer()
    seconds = {}
    for name, (source, target) in {"smollm2 -> builtin": (smollm2, builtin),
                                   "builtin -> smollm2": (builtin, smollm2)}.items():
        started = time.perf_counter()
        build_vocab_map(token_texts(source), token_texts(target), special_roles(source), special_roles(target))
        seconds[name] = time.perf_counter() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", default="experiments/bench/results/fedmkt_table.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    raw = overridden(yaml.safe_load(CONFIG.read_text()), args.set)
    config = validate(raw)
    presets = sorted(config.clients.presets)
    engines, walls = {}, {}
    for algorithm in ("local", "fedmkt", "centralized_llm"):
        started = time.perf_counter()
        engines[algorithm] = run(config, algorithm)
        walls[algorithm] = time.perf_counter() - started
        print(f"{algorithm}: {walls[algorithm]:.0f} s", flush=True)
    for preset in presets:  # the upper bound per SLM type: the same clients' data, pooled, on one preset
        pooled = validate({**raw, "clients": {**raw["clients"], "presets": {preset: 1.0}}})
        started = time.perf_counter()
        engines[f"centralized {preset}"] = run(pooled, "centralized")
        walls[f"centralized {preset}"] = time.perf_counter() - started
        print(f"centralized {preset}: {walls[f'centralized {preset}']:.0f} s", flush=True)
    mode = config.eval.mode if config.eval.mode != "both" else "answer"
    slm = {preset: {"start (untrained)": engines["local"].rows[0][f"accuracy_by_preset/{preset}/{mode}"],
                    "local": engines["local"].rows[-1][f"accuracy_by_preset/{preset}/{mode}"],
                    "fedmkt": engines["fedmkt"].rows[-1][f"accuracy_by_preset/{preset}/{mode}"],
                    "centralized (upper bound)": engines[f"centralized {preset}"].rows[-1][f"accuracy/{mode}"]}
           for preset in presets}
    llm = {"start": llm_fields(engines["fedmkt"].rows[0]), "after fedmkt": llm_fields(engines["fedmkt"].rows[-1]),
           "centralized_llm (upper bound)": llm_fields(engines["centralized_llm"].rows[-1])}
    rounds = [row for row in engines["fedmkt"].rows if row["round"] > 0]
    up = float(np.mean([row.get("bytes/up/slm_pub_logits", 0) / row["clients_selected"] for row in rounds]))
    down = float(np.mean([row.get("bytes/down/llm_pub_logits", 0) / row["clients_selected"] for row in rounds[1:]]))
    maps = sum(row.get("bytes/down/vocab_map", 0) for row in rounds)
    coverage = float(np.mean([row["coverage_slm_to_llm"] for row in rounds if "coverage_slm_to_llm" in row]))
    algorithm = engines["fedmkt"].algorithm
    public = engines["fedmkt"].data.public
    pair_coverage = {}
    for preset in presets:
        for to_llm in (True, False):
            transfer: ListTransfer = algorithm.cached_transfer(to_llm, preset, public)
            identity = [_one_hot_lists(ids) for ids in transfer.sender_ids]
            pair_coverage[f"{preset} -> llm" if to_llm else f"llm -> {preset}"] = transfer.project(identity).coverage
    llm_vocab = len(algorithm.llm_tokenizer)
    dense = len(public) * config.server.max_len * llm_vocab * 4  # the reference's padded float32 [B, L, V]
    server_s = [row["server_step_s"] for row in rounds if "server_step_s" in row]
    map_seconds = vocab_map_seconds()

    print(f"\nSLM accuracy on the clients' domains ({mode}, {config.rounds} rounds)")
    print("  " + " " * 26 + "".join(f"{p:>20}" for p in presets))
    for row in ("start (untrained)", "local", "fedmkt", "centralized (upper bound)"):
        print(f"  {row:<26}" + "".join(f"{100 * slm[p][row]:19.1f}%" for p in presets))
    domains = sorted(k for k in llm["start"] if k != "all")
    print("\nLLM accuracy (rationale-then-answer)     all  " + "  ".join(f"{d:>8}" for d in domains))
    for name, fields in llm.items():
        print(f"  {name:<34} {100 * fields['all']:5.1f}%  " + "  ".join(f"{100 * fields[d]:7.1f}%" for d in domains))
    print(f"\ntop-k lists per client per round: {up:,.0f} B up, {down:,.0f} B down; vocabulary maps {maps:,} B "
          f"in all; the reference's dense float32 B x L x V for one model: {dense:,} B")
    print(f"alignment coverage in the run (SLM -> LLM): {100 * coverage:.1f}%; per pair: "
          + ", ".join(f"{k} {100 * v:.1f}%" for k, v in pair_coverage.items()))
    if map_seconds:
        print("vocabulary map build: " + ", ".join(f"{k} {v:.2f} s" for k, v in map_seconds.items()))
    print(f"FedMKT server step wall time per round: {np.mean(server_s):.1f} s")
    result = {"config": str(CONFIG), "overrides": args.set, "slm_accuracy": slm, "llm_accuracy": llm,
              "bytes": {"up_per_client_round": up, "down_per_client_round": down, "vocab_maps_total": maps,
                        "dense_reference_per_model": dense},
              "coverage_in_run": coverage, "coverage_by_pair": pair_coverage, "vocab_map_seconds": map_seconds,
              "server_step_s": server_s, "wall_s": walls}
    write_result(Path(args.out), result)


def _one_hot_lists(ids: np.ndarray):
    """A sender list that puts all mass on each next token: projecting it measures coverage alone."""
    from fedsim.models.topk import TopKResult

    next_ids = np.append(ids[1:], ids[-1]).astype(np.int32)[:, None]
    return TopKResult(ids=next_ids, values=np.zeros_like(next_ids, dtype=np.float16))


if __name__ == "__main__":
    main()
