"""FedMKT with a real checkpoint as the server LLM: SmolLM2-135M-Instruct (its own 49,152-token
tokenizer) and the built-in SLMs of experiments/fedmkt.yaml as clients (the BPE llama and the Unigram
gpt2), on a small public set and few rounds, in process on one thread.

It shows that the protocol completes with a tokenizer of a real model family on the server side, and
measures the run's wall time, the server step's time and the bytes per client per round by message
kind. The accuracies are printed too, for what they are at this size: SmolLM2 was never trained on
the built-in task and the run is far too short to teach it.

Needs `fedsim models get smollm2-135m` (make install puts its GGUF file in place).

    .venv/bin/python experiments/bench/fedmkt_smollm2.py [--set rounds=3 ...] [--out FILE]
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

from fedsim.config import validate  # noqa: E402
from fedsim.models.checkpoints import CheckpointError, installed_directory  # noqa: E402

from fedcollm_table import llm_fields, run, write_result  # noqa: E402
from fedmkt_table import CONFIG, overridden  # noqa: E402

SMALL_RUN = ["llm.model=smollm2-135m", "rounds=2", "clients.num=4", "clients.per_round=4",
             "task.public_size=16", "task.test_size=20", "task.train_per_client=30", "train.local_steps=5",
             "eval.every=2", "eval.client_test_size=20", "eval.batch_size=20", "server.max_len=128"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a setting after the small-run ones")
    parser.add_argument("--out", default="experiments/bench/results/fedmkt_smollm2.json")
    args = parser.parse_args()
    try:
        installed_directory("smollm2-135m")
    except CheckpointError as error:
        raise SystemExit(f"fedmkt_smollm2: {error}") from None
    torch.set_num_threads(1)
    config = validate(overridden(yaml.safe_load(CONFIG.read_text()), [*SMALL_RUN, *args.set]))
    started = time.perf_counter()
    engine = run(config, "fedmkt")
    wall = time.perf_counter() - started
    rounds = [row for row in engine.rows if row["round"] > 0]
    kinds = sorted({key for row in rounds for key in row if key.startswith("bytes/")})
    per_client = {kind: float(np.mean([row.get(kind, 0) / row["clients_selected"] for row in rounds]))
                  for kind in kinds}
    mode = config.eval.mode if config.eval.mode != "both" else "answer"
    presets = sorted(config.clients.presets)
    slm = {preset: {"start": engine.rows[0][f"accuracy_by_preset/{preset}/{mode}"],
                    "after fedmkt": engine.rows[-1][f"accuracy_by_preset/{preset}/{mode}"]} for preset in presets}
    llm = {"start": llm_fields(engine.rows[0])["all"], "after fedmkt": llm_fields(engine.rows[-1])["all"]}
    coverage = [row["coverage_slm_to_llm"] for row in rounds if "coverage_slm_to_llm" in row]
    server_s = [row["server_step_s"] for row in rounds if "server_step_s" in row]

    print(f"\nFedMKT, LLM smollm2-135m ({len(engine.algorithm.llm_tokenizer):,} tokens), {config.rounds} rounds, "
          f"{config.clients.num} clients ({', '.join(presets)}), public set {len(engine.data.public)}: "
          f"completed in {wall:.0f} s (one thread)")
    print("bytes per client per round by message kind (mean over rounds):")
    for kind, value in per_client.items():
        print(f"  {kind:<28} {value:>12,.0f} B")
    print(f"server step {np.mean(server_s):.1f} s a round; alignment coverage SLM -> LLM "
          f"{100 * np.mean(coverage):.1f}%")
    print(f"LLM rationale accuracy on {config.task.test_size} questions: start {100 * llm['start']:.1f}%, "
          f"after {100 * llm['after fedmkt']:.1f}%")
    for preset, values in slm.items():
        print(f"SLM {preset}: start {100 * values['start']:.1f}%, after {100 * values['after fedmkt']:.1f}%")
    result = {"config": str(CONFIG), "overrides": [*SMALL_RUN, *args.set], "wall_s": wall,
              "bytes_per_client_round": per_client, "server_step_s": server_s, "coverage_slm_to_llm": coverage,
              "llm_accuracy": llm, "slm_accuracy": slm}
    write_result(Path(args.out), result)


if __name__ == "__main__":
    main()
