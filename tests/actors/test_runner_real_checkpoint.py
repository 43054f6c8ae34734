"""fedavg_lora on Ray with SmolLM2-135M-Instruct (its own tokenizer) as every client's SLM."""
import json

from actors.runner import run_experiment
from fedsim.config import validate


def test_fedavg_lora_with_smollm2_as_every_client(ray_session, smollm2_path, tmp_path):
    config = validate({
        "name": "smollm2", "algorithms": ["fedavg_lora"], "rounds": 1, "seed": 5,
        "clients": {"num": 2, "per_round": 2, "presets": {"smollm2-135m": 1.0}},
        "task": {"test_size": 2, "public_size": 0, "train_per_client": 2},
        "train": {"local_steps": 1, "batch_size": 1, "max_len": 32, "target": "answer"},
        "lora": {"r": 2, "target_modules": "attention"},
        "eval": {"every": 1, "mode": "answer", "batch_size": 2},
        "output_dir": str(tmp_path), "engine": {"num_workers": 1, "num_cpus_per_worker": 1},
    })
    run_dir, summaries = run_experiment(config, progress=False)
    rows = [json.loads(line) for line in (run_dir / "fedavg_lora" / "rows.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1]  # round 0: the base model scored before training
    row = rows[-1]
    assert row["clients_succeeded"] == 2 and row["loss"] > 0
    assert row["accuracy"] is not None and "test_accuracy/smollm2-135m/answer" in row
    # Each client uploads a float32 LoRA of r 2 on q, k, v, o of 30 layers (hidden 576, k/v out 192).
    lora_params = 30 * 2 * ((576 + 576) + (576 + 192) + (576 + 192) + (576 + 576))
    assert summaries[0]["bytes_up"] >= 2 * 4 * lora_params
