"""Progress inside a round: stage counts, and what a worker reports while it works."""
from fedsim.config import validate
from fedsim.data.federated import build_federated_data
from fedsim.engine.coordinator import RoundEngine
from fedsim.engine.inprocess import InProcessExecutor
from fedsim.engine.progress import StageCounts


def test_stage_counts_add_up_in_order_of_appearance():
    counts = StageCounts()
    counts.expect("clients", 3)
    counts.advance("evaluation", 4)
    counts.advance("clients")
    counts.expect("clients", 2)
    assert counts.snapshot() == {"clients": (1, 5), "evaluation": (4, 0)}
    assert list(counts.snapshot()) == ["clients", "evaluation"]


def test_a_worker_reports_each_client_step_and_each_question_it_scores(tmp_path):
    config = validate({"algorithms": ["fedavg_lora"], "rounds": 1, "seed": 3,
                       "clients": {"num": 4, "per_round": 3, "availability": 1.0, "presets": {"llama-0.3m": 1}},
                       "task": {"test_size": 10, "public_size": 0, "train_per_client": 8},
                       "train": {"local_steps": 1, "batch_size": 4, "max_len": 64},
                       "eval": {"every": 1, "mode": "both", "batch_size": 4}})
    data = build_federated_data(config)
    executor = InProcessExecutor(config, "fedavg_lora", data, None)
    engine = RoundEngine(config, "fedavg_lora", data, executor, None)
    counts = StageCounts()
    executor.workers[0].progress = counts
    engine.evaluate_start()
    assert counts.snapshot() == {"evaluation": (20, 20)}  # 10 questions x 2 decoding modes
    engine.run_round()
    assert counts.snapshot() == {"evaluation": (40, 40), "clients": (3, 3)}
