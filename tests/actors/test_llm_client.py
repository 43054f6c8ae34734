"""Tests of actors/llm_client.py against a real deployment of the tiny LLM (handles only)."""
import threading
import time

import pytest
import ray
from ray import serve as ray_serve

from actors.llm_client import LLMRequestError, ServeLLMClient
from fedsim.engine.progress import StageCounts
from serve.app import start_llm_deployment, stop_llm_deployment
from serve.errors import RequestError
from serve.settings import ServeSettings

PARAMS = {"max_new_tokens": 4}
PROMPTS = ["the cat sat on", "one two three"]


@pytest.fixture(scope="module")
def settings(tiny_llm_path):
    return ServeSettings(backend_options={"model_path": str(tiny_llm_path)}, num_cpus=0.25)


@pytest.fixture(scope="module")
def handle(ray_session, settings):
    yield start_llm_deployment(settings, name="llm-client")
    stop_llm_deployment("llm-client")
    ray_serve.shutdown()


def test_answers_as_the_handle_does_and_reports_the_prompts_answered(handle):
    counts = StageCounts()
    client = ServeLLMClient(handle, timeout_s=60.0, retries=1, progress=counts)
    assert client.generate(PROMPTS, PARAMS) == handle.generate.remote(PROMPTS, PARAMS).result()
    assert counts.snapshot() == {"llm prompts": (2, 2)}


def test_a_request_that_never_answers_in_time_fails_after_every_attempt(handle):
    client = ServeLLMClient(handle, timeout_s=1e-4, retries=2)
    with pytest.raises(LLMRequestError, match=r"2 prompts in 3 attempts \(timeout 0.0001 s each\).*TimeoutError"):
        client.generate(PROMPTS, PARAMS)
    # the abandoned attempts were cancelled and do not block later requests
    assert len(ServeLLMClient(handle, timeout_s=60.0).generate(PROMPTS, PARAMS)) == 2


def test_a_bad_request_is_not_retried(handle):
    with pytest.raises(RequestError, match="prompts must be a list of strings"):
        ServeLLMClient(handle, timeout_s=60.0, retries=2).generate([1, 2], PARAMS)


def test_negative_retries_are_refused(handle):
    with pytest.raises(ValueError, match="retries must be >= 0"):
        ServeLLMClient(handle, retries=-1)


def test_a_replica_that_dies_during_a_request_is_retried(ray_session, settings):
    """Kill the replica while it generates: one attempt fails, a retry reaches its replacement."""
    name = "llm-client-kill"
    handle = start_llm_deployment(settings, name=name)
    prompts = ["the cat sat on the mat"] * 300
    long_params = {"max_new_tokens": 64}  # a few seconds of generation: the kill lands mid-request

    def kill_replica_once_it_generates() -> None:
        while handle.stats.remote().result()["generate"]["batches"] == 0:
            time.sleep(0.01)
        (replica,) = [actor for actor in ray.util.list_named_actors(all_namespaces=True)
                      if f"{name}#LLMServer" in actor["name"]]
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)

    try:
        killer = threading.Thread(target=kill_replica_once_it_generates)
        killer.start()
        with pytest.raises(LLMRequestError, match="in 1 attempts.*ActorDiedError"):
            ServeLLMClient(handle, timeout_s=120.0, retries=0).generate(prompts, long_params)
        killer.join()
        killer = threading.Thread(target=kill_replica_once_it_generates)
        killer.start()
        replies = ServeLLMClient(handle, timeout_s=120.0, retries=2, backoff_s=0.5).generate(prompts, long_params)
        killer.join()
        assert len(replies) == len(prompts)
    finally:
        stop_llm_deployment(name)
