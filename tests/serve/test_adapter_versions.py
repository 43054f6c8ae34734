"""Versioned adapters on a deployment of two replicas: a published adapter is what the next generate
and topk_logits use on every replica, a replica that Serve restarts serves the current version, and
responses name the version they were computed with."""
import time

import numpy as np
import pytest
import ray
from ray import serve as ray_serve

from serve.adapter_store import STORE_NAMESPACE, store_name
from serve.app import current_adapter_version, publish_adapter, start_llm_deployment, stop_llm_deployment
from serve.backends.hf import HFBackend
from serve.errors import AdapterError
from serve.params import GenerationParams
from serve.settings import ServeSettings

APP = "llm-versions"
TOKENS = [[1, 5, 6, 7, 8]]
GREEDY = GenerationParams(max_new_tokens=4)


@pytest.fixture(scope="module")
def options(tiny_llm_path, lora_options):
    return {"model_path": str(tiny_llm_path), "lora": lora_options}


@pytest.fixture(scope="module")
def handle(ray_session, options):
    settings = ServeSettings(backend_options=options, num_replicas=2, num_cpus=0.25, batch_wait_timeout_s=0.0)
    yield start_llm_deployment(settings, name=APP)
    stop_llm_deployment(APP)
    ray_serve.shutdown()


def adapter(options, seed):
    shapes = HFBackend(options).adapter_shapes()
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0, 0.3, shape).astype(np.float32) for name, shape in shapes.items()}


def local_topk(options, arrays):
    backend = HFBackend(options)
    if arrays is not None:
        backend.set_adapter(arrays)
    return backend.topk_logits(TOKENS, 4)[0]


def replicas():
    return [a for a in ray.util.list_named_actors(all_namespaces=True) if f"{APP}#LLMServer" in a["name"]]


def test_the_published_adapter_serves_the_next_requests_on_every_replica(handle, options):
    base = handle.broadcast("topk_logits", TOKENS, 4).results(timeout_s=60)
    assert len(base) == 2 and all(r[0].adapter_version == 0 for r in base)
    arrays = adapter(options, 1)
    assert publish_adapter(handle, arrays, 1) == 1 and current_adapter_version(handle) == 1
    expected = local_topk(options, arrays)
    after = handle.broadcast("topk_logits", TOKENS, 4).results(timeout_s=60)
    for (result,) in after:
        assert result.adapter_version == 1
        np.testing.assert_array_equal(result.ids, expected.ids)
        np.testing.assert_array_equal(result.values, expected.values)
    assert not np.array_equal(after[0][0].values, base[0][0].values)
    completions = handle.broadcast("complete", ["the cat sat on"], GREEDY).results(timeout_s=60)
    assert [c[0].adapter_version for c in completions] == [1, 1]
    assert [s["adapter_version"] for s in handle.broadcast("stats").results(timeout_s=60)] == [1, 1]


def test_a_stale_version_is_refused(handle, options):
    current = current_adapter_version(handle)
    with pytest.raises(AdapterError, match="not newer than the current version"):
        publish_adapter(handle, adapter(options, 2), current)


def test_a_killed_replica_comes_back_serving_the_current_version(handle, options):
    arrays = adapter(options, 3)
    version = publish_adapter(handle, arrays, current_adapter_version(handle) + 1)
    victim = replicas()[0]
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        names = {a["name"] for a in replicas()}
        if len(names) == 2 and victim["name"] not in names:
            try:
                results = handle.broadcast("topk_logits", TOKENS, 4).results(timeout_s=30)
                if len(results) == 2:
                    break
            except Exception:  # the replacement is still starting
                pass
        time.sleep(0.5)
    else:
        pytest.fail("Serve did not bring a replacement replica up within 120 s")
    expected = local_topk(options, arrays)
    for (result,) in results:
        assert result.adapter_version == version
        np.testing.assert_array_equal(result.values, expected.values)


def test_stopping_the_deployment_removes_its_store(ray_session, options):
    stop_name = "llm-versions-stop"
    start_llm_deployment(ServeSettings(backend_options=options, num_cpus=0.25), name=stop_name)
    assert ray.get_actor(store_name(stop_name), namespace=STORE_NAMESPACE)
    stop_llm_deployment(stop_name)
    with pytest.raises(ValueError):
        ray.get_actor(store_name(stop_name), namespace=STORE_NAMESPACE)
