"""Tests of serve/deployment.py and serve/app.py through deployment handles (no HTTP proxy).

One Serve instance for the module, serving the tiny LLM with a LoRA and batching on.
max_batch_size 1 is tested in test_serve_http.py, whose application runs unbatched.
"""
import numpy as np
import pytest
import ray
from ray import serve as ray_serve

from serve.app import publish_adapter, replica_stats, start_llm_deployment, stop_llm_deployment
from serve.backends.hf import HFBackend
from serve.errors import AdapterError, DeploymentStartError, RequestError, ServeConfigError
from serve.params import GenerationParams
from serve.settings import ServeSettings

GREEDY = GenerationParams(max_new_tokens=6)


@pytest.fixture(scope="module")
def settings(tiny_llm_path, lora_options):
    return ServeSettings(backend_options={"model_path": str(tiny_llm_path), "lora": lora_options},
                         max_batch_size=16, batch_wait_timeout_s=0.05, num_cpus=0.25)


@pytest.fixture(scope="module")
def batched(ray_session, settings):
    handle = start_llm_deployment(settings, name="llm-batched")
    yield handle
    stop_llm_deployment("llm-batched")
    ray_serve.shutdown()


@pytest.fixture(scope="module")
def local_backend(tiny_llm_path, lora_options):
    """The same model in this process, to check what the deployment returns."""
    return HFBackend({"model_path": str(tiny_llm_path), "lora": lora_options})


def test_generate_returns_one_text_per_prompt(batched, local_backend, prompts):
    texts = batched.generate.remote(prompts, GREEDY).result()
    assert texts == [c.text for c in local_backend.generate(prompts, GREEDY.rows(len(prompts)))]
    assert batched.generate.remote(prompts, {"max_new_tokens": 6}).result() == texts
    assert batched.generate.remote([], GREEDY).result() == []


def test_topk_logits_over_the_handle(batched, local_backend):
    sequences = [[5, 9, 12], [4, 8, 15, 16, 23]]
    results = batched.topk_logits.remote(sequences, 4).result()
    expected = local_backend.topk_logits(sequences, 4)
    for result, reference, tokens in zip(results, expected, sequences):
        assert result.ids.shape == (len(tokens), 4) and result.values.dtype == np.float16
        np.testing.assert_array_equal(result.ids, reference.ids)
        np.testing.assert_allclose(result.values, reference.values, atol=2e-3)
    vocab = batched.tokenizer_info.remote().result().vocab_size
    with pytest.raises(RequestError, match="outside"):
        batched.topk_logits.remote([[0, vocab]], 4).result()


def test_concurrent_callers_are_batched(batched, prompts):
    batched.reset_stats.remote().result()
    responses = [batched.generate.remote(prompts[:3], GREEDY) for _ in range(8)]
    texts = [response.result() for response in responses]
    assert all(len(t) == 3 for t in texts) and all(t == texts[0] for t in texts)
    (stats,) = [replica["generate"] for replica in replica_stats(batched)]
    assert stats["requests"] == 8 and stats["items"] == 24
    assert stats["mean_batch_requests"] > 1
    assert stats["latency_p50_s"] > 0 and stats["latency_p95_s"] >= stats["latency_p50_s"]


def test_a_bad_request_fails_alone_inside_a_batch(batched, prompts):
    good = [batched.generate.remote(prompts[:2], GREEDY) for _ in range(3)]
    bad = batched.generate.remote(["one " * 300], GREEDY)
    assert all(len(response.result()) == 2 for response in good)
    with pytest.raises(RequestError, match="max_position_embeddings"):
        bad.result()


def test_calls_from_inside_a_ray_actor(batched, prompts):

    @ray.remote(num_cpus=0)
    class Caller:
        def __init__(self, handle):
            self.handle = handle

        def ask(self, asked):
            return self.handle.generate.remote(asked, GenerationParams(max_new_tokens=6)).result()

    caller = Caller.remote(batched)
    try:
        assert ray.get(caller.ask.remote(prompts), timeout=60) == batched.generate.remote(prompts, GREEDY).result()
    finally:
        ray.kill(caller)


def test_adapter_swap_is_atomic_per_batch(batched, prompts):
    shapes = batched.adapter_shapes.remote().result()
    zeros = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    rng = np.random.default_rng(1)
    trained = {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}

    from serve.app import current_adapter_version

    version = current_adapter_version(batched)
    publish_adapter(batched, zeros, version + 1)
    old = batched.generate.remote(prompts, GREEDY).result()
    publish_adapter(batched, trained, version + 2)
    new = batched.generate.remote(prompts, GREEDY).result()
    assert new != old

    publish_adapter(batched, zeros, version + 3)
    during = [batched.generate.remote(prompts, GREEDY) for _ in range(6)]
    swap = batched.set_adapter.remote(trained)
    during += [batched.generate.remote(prompts, GREEDY) for _ in range(6)]
    swap.result()
    after = [batched.generate.remote(prompts, GREEDY) for _ in range(4)]
    for response in during:
        assert response.result() in (old, new)  # all rows of a request from one adapter
    assert all(response.result() == new for response in after)

    with pytest.raises(AdapterError, match="shape"):
        batched.set_adapter.remote({**zeros, next(iter(shapes)): np.zeros((2, 2))}).result()


def test_http_needs_a_serve_started_with_a_proxy(batched, settings):
    with pytest.raises(ServeConfigError, match="without an HTTP proxy"):
        start_llm_deployment(settings, name="llm-http-refused", http=True)


def test_bad_model_path_fails_the_start_with_the_backends_message(batched, tmp_path):
    broken = ServeSettings(backend_options={"model_path": str(tmp_path / "no-model")}, num_cpus=0.25)
    with pytest.raises(DeploymentStartError, match="ModelLoadError: hf backend: model_path .* is not a directory"):
        start_llm_deployment(broken, name="llm-bad-path")
    assert "llm-bad-path" not in ray_serve.status().applications
