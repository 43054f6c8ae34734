"""Versioned adapters on a deployment of two replicas: a published adapter is what the next generate
and topk_logits use on every replica (broadcast calls reach each replica), a replica that missed the
broadcast or that Serve restarts serves the current version, and responses name their version."""
import time

import numpy as np
import pytest
import ray
from ray import serve as ray_serve

from serve.adapter_store import STORE_NAMESPACE, find_store, store_name
from serve.app import current_adapter_version, publish_adapter, start_llm_deployment, stop_llm_deployment
from serve.backends.hf import HFBackend
from serve.errors import AdapterError
from serve.params import GenerationParams
from serve.settings import ServeSettings

APP = "llm-versions"
TOKENS = [[1, 5, 6, 7, 8]]
PROMPTS = ["the cat sat on"]
GREEDY = GenerationParams(max_new_tokens=4)


@pytest.fixture(scope="module")
def options(tiny_llm_path, lora_options):
    return {"model_path": str(tiny_llm_path), "lora": lora_options}


@pytest.fixture(scope="module")
def handle(ray_session, options):
    settings = ServeSettings(backend_options=options, num_replicas=2, num_cpus=0.25, batch_wait_timeout_s=0.0,
                             health_check_period_s=0.5)
    yield start_llm_deployment(settings, name=APP)
    if APP in ray_serve.status().applications:  # the last test stops it itself
        stop_llm_deployment(APP)
    ray_serve.shutdown()


@pytest.fixture(scope="module")
def local(options):
    """The served model in this process, to compute what each adapter version must return."""
    return HFBackend(options)


def adapter(local, seed):
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0, 0.3, shape).astype(np.float32) for name, shape in local.adapter_shapes().items()}


def expected(local, arrays):
    """(top-k of TOKENS, completion of PROMPTS) of the local model with `arrays` as its adapter."""
    local.set_adapter(arrays)
    return local.topk_logits(TOKENS, 4)[0], local.generate(PROMPTS, GREEDY.rows(1))[0].text


def assert_every_replica_serves(handle, version, reference):
    """Each replica's next topk_logits and complete use adapter `version` and match the reference."""
    topk, text = reference
    for (result,) in handle.broadcast("topk_logits", TOKENS, 4).results(timeout_s=60):
        assert result.adapter_version == version
        np.testing.assert_array_equal(result.ids, topk.ids)
        np.testing.assert_array_equal(result.values, topk.values)
    completions = handle.broadcast("complete", PROMPTS, GREEDY).results(timeout_s=60)
    assert [(c.adapter_version, c.text) for (c,) in completions] == [(version, text)] * 2
    assert [s["adapter_version"] for s in handle.broadcast("stats").results(timeout_s=60)] == [version] * 2


def replicas():
    return [a for a in ray.util.list_named_actors(all_namespaces=True) if f"{APP}#LLMServer" in a["name"]]


def test_the_published_adapter_serves_the_next_requests_on_every_replica(handle, local):
    base = handle.broadcast("topk_logits", TOKENS, 4).results(timeout_s=60)
    assert len(base) == 2 and all(r[0].adapter_version == 0 for r in base)
    arrays = adapter(local, 1)
    assert publish_adapter(handle, arrays, 1) == 1 and current_adapter_version(handle) == 1
    reference = expected(local, arrays)
    assert_every_replica_serves(handle, 1, reference)
    assert not np.array_equal(reference[0].values, base[0][0].values)


def test_stale_versions_and_bad_arrays_are_refused_and_change_nothing(handle, local):
    current = current_adapter_version(handle)
    with pytest.raises(AdapterError, match=f"not newer than the current version {current}"):
        publish_adapter(handle, adapter(local, 2), current)
    bad = {name: np.zeros((2, 2), np.float32) for name in adapter(local, 2)}
    with pytest.raises(AdapterError, match="shape"):
        publish_adapter(handle, bad, current + 1)
    assert current_adapter_version(handle) == current


def test_a_replica_that_missed_the_broadcast_loads_the_version_before_its_next_batch(handle, local):
    """A replica that starts while an adapter is published is not in the broadcast: the store is."""
    arrays = adapter(local, 3)
    version = ray.get(find_store(APP).publish.remote(current_adapter_version(handle) + 1, arrays))
    assert_every_replica_serves(handle, version, expected(local, arrays))


def test_a_killed_replica_comes_back_serving_the_current_version(handle, local):
    victim = replicas()[0]
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    arrays = adapter(local, 4)  # published while the victim is down: its replacement gets no broadcast
    version = publish_adapter(handle, arrays, current_adapter_version(handle) + 1)
    deadline = time.monotonic() + 60
    while {a["name"] for a in replicas()} & {victim["name"]} or len(replicas()) != 2 \
            or ray_serve.status().applications[APP].status != "RUNNING":
        assert time.monotonic() < deadline, "Serve did not replace the killed replica within 60 s"
        time.sleep(0.2)
    assert_every_replica_serves(handle, version, expected(local, arrays))


def test_stopping_the_deployment_removes_its_store(handle):
    assert ray.get_actor(store_name(APP), namespace=STORE_NAMESPACE)
    stop_llm_deployment(APP)
    with pytest.raises(ValueError):
        ray.get_actor(store_name(APP), namespace=STORE_NAMESPACE)
