"""FedCoT accuracy table on the built-in task, and one FedCoT run with many clients.

Clients' SLMs are LoRA adapters on the shipped pretrained base llama-0.3m-pt (by default; pretrained
with fedsim.pretrain on ring arithmetic and the public split, like the papers' pretrained SLMs):
every row starts from the same student. FedCoT rows use alpha 1 (rationale loss only): on this
task and model size the answer-only term teaches the student to answer in one step and drags its
rationale-then-answer accuracy down with it (eps-inf rows at alpha 0.9 and 0.5 show by how much).

Rows: the student before any training (every client at the base); the `local` baseline with
answer-only targets; `local` trained on the clients' GOLD rationales (which FedCoT clients never
have: what FedCoT at eps inf could reach with a perfect teacher); FedCoT with EM and with AEM at
each per-token eps (inf sends the questions unperturbed; EM and AEM then coincide and run once),
each evaluated on the clients' own adapters in both decoding modes (answer-only, as the papers do,
and rationale-then-answer); and the teacher's own rationale-then-answer accuracy on test questions
sent clean or perturbed exactly as a FedCoT client perturbs its prompts (with and without the local
recovery of fedsim.algorithms.fedcot).

The grid runs on the in-process engine (fedsim.engine.inprocess, one process, the teacher answered
by the project's Hugging Face backend in the same process): the same client code as a Ray run,
without Ray. The scale run goes through `fedsim run`'s runner on a local Ray instance of 2 CPUs
(Serve deployment for the teacher, a pool of ClientWorker actors).

    python experiments/bench/fedcot_table.py [--recover] [--teacher runs/teacher] [--clients 20] [--scale-clients 200]

Prints the table and writes experiments/bench/results/fedcot_table.json.
"""
from __future__ import annotations

import os
import sys

# This folder holds serve.py: drop it from sys.path so that `import serve` finds the package.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fedsim.algorithms.fedcot import TeacherSide, cut_to_tokens, parse_output, question_body, recover  # noqa: E402
from fedsim.config import ExperimentConfig, validate  # noqa: E402
from fedsim.data.federated import build_federated_data  # noqa: E402
from fedsim.data.prompts import render_prompt  # noqa: E402
from fedsim.data.task import Example  # noqa: E402
from fedsim.engine.coordinator import RoundEngine  # noqa: E402
from fedsim.engine.inprocess import InProcessExecutor  # noqa: E402
from fedsim.rng import numpy_stream  # noqa: E402
from fedsim.pretrain import ensure_pretrained  # noqa: E402
from fedsim.teacher import TEACHER  # noqa: E402
from serve.inprocess import InProcessLLM  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "fedcot_table.json"
EPS_GRID = (math.inf, 16.0, 8.0, 4.0, 2.0, 1.0)


def base_config(args: argparse.Namespace, algorithm: str, alpha: float | None = None,
                **fedcot: Any) -> ExperimentConfig:
    """The federation every row shares; only the algorithm and its FedCoT settings (alpha: the
    bench's --alpha unless given) differ."""
    return validate({
        "name": "fedcot-table", "seed": args.seed, "algorithms": [algorithm], "rounds": args.rounds,
        "task": {"train_per_client": args.train_per_client, "test_size": args.test_size, "public_size": 0},
        "clients": {"num": args.clients, "per_round": args.clients, "presets": {args.student: 1.0}},
        "train": {"target": "answer", "local_steps": args.local_steps, "batch_size": 8, "lr": args.lr},
        "lora": {"r": 8, "alpha": 16, "target_modules": "all-linear"},
        "eval": {"every": args.rounds, "mode": "both", "max_clients": args.eval_clients,
                 "client_test_size": args.test_size},
        "llm": {"model": str(args.teacher)},
        "fedcot": {"max_new_tokens": 48, "max_prompt_tokens": 72, "recover": args.recover,
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


def run_in_process(config: ExperimentConfig, llm: InProcessLLM) -> dict[str, Any]:
    """All rounds of one algorithm on the in-process engine; its last row and figures."""
    engine = in_process_engine(config, llm)
    requests_before = len(llm.calls)
    started = time.perf_counter()
    while not engine.done:
        engine.run_round()
    last = engine.rows[-1]
    return {"accuracy_answer": last["accuracy/answer"], "accuracy_rationale": last["accuracy/rationale"],
            "bytes_up": last["bytes_up_total"], "bytes_down": last["bytes_down_total"],
            "eps_client_max": last.get("eps_client_max"), "llm_requests": len(llm.calls) - requests_before,
            "wall_s": time.perf_counter() - started}


def teacher_accuracy(args: argparse.Namespace, llm: InProcessLLM, mechanism: str, eps: float) -> dict[str, float]:
    """The teacher's rationale-then-answer accuracy on test questions sent as a FedCoT client sends
    its own (cut, perturbed unless eps is inf), raw and after local recovery."""
    config = base_config(args, "fedcot", mechanism=mechanism, eps_per_token=eps)
    test = build_federated_data(config).test
    side = TeacherSide(config)
    bodies = [cut_to_tokens(side.tokenizer, question_body(e), config.fedcot.max_prompt_tokens) for e in test]
    if side.perturber is not None:
        bodies = [p.text for p in side.perturber.perturb_batch(bodies, numpy_stream(args.seed, -1, 0, "bench"))]
    prompts = [render_prompt(Example(question=body, answer=""), "rationale") for body in bodies]
    replies = llm.generate(prompts, {"max_new_tokens": config.fedcot.max_new_tokens, "temperature": 0.0})
    parsed = [parse_output(reply) for reply in replies]
    recovered = [recover(rationale, e.question) or (rationale, answer) for (rationale, answer), e in zip(parsed, test)]
    return {"raw": float(np.mean([a == e.answer for (_, a), e in zip(parsed, test)])),
            "recovered": float(np.mean([a == e.answer for (_, a), e in zip(recovered, test)]))}


def scale_run(args: argparse.Namespace) -> dict[str, Any]:
    """FedCoT with many clients through the Ray runner on 2 CPUs: wall time and bytes."""
    import ray

    from actors.runner import run_experiment

    config = base_config(args, "fedcot", mechanism="em", eps_per_token=8.0)
    raw = config.model_dump(mode="json")
    raw["clients"] |= {"num": args.scale_clients, "per_round": args.scale_clients}
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
    return {"clients": args.scale_clients, "rounds": 1, "mechanism": "em", "eps_per_token": 8.0,
            "wall_s_total": wall, "wall_s_rounds": summary["wall_s"], "bytes_up": summary["bytes_up"],
            "bytes_down": summary["bytes_down"], "accuracy_answer": summary["accuracy"]}


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:5.1f}"


def print_table(results: dict[str, Any]) -> None:
    print(f"\nstudents: {results['setup']['student']}, {results['setup']['clients']} clients x "
          f"{results['setup']['train_per_client']} examples, {results['setup']['rounds']} rounds; "
          f"accuracy (%) on {results['setup']['test_size']} test questions, mean over "
          f"{results['setup']['eval_clients']} clients' own adapters")
    print(f"{'row':<28}{'answer-only':>12}{'rationale':>11}{'bytes up':>11}{'bytes down':>12}{'eps/client':>12}")
    for row in results["rows"]:
        eps = row.get("eps_client_max")
        print(f"{row['name']:<28}{fmt(row['accuracy_answer']):>12}{fmt(row['accuracy_rationale']):>11}"
              f"{row['bytes_up']:>11}{row['bytes_down']:>12}{'-' if eps is None else f'{eps:.0f}':>12}")
    print(f"\nteacher ({results['setup']['teacher']}), rationale-then-answer accuracy (%) on perturbed test questions")
    print(f"{'eps per token':<16}" + "".join(f"{'EM':>8}{'EM+rec':>8}{'AEM':>8}{'AEM+rec':>9}"))
    for item in results["teacher"]:
        print(f"{item['eps']:<16}{fmt(item['em']['raw']):>8}{fmt(item['em']['recovered']):>8}"
              f"{fmt(item['aem']['raw']):>8}{fmt(item['aem']['recovered']):>9}")
    if results.get("scale"):
        s = results["scale"]
        print(f"\nscale: FedCoT-EM eps 8, {s['clients']} clients, 1 round on Ray (2 CPUs): "
              f"{s['wall_s_total']:.0f} s in all ({s['wall_s_rounds']:.0f} s for the round and its evaluation), "
              f"{s['bytes_up'] / 1e6:.2f} MB up, {s['bytes_down'] / 1e6:.2f} MB down")


def grid(args: argparse.Namespace, llm: InProcessLLM) -> tuple[list[dict], list[dict]]:
    """The table's rows and the teacher's accuracy per eps."""
    def add(name: str, figures: dict[str, Any], **extra: Any) -> None:
        rows.append({"name": name, **extra, **figures})
        print(f"{name}: {rows[-1]}", flush=True)

    rows: list[dict] = []
    add("student before training", untrained_student(base_config(args, "local"), llm))
    add("local, answer-only", run_in_process(base_config(args, "local"), llm))
    gold = base_config(args, "local").model_dump(mode="json")
    gold["train"]["target"] = "rationale"
    add("local, gold rationales", run_in_process(validate(gold), llm))
    teacher = []
    for eps in args.eps:
        mechanisms = ("em",) if math.isinf(eps) else ("em", "aem")
        for mechanism in mechanisms:
            name = f"FedCoT-{mechanism.upper()} eps {eps:g}" if math.isfinite(eps) else "FedCoT eps inf (clean)"
            add(name, run_in_process(base_config(args, "fedcot", mechanism=mechanism, eps_per_token=eps), llm),
                mechanism=mechanism, eps_per_token=eps)
        accuracies = {m: teacher_accuracy(args, llm, m, eps) for m in mechanisms}
        teacher.append({"eps": eps, "em": accuracies["em"], "aem": accuracies.get("aem", accuracies["em"])})
    for alpha in args.alpha_rows:
        add(f"FedCoT eps inf, alpha {alpha:g}",
            run_in_process(base_config(args, "fedcot", alpha, mechanism="em", eps_per_token=math.inf), llm),
            mechanism="em", eps_per_token=math.inf, alpha=alpha)
    return rows, teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, default=Path("runs/teacher"))
    parser.add_argument("--student", default="llama-0.3m-pt", help="client SLM preset or local model directory")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--train-per-client", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=1.0, help="FedCoT's weight of the rationale loss")
    parser.add_argument("--alpha-rows", type=float, nargs="*", default=[0.9, 0.5],
                        help="extra FedCoT eps-inf rows at these alphas")
    parser.add_argument("--skip-grid", action="store_true", help="only the scale run")
    parser.add_argument("--recover", action="store_true", help="FedCoT clients repair rationales locally")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--test-size", type=int, default=100)
    parser.add_argument("--eval-clients", type=int, default=10)
    parser.add_argument("--eps", type=float, nargs="+", default=list(EPS_GRID))
    parser.add_argument("--scale-clients", type=int, default=200, help="0 skips the Ray scale run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    teacher_report, _ = ensure_pretrained(args.teacher, TEACHER)
    llm = InProcessLLM(args.teacher)
    started = time.perf_counter()
    rows, teacher = ([], []) if args.skip_grid else grid(args, llm)
    results = {
        "setup": {"teacher": str(args.teacher), "teacher_report": asdict(teacher_report), "student": args.student,
                  "clients": args.clients, "train_per_client": args.train_per_client, "rounds": args.rounds,
                  "local_steps": args.local_steps, "lr": args.lr, "alpha": args.alpha, "recover": args.recover,
                  "lora": "r 8, alpha 16, all-linear", "test_size": args.test_size,
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
