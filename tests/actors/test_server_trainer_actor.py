"""FedCoLLM on Ray: the ServerTrainer actor trains on its own resources and publishes the LLM adapter
to the Serve deployment, whose replicas then serve it."""
import numpy as np
from ray import serve as ray_serve

from actors.runner import run_experiment
from fedsim.config import validate
from fedsim.pretrain import PretrainSettings, pretrain


def test_fedcollm_runs_on_actors_and_the_deployment_serves_the_trained_adapter(ray_session, tmp_path):
    llm_dir = tmp_path / "llm"
    pretrain(llm_dir, PretrainSettings("llama-0.3m", arithmetic_steps=5, steps=10, public_size=16, batch_size=8,
                                       test_size=4))
    config = validate({
        "name": "fedcollm-actors", "algorithms": ["fedcollm"], "rounds": 2, "seed": 1, "output_dir": str(tmp_path),
        "clients": {"num": 4, "per_round": 2, "presets": {"llama-0.3m": 1.0}},
        "task": {"train_per_client": 6, "test_size": 4, "public_size": 6},
        "train": {"local_steps": 2, "batch_size": 4}, "eval": {"every": 2, "client_test_size": 4},
        "engine": {"num_workers": 1, "num_cpus_per_worker": 0.5},
        "llm": {"model": str(llm_dir), "num_cpus": 0.25}, "server": {"num_cpus": 0.5, "batch_size": 4},
        "fedcollm": {"top_k": 4}})
    run_dir, (summary,) = run_experiment(config, progress=False)
    rows = [r for r in (run_dir / "fedcollm" / "rows.jsonl").read_text().splitlines()]
    import json
    last = json.loads(rows[-1])
    assert last["llm_adapter_version"] == 3  # the starting adapter, then one per round
    assert last["server_step_s"] > 0 and "llm_accuracy/rationale" in last
    assert {k for k in last if k.startswith("bytes/")} == {"bytes/down/adapter", "bytes/up/adapter_delta"}
    assert not ray_serve.status().applications  # the deployment was stopped with the run
