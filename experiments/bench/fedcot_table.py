"""FedCoT accuracy table on the built-in task: recovery none / decoder / oracle, and one run with many clients.

Every row starts from the same student (`--student`, LoRA as `--lora-r` says) and is scored on
the clients' own models in both decoding modes (answer-only, as the papers do, and
rationale-then-answer). Reference rows: the student before any training; `local` with answer-only
targets; `local` on the clients' GOLD rationales (which FedCoT clients never have: the upper bound
a client reaches with perfect rationales); the teacher itself on the same test questions.

FedCoT rows: EM at each per-token eps (inf sends the questions unperturbed) x each local recovery
of fedcot.recover: `none` (train on the LLM's replies), `decoder` (the learned local decoder,
trained by the server on public data only and shipped to every client: its bytes are in bytes
down), and `oracle` (rule-based: redoes the task's ring arithmetic with the clean question; it
knows the task, so its rows are labelled "(oracle)"). `--mechanisms em aem` adds AEM rows. FedCoT
uses alpha 1 (rationale loss only) unless `--alpha` says otherwise; `--alpha-rows` adds eps-inf
rows at other alphas. The teacher table scores the LLM's replies to test questions sent as a
FedCoT client sends its own (cut, perturbed), raw and after each recovery.

The grid runs on the in-process engine (fedsim.engine.inprocess, one process, the teacher answered
by the project's Hugging Face backend in the same process): the same client code as a Ray run,
without Ray. `llm_requests` counts every request the LLM answered, the server's own request on the
public questions (decoder rows) included; bytes count only federated traffic. The scale run goes
through `fedsim run`'s runner on a local Ray instance of 2 CPUs (Serve deployment for the teacher,
a pool of ClientWorker actors).

    python experiments/bench/fedcot_table.py [--teacher llama-1m-teacher] [--student llama-0.3m-pt] [--clients 5]
        [--rounds 6] [--local-steps 60] [--scale-clients 0]

Prints the table and writes experiments/bench/results/fedcot_table.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsim.algorithms.fedcot import (
    FedCoT,
    TeacherSide,
    decode_targets,
    generation_params,
    oracle_recover,
    parse_output,
    perturbed_prompts,
)
from fedsim.config import ExperimentConfig, validate
from fedsim.data.federated import build_federated_data
from fedsim.engine.coordinator import RoundEngine
from fedsim.engine.inprocess import InProcessExecutor
from fedsim.rng import numpy_stream
from fedsim.models.presets import model_directory
from fedsim.pretrain import ensure_pretrained
from fedsim.teacher import TEACHER
from serve.inprocess import InProcessLLM
from fedsim.train.evaluate import exact_match

RESULTS = Path(__file__).resolve().parent / "results" / "fedcot_table.json"
EPS_GRID = (math.inf, 8.0, 2.0)
RECOVERIES = ("none", "decoder", "oracle")


def base_config(args: argparse.Namespace, algorithm: str, alpha: float | None = None,
                **fedcot: Any) -> ExperimentConfig:
    """The federation every row shares; only the algorithm and its FedCoT settings (alpha: the
    bench's --alpha unless given) differ."""
    return validate({
        "name": "fedcot-table", "seed": args.seed, "algorithms": [algorithm], "rounds": args.rounds,
        "task": {"train_per_client": args.train_per_client, "test_size": args.test_size,
                 "public_size": args.decoder_public},
        "clients": {"num": args.clients, "per_round": args.clients, "presets": {args.student: 1.0}},
        "train": {"target": "answer", "local_steps": args.local_steps, "batch_size": 8, "lr": args.lr},
        "lora": {"r": args.lora_r, "alpha": 2 * args.lora_r, "target_modules": "all-linear",
                 "train_embeddings": args.train_all, "train_norms": args.train_all},
        "eval": {"every": args.rounds, "mode": "both", "max_clients": args.eval_clients,
                 "client_test_size": args.test_size},
        "llm": {"model": str(args.teacher)},
        "fedcot": {"max_new_tokens": 48, "max_prompt_tokens": 72,
                   "decoder": {"model": args.decoder_model, "public_questions": args.decoder_public,
                               "steps": args.decoder_steps},
                   "alpha": args.alpha if alpha is None else alpha, **fedcot},
    })


def in_process_engine(config: ExperimentConfig, llm: InProcessLLM) -> RoundEngine:
    """The round engine of the config's one algorithm on the in-process executor."""
    algorithm = config.algorithms[0]
    data = build_federated_data(config)
    return RoundEngine(config, algorithm, data, InProcessExecutor(config, algorithm, data, None, llm=llm), None)


def untrained_student(config: ExperimentConfig, llm: InProcessLLM) -> dict[str, Any]:
    """The student before any training, scored by the same evaluation as every other row."""
    started = time.perf_counter()
    fields = in_process_engine(config, llm).evaluate()
    return {"accuracy_answer": fields["accuracy/answer"], "accuracy_rationale": fields["accuracy/rationale"],
            "bytes_up": 0, "bytes_down": 0, "eps_client_max": None, "llm_requests": 0,
            "wall_s": time.perf_counter() - started}


def teacher_itself(config: ExperimentConfig) -> dict[str, Any]:
    """The teacher's own exact match on the students' test questions (trained to write rationales;
    answer-only decoding is for reference)."""
    from fedsim.models.presets import load_pretrained

    started = time.perf_counter()
    model, tokenizer = load_pretrained(config.llm.model)
    test = build_federated_data(config).test[:config.eval.client_test_size]
    return {"accuracy_answer": exact_match(model, tokenizer, test, "answer"),
            "accuracy_rationale": exact_match(model, tokenizer, test, "rationale"),
            "bytes_up": 0, "bytes_down": 0, "eps_client_max": None, "llm_requests": 0,
            "wall_s": time.perf_counter() - started}


def run_in_process(config: ExperimentConfig, llm: InProcessLLM) -> tuple[dict[str, Any], RoundEngine]:
    """All rounds of one algorithm on the in-process engine; its last row's figures, and the engine."""
    engine = in_process_engine(config, llm)
    requests_before = len(llm.calls)
    started = time.perf_counter()
    while not engine.done:
        engine.run_round()
    last = engine.rows[-1]
    figures = {"accuracy_answer": last["accuracy/answer"], "accuracy_rationale": last["accuracy/rationale"],
               "bytes_up": last["bytes_up_total"], "bytes_down": last["bytes_down_total"],
               "bytes_down_decoder": sum(row.get("bytes/down/decoder", 0) for row in engine.rows),
               "eps_client_max": last.get("eps_client_max"), "llm_requests": len(llm.calls) - requests_before,
               "wall_s": time.perf_counter() - started}
    return figures, engine


def teacher_accuracy(args: argparse.Namespace, llm: InProcessLLM, mechanism: str, eps: float,
                     decoder: Any) -> dict[str, float]:
    """The teacher's rationale-then-answer accuracy on test questions sent as a FedCoT client sends
    its own (cut, perturbed unless eps is inf): raw, after the decoder (None: not run), the decoder
    without the reply, after the oracle."""
    config = base_config(args, "fedcot", mechanism=mechanism, eps_per_token=eps)
    test = build_federated_data(config).test
    prompts, _ = perturbed_prompts(TeacherSide(config), config.fedcot, test, numpy_stream(args.seed, -1, 0, "bench"))
    replies = llm.generate(prompts, generation_params(config))
    parsed = [parse_output(reply) for reply in replies]

    def accuracy(pairs: list[tuple[str, str]]) -> float:
        return float(np.mean([answer == e.answer for (_, answer), e in zip(pairs, test)]))

    oracle = [oracle_recover(rationale, e.question) or (rationale, answer) for (rationale, answer), e in zip(parsed, test)]
    def decoded(sent: list[str]) -> float | None:
        return None if decoder is None else accuracy(decode_targets(decoder, test, sent, config.fedcot.max_new_tokens))

    # "decoder_no_reply": the decoder given the clean question and an empty reply, i.e. what it
    # solves by itself; the gap to "decoder" is what it reads from the LLM's reply.
    return {"raw": accuracy(parsed), "decoder": decoded(replies), "decoder_no_reply": decoded([""] * len(test)),
            "oracle": accuracy(oracle)}


def row_name(mechanism: str, eps: float, recover: str) -> str:
    prefix = f"FedCoT-{mechanism.upper()} eps {eps:g}" if math.isfinite(eps) else "FedCoT eps inf (clean)"
    return f"{prefix}, recover {recover}" + (" (oracle)" if recover == "oracle" else "")


def scale_run(args: argparse.Namespace) -> dict[str, Any]:
    """FedCoT with many clients through the Ray runner on 2 CPUs: wall time and bytes."""
    import ray

    from actors.runner import run_experiment

    config = base_config(args, "fedcot", mechanism="em", eps_per_token=8.0)
    raw = config.model_dump(mode="json")
    raw["clients"] |= {"num": args.scale_clients, "per_round": args.scale_clients}
    raw["task"] |= {"train_per_client": args.scale_train_per_client}
    raw["rounds"] = 1
    raw["eval"] |= {"every": 1, "max_clients": args.eval_clients}
    raw["engine"] |= {"num_workers": 2, "num_cpus_per_worker": 0.75}
    raw["llm"] |= {"num_cpus": 0.5}
    with tempfile.TemporaryDirectory() as output:
        raw["output_dir"] = output
        config = validate(raw)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}})
        try:
            started = time.perf_counter()
            _, summaries = run_experiment(config, progress=False)
            wall = time.perf_counter() - started
        finally:
            ray.shutdown()
    summary = summaries[0]
    return {"clients": args.scale_clients, "train_per_client": args.scale_train_per_client, "rounds": 1,
            "mechanism": "em", "eps_per_token": 8.0,
            "wall_s_total": wall, "wall_s_rounds": summary["wall_s"], "bytes_up": summary["bytes_up"],
            "bytes_down": summary["bytes_down"], "accuracy_answer": summary["accuracy"]}


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:5.1f}"


def print_table(results: dict[str, Any]) -> None:
    setup = results["setup"]
    print(f"\nstudents: {setup['student']} (LoRA r {setup['lora_r']}), {setup['clients']} clients x "
          f"{setup['train_per_client']} examples, {setup['rounds']} rounds x {setup['local_steps']} steps; "
          f"accuracy (%) on {setup['test_size']} test questions, mean over {setup['eval_clients']} clients' own "
          f"models; (oracle) rows use the task's arithmetic")
    print(f"{'row':<46}{'answer-only':>12}{'rationale':>11}{'bytes up':>11}{'bytes down':>12}{'eps/client':>12}")
    for row in results["rows"]:
        eps = row.get("eps_client_max")
        print(f"{row['name']:<46}{fmt(row['accuracy_answer']):>12}{fmt(row['accuracy_rationale']):>11}"
              f"{row['bytes_up']:>11}{row['bytes_down']:>12}{'-' if eps is None else f'{eps:.0f}':>12}")
    print(f"\nteacher ({setup['teacher']}), rationale-then-answer accuracy (%) of its replies to test questions "
          f"sent as a client sends them")
    print(f"{'mechanism':<10}{'eps per token':<15}{'raw':>8}{'decoder':>9}{'decoder, no reply':>19}{'(oracle)':>10}")
    for item in results["teacher"]:
        print(f"{item['mechanism']:<10}{item['eps']:<15}{fmt(item['raw']):>8}{fmt(item['decoder']):>9}"
              f"{fmt(item.get('decoder_no_reply')):>19}{fmt(item['oracle']):>10}")
    if results.get("scale"):
        s = results["scale"]
        print(f"\nscale: FedCoT-EM eps 8, {s['clients']} clients, 1 round on Ray (2 CPUs): "
              f"{s['wall_s_total']:.0f} s in all ({s['wall_s_rounds']:.0f} s for the round and its evaluation), "
              f"{s['bytes_up'] / 1e6:.2f} MB up, {s['bytes_down'] / 1e6:.2f} MB down")


def grid(args: argparse.Namespace, llm: InProcessLLM) -> tuple[list[dict], list[dict]]:
    """The table's rows and the teacher's accuracy per mechanism and eps."""
    def add(name: str, figures: dict[str, Any], **extra: Any) -> None:
        rows.append({"name": name, **extra, **figures})
        print(f"{name}: {rows[-1]}", flush=True)

    rows: list[dict] = []
    add("student before training", untrained_student(base_config(args, "local"), llm))
    add("local, answer-only", run_in_process(base_config(args, "local"), llm)[0])
    gold = base_config(args, "local").model_dump(mode="json")
    gold["train"]["target"] = "rationale"
    add("local, gold rationales (upper bound)", run_in_process(validate(gold), llm)[0])
    add("teacher itself", teacher_itself(base_config(args, "local")))
    teacher = []
    for eps in args.eps:
        for mechanism in (("em",) if math.isinf(eps) else args.mechanisms):
            decoder = None
            for recover in args.recover:
                config = base_config(args, "fedcot", mechanism=mechanism, eps_per_token=eps, recover=recover)
                figures, engine = run_in_process(config, llm)
                add(row_name(mechanism, eps, recover), figures, mechanism=mechanism, eps_per_token=eps,
                    recover=recover)
                if recover == "decoder":
                    algorithm = engine.executor.workers[0].algorithm
                    assert isinstance(algorithm, FedCoT)
                    decoder = algorithm.decoder(llm)[0]
            teacher.append({"mechanism": mechanism, "eps": eps,
                            **teacher_accuracy(args, llm, mechanism, eps, decoder)})
    for alpha in args.alpha_rows:
        figures, _ = run_in_process(base_config(args, "fedcot", alpha, mechanism="em", eps_per_token=math.inf), llm)
        add(f"FedCoT eps inf, alpha {alpha:g}, recover none", figures, mechanism="em", eps_per_token=math.inf,
            alpha=alpha, recover="none")
    return rows, teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="llama-1m-teacher",
                        help="the server LLM: a shipped base or a model directory (trained there when missing)")
    parser.add_argument("--student", default="llama-0.3m-pt", help="client SLM preset or local model directory")
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank of the students (alpha = 2 r)")
    parser.add_argument("--train-all", action="store_true",
                        help="also train the embeddings and norms (with r >= the hidden size: every weight)")
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--train-per-client", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--local-steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=1.0, help="FedCoT's weight of the rationale loss")
    parser.add_argument("--alpha-rows", type=float, nargs="*", default=[],
                        help="extra FedCoT eps-inf rows (recover none) at these alphas")
    parser.add_argument("--mechanisms", nargs="+", choices=["em", "aem"], default=["em"],
                        help="mechanisms of the finite-eps rows")
    parser.add_argument("--recover", nargs="+", choices=list(RECOVERIES), default=list(RECOVERIES),
                        help="local recoveries of the FedCoT rows")
    parser.add_argument("--decoder-model", default="llama-0.3m-pt", help="what the server's decoder starts from")
    parser.add_argument("--decoder-public", type=int, default=2000, help="public questions the decoder learns from")
    parser.add_argument("--decoder-steps", type=int, default=1500)
    parser.add_argument("--skip-grid", action="store_true", help="only the scale run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--test-size", type=int, default=100)
    parser.add_argument("--eval-clients", type=int, default=5)
    parser.add_argument("--eps", type=float, nargs="+", default=list(EPS_GRID))
    parser.add_argument("--scale-clients", type=int, default=200, help="0 skips the Ray scale run")
    parser.add_argument("--scale-train-per-client", type=int, default=150, help="examples per client in the scale run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    teacher_report, _ = ensure_pretrained(model_directory(args.teacher), TEACHER)
    llm = InProcessLLM(model_directory(args.teacher))
    started = time.perf_counter()
    rows, teacher = ([], []) if args.skip_grid else grid(args, llm)
    results = {
        "setup": {"teacher": str(args.teacher), "teacher_report": asdict(teacher_report), "student": args.student,
                  "clients": args.clients, "train_per_client": args.train_per_client, "rounds": args.rounds,
                  "local_steps": args.local_steps, "lr": args.lr, "alpha": args.alpha, "recover": args.recover,
                  "lora_r": args.lora_r, "lora": f"r {args.lora_r}, alpha {2 * args.lora_r}, all-linear"
                  + (", embeddings and norms trained" if args.train_all else ""),
                  "decoder": {"model": args.decoder_model, "public_questions": args.decoder_public,
                              "steps": args.decoder_steps},
                  "mechanisms": args.mechanisms, "test_size": args.test_size,
                  "eval_clients": args.eval_clients, "engine": "in-process (fedsim.engine.inprocess)",
                  "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads 1"},
        "rows": rows, "teacher": teacher, "grid_wall_s": time.perf_counter() - started,
    }
    if args.scale_clients:
        results["scale"] = scale_run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_table(results)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
