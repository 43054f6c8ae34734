"""Algorithms whose server learns, on Ray: the ServerTrainer actor trains on its own resources and
publishes the LLM adapter to the Serve deployment, whose replicas then serve it."""
import json

import pytest
from ray import serve as ray_serve

from actors.runner import run_experiment
from fedsim.config import validate
from fedsim.pretrain import PretrainSettings, pretrain


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("llm")
    pretrain(directory, PretrainSettings("llama-0.3m", arithmetic_steps=5, steps=10, public_size=16, batch_size=8,
                                         test_size=4), threads=1)
    return directory


def _run(algorithm: str, llm_dir, tmp_path, presets: dict, settings: dict) -> dict:
    """The last row of a 2-round run of `algorithm` on actors."""
    config = validate({
        "name": f"{algorithm}-actors", "algorithms": [algorithm], "rounds": 2, "seed": 1, "output_dir": str(tmp_path),
        "clients": {"num": 4, "per_round": 2, "presets": presets},
        "task": {"train_per_client": 6, "test_size": 4, "public_size": 6},
        "train": {"local_steps": 2, "batch_size": 4}, "eval": {"every": 2, "client_test_size": 4},
        "engine": {"num_workers": 1, "num_cpus_per_worker": 0.5},
        "llm": {"model": str(llm_dir), "num_cpus": 0.25}, "server": {"num_cpus": 0.5, "batch_size": 4},
        algorithm: settings})
    run_dir, _ = run_experiment(config, progress=False)
    last = json.loads((run_dir / algorithm / "rows.jsonl").read_text().splitlines()[-1])
    assert not ray_serve.status().applications  # the deployment was stopped with the run
    return last


def test_fedcollm_runs_on_actors_and_the_deployment_serves_the_trained_adapter(ray_session, llm_dir, tmp_path):
    last = _run("fedcollm", llm_dir, tmp_path, {"llama-0.3m": 1.0}, {"top_k": 4})
    assert last["llm_adapter_version"] == 3  # the starting adapter, then one per round
    assert last["server_step_s"] > 0 and "llm_accuracy/rationale" in last
    assert {k for k in last if k.startswith("bytes/")} == {"bytes/down/adapter", "bytes/up/adapter_delta"}


def test_fedmkt_runs_on_actors_with_clients_on_two_tokenizers(ray_session, llm_dir, tmp_path):
    # the workers read the public set (they compute top-k lists on it) and hold a preset per tokenizer
    last = _run("fedmkt", llm_dir, tmp_path, {"llama-0.3m": 0.5, "gpt2-0.3m-uni": 0.5}, {"top_k": 4})
    assert last["llm_adapter_version"] == 3 and last["server_step_s"] > 0
    assert {"accuracy_by_preset/llama-0.3m/rationale", "accuracy_by_preset/gpt2-0.3m-uni/rationale"} <= set(last)
    assert last["bytes/up/slm_pub_logits"] > 0 and last["bytes/down/llm_pub_logits"] > 0
