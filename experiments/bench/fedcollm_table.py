"""FedCoLLM against its reference rows, on the setup of experiments/fedcollm.yaml, in process.

SLM rows (mean accuracy of the clients' models on their own domains, cooking and finance): the
untrained start, local training alone, fedavg_lora, centralized (the SLM trained on the pooled client
data: the upper bound), FedCoLLM (same clients, steps and data), and the ablation FedCoLLM with
kd_lambda = 0 (the server step trains both models on the public split with L_LM only, so what
FedCoLLM gains or loses beyond it is the distillation's). LLM rows (exact match over all four domains,
and per domain): its start, after FedCoLLM, after the ablation, and centralized_llm (its LoRA fine-tuned
on the pooled client data). Also the bytes up and down per client per round of fedavg_lora and
FedCoLLM, and the server step's wall time per round. Prints a table, writes JSON.

    .venv/bin/python experiments/bench/fedcollm_table.py [--set fedcollm.kd_lambda=0.5 ...] [--out FILE]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from fedsim.algorithms import make_algorithm  # noqa: E402
from fedsim.config import ExperimentConfig, validate  # noqa: E402
from fedsim.data.federated import build_federated_data  # noqa: E402
from fedsim.engine.coordinator import RoundEngine  # noqa: E402
from fedsim.engine.inprocess import InProcessExecutor  # noqa: E402
from fedsim.models.presets import model_directory  # noqa: E402
from fedsim.server.settings import ServerTrainerSettings  # noqa: E402
from fedsim.server.trainer import ServerTrainer  # noqa: E402
from fedsim.train.distill import KD_REDUCTION  # noqa: E402
from serve.inprocess import InProcessLLM  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "fedcollm.yaml"
ABLATION = "fedcollm, kd_lambda=0"  # the server step without distillation: L_LM on the public split only


def run(config: ExperimentConfig, algorithm: str) -> RoundEngine:
    """All rounds of one algorithm on the in-process engine (the LLM endpoint and trainer in process)."""
    data = build_federated_data(config)
    endpoint = trainer = None
    if make_algorithm(algorithm, config).needs_trainer:
        endpoint = InProcessLLM(model_directory(config.llm.model), options={"lora": config.server.lora.model_dump()})
        server = config.server
        trainer = ServerTrainer(ServerTrainerSettings(engine=server.engine, lr=server.lr, epochs=server.epochs,
                                                      batch_size=server.batch_size,
                                                      max_grad_norm=server.max_grad_norm), config.seed, endpoint.publish)
    executor = InProcessExecutor(config, algorithm, data, None, llm=endpoint)
    engine = RoundEngine(config, algorithm, data, executor, None, endpoint, trainer)
    engine.evaluate_start()
    while not engine.done:
        engine.run_round()
    return engine


def llm_fields(row: dict[str, Any]) -> dict[str, float]:
    return {key.removeprefix("llm_accuracy/rationale").lstrip("/") or "all": value
            for key, value in row.items() if key.startswith("llm_accuracy/rationale")}


def per_client_round(engine: RoundEngine, direction: str) -> float:
    rows = [row for row in engine.rows if row["round"] > 0]
    return float(np.mean([row[f"bytes_{direction}"] / max(1, row["clients_selected"]) for row in rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a setting of the experiment file (YAML value), e.g. server.lr=0.001")
    parser.add_argument("--out", default="experiments/bench/results/fedcollm_table.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    raw = yaml.safe_load(CONFIG.read_text())
    for assignment in args.set:
        path, _, value = assignment.partition("=")
        *sections, key = path.split(".")
        target = raw
        for section in sections:
            target = target.setdefault(section, {})
        target[key] = yaml.safe_load(value)
    config = validate(raw)
    engines: dict[str, RoundEngine] = {}
    walls: dict[str, float] = {}
    no_kd = config.model_copy(update={"fedcollm": config.fedcollm.model_copy(update={"kd_lambda": 0.0})})
    runs = {name: (config, name) for name in ("local", "fedavg_lora", "centralized", "fedcollm", "centralized_llm")}
    runs[ABLATION] = (no_kd, "fedcollm")
    for label, (run_config, algorithm) in runs.items():
        started = time.perf_counter()
        engines[label] = run(run_config, algorithm)
        walls[label] = time.perf_counter() - started
        print(f"{label}: {walls[label]:.0f} s", flush=True)
    slm = {"start (untrained)": engines["local"].rows[0]["accuracy"],
           **{name: engines[name].rows[-1]["accuracy"] for name in ("local", "fedavg_lora", "fedcollm", ABLATION)},
           "centralized (upper bound)": engines["centralized"].rows[-1]["accuracy"]}
    llm = {"start": llm_fields(engines["fedcollm"].rows[0]), "after fedcollm": llm_fields(engines["fedcollm"].rows[-1]),
           f"after {ABLATION}": llm_fields(engines[ABLATION].rows[-1]),
           "centralized_llm (upper bound)": llm_fields(engines["centralized_llm"].rows[-1])}
    comm = {name: {"up_per_client_round": per_client_round(engines[name], "up"),
                   "down_per_client_round": per_client_round(engines[name], "down")}
            for name in ("fedavg_lora", "fedcollm")}
    server_s = [row["server_step_s"] for row in engines["fedcollm"].rows if "server_step_s" in row]
    print(f"\nSLM accuracy on the clients' domains (rationale-then-answer, {config.rounds} rounds)")
    for name, value in slm.items():
        print(f"  {name:<26} {100 * value:5.1f}%")
    domains = sorted(k for k in llm["start"] if k != "all")
    print("\nLLM accuracy (rationale-then-answer)     all  " + "  ".join(f"{d:>8}" for d in domains))
    for name, fields in llm.items():
        print(f"  {name:<34} {100 * fields['all']:5.1f}%  " + "  ".join(f"{100 * fields[d]:7.1f}%" for d in domains))
    print("\nbytes per client per round            up        down")
    for name, figures in comm.items():
        print(f"  {name:<28} {figures['up_per_client_round']:>10,.0f}  {figures['down_per_client_round']:>10,.0f}")
    print(f"\nFedCoLLM server step wall time per round: {np.mean(server_s):.1f} s (min {min(server_s):.1f}, "
          f"max {max(server_s):.1f}); KD reduction: {KD_REDUCTION}")
    result = {"config": str(CONFIG), "overrides": args.set, "rounds": config.rounds, "slm_accuracy": slm, "llm_accuracy": llm,
              "bytes": comm, "server_step_s": server_s, "wall_s": walls, "kd_reduction": KD_REDUCTION}
    write_result(Path(args.out), result)


def write_result(out: Path, result: dict[str, Any]) -> None:
    """Write a one-thread table's `result` as JSON to `out`, with the machine it ran on."""
    result = {**result, "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": 1}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
