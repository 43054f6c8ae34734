"""Kill `fedsim run` for real (SIGKILL of the driver process) in the middle of round 2, resume it with
`fedsim run --resume`, and get exactly what an uninterrupted run of the same config gets.

The uninterrupted run is the same engine over in-process workers and the same Hugging Face LLM backend
in this process (the project's invariant: same config and seed, same metrics, whatever runs the
workers); it costs a fraction of one more `fedsim run`."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsim.config import load_config
from fedsim.data.federated import build_federated_data
from fedsim.engine.coordinator import RoundEngine
from fedsim.engine.inprocess import InProcessExecutor
from fedsim.results import summarize
from serve.inprocess import InProcessLLM

FEDSIM = str(Path(sys.executable).parent / "fedsim")
# fedcot first: later launches need no LLM deployment. fedcot's clients keep state between rounds, fedavg_lora's
# do not: the two kinds of resume. (`local`, stateful too, is resumed mid-round in-process in
# tests/fedsim/engine/test_worker.py; one more kill and launch here would add a minute and no new path.)
ALGORITHMS = ["fedcot", "fedavg_lora"]
STATEFUL = {"fedcot"}
ROUND_TWO_STATE = "client_state/*/r000001.pt"  # round index 1 is the second round


def experiment(tmp_path: Path, llm_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps({
        "name": "killed", "seed": 3, "algorithms": ALGORITHMS, "rounds": 3,
        "task": {"train_per_client": 6, "test_size": 6, "public_size": 0},
        "clients": {"num": 4, "per_round": 2, "presets": {"llama-0.3m-pt": 1.0}},
        "train": {"local_steps": 2, "batch_size": 3, "max_len": 64},
        "eval": {"every": 1, "mode": "answer", "max_clients": 4, "client_test_size": 6},
        "engine": {"num_workers": 1, "num_cpus_per_worker": 0.5},
        # one request per batch: the LLM's replies cannot depend on which requests arrive together
        "llm": {"model": str(llm_path), "max_batch_size": 1, "num_cpus": 0.5},
        "fedcot": {"mechanism": "em", "eps_per_token": 4.0, "max_new_tokens": 8, "max_prompt_tokens": 48},
    }))
    return path


class Launch:
    """One `fedsim run` driver process in its own session, with its output in a log file."""

    def __init__(self, args: list[str], log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray
        self.log = log
        with open(log, "w") as handle:
            self.process = subprocess.Popen([FEDSIM, "run", *args, "--quiet"], stdout=handle,
                                            stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_until(self, ready, what: str, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"fedsim ended (rc {self.process.returncode}) before {what}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the driver, then whatever it started that outlived it (its own process group)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def finish(self, timeout_s: float = 300) -> None:
        try:
            assert self.process.wait(timeout_s) == 0, self.log.read_text()[-3000:]
        finally:
            self.kill()


def completed_rounds(algorithm_dir: Path) -> int:
    path = algorithm_dir / "checkpoint.pkl"
    if not path.is_file():
        return 0
    with open(path, "rb") as handle:
        return pickle.load(handle)["completed"]


def kill_in_round_two(launch: Launch, algorithm_dir: Path, cohort: int) -> None:
    """Kill the driver once round 1 is checkpointed and, for stateful clients, all `cohort` clients
    of round 2 have written their state (the round then evaluates before its checkpoint)."""
    def ready() -> bool:
        if completed_rounds(algorithm_dir) != 1:
            return False
        return algorithm_dir.name not in STATEFUL or len(list(algorithm_dir.glob(ROUND_TWO_STATE))) == cohort

    launch.wait_until(ready, f"{algorithm_dir.name} reached round 2")
    launch.kill()
    assert completed_rounds(algorithm_dir) == 1  # killed inside round 2, not after it


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def without_wall_time(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "wall_s"}


def outcome(algorithm_dir: Path) -> dict:
    """Everything a run folder reports but wall time: rows, summary figures, privacy ledger rows."""
    summary = json.loads((algorithm_dir / "summary.json").read_text())
    return {"rows": [without_wall_time(row) for row in read_jsonl(algorithm_dir / "rows.jsonl")],
            "summary": {k: summary[k] for k in summary if k not in ("wall_s", "workers", "config")},
            "privacy": read_jsonl(algorithm_dir / "privacy.jsonl")}


def uninterrupted(path: Path, algorithm: str, run_dir: Path, llm_path: Path) -> dict:
    """The outcome of an uninterrupted run of one algorithm, on in-process workers."""
    config = load_config(path)
    data = build_federated_data(config)
    executor = InProcessExecutor(config, algorithm, data, str(run_dir), llm=InProcessLLM(llm_path))
    engine = RoundEngine(config, algorithm, data, executor, str(run_dir))
    engine.evaluate_start()
    while not engine.done:
        engine.run_round()
    return {"rows": [without_wall_time(row) for row in engine.rows],
            "summary": without_wall_time(summarize(engine.rows)),
            "privacy": read_jsonl(run_dir / "privacy.jsonl")}


@pytest.mark.slow
def test_sigkill_in_round_two_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_llm_path):
    path = experiment(tmp_path, tiny_llm_path)
    reference = {a: uninterrupted(path, a, tmp_path / "reference" / a, tiny_llm_path) for a in ALGORITHMS}
    cohort = {a: reference[a]["rows"][2]["clients_succeeded"] for a in ALGORITHMS}
    # the case that went wrong: a FedCoT client whose first round is round 2 asks the LLM then
    assert reference["fedcot"]["rows"][2].get("bytes/up/prompts", 0) > 0
    assert all([row["round"] for row in reference[a]["rows"]] == [0, 1, 2, 3] for a in ALGORITHMS)
    assert any(row["accuracy"] > 0 for a in ALGORITHMS for row in reference[a]["rows"])

    output = tmp_path / "interrupted"
    launch = Launch([str(path), "--set", f"output_dir={output}"], tmp_path / "launch0.log")
    launch.wait_until(lambda: any(output.glob("*/config.yaml")), "the run folder was written")
    run_dir = next(output.glob("*/config.yaml")).parent
    for index, algorithm in enumerate(ALGORITHMS):
        kill_in_round_two(launch, run_dir / algorithm, cohort[algorithm])
        assert not (run_dir / algorithm / "summary.json").exists()
        launch = Launch(["--resume", str(run_dir)], tmp_path / f"launch{index + 1}.log")
    launch.finish()

    for algorithm in ALGORITHMS:
        assert outcome(run_dir / algorithm) == reference[algorithm], algorithm
        assert not list((run_dir / algorithm).rglob("*.tmp"))
    assert reference["fedcot"]["privacy"] and all(row["eps_pld"] > 0 for row in reference["fedcot"]["privacy"])
    for algorithm in ALGORITHMS:  # the compared figures, shown by `pytest -s`
        summary, privacy = reference[algorithm]["summary"], reference[algorithm]["privacy"]
        print(f"{algorithm}: accuracy {summary['accuracy']:.4f}, bytes up {summary['bytes_up']}, bytes down "
              f"{summary['bytes_down']}, simulated {summary['sim_time_s']:.2f} s, {len(privacy)} privacy rows, "
              f"max eps_pld {max((row['eps_pld'] for row in privacy), default=None)}")
