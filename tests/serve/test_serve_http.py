"""The OpenAI-compatible route of serve/deployment.py, and the openai backend against it.

The one test module that runs Serve with its HTTP proxy (127.0.0.1, a free port). Its
application runs unbatched (max_batch_size 1), which is also tested here.
"""
import socket

import httpx
import pytest
from ray import serve as ray_serve

from serve.app import replica_stats, start_llm_deployment, stop_llm_deployment
from serve.backends.openai import OpenAIBackend
from serve.errors import TopKUnsupportedError
from serve.params import GenerationParams
from serve.settings import ServeSettings

MODEL = "tiny-llm"
GREEDY = GenerationParams(max_new_tokens=6)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(ray_session, tiny_llm_path):
    port = free_port()
    settings = ServeSettings(backend_options={"model_path": str(tiny_llm_path)}, model_name=MODEL,
                             max_batch_size=1, max_ongoing_requests=16, num_cpus=0.25)
    handle = start_llm_deployment(settings, name="llm-http", http=True, host="127.0.0.1", port=port)
    yield handle, f"http://127.0.0.1:{port}"
    stop_llm_deployment("llm-http")
    ray_serve.shutdown()


def test_openai_backend_against_the_route(served, prompts):
    handle, base_url = served
    backend = OpenAIBackend({"base_url": f"{base_url}/v1", "model": MODEL, "timeout_s": 30})
    completions = backend.generate(prompts, GREEDY.rows(len(prompts)))
    assert [c.text for c in completions] == handle.generate.remote(prompts, GREEDY).result()
    stop = completions[0].text.split()[1]
    with_stop = backend.generate(prompts[:1], GenerationParams(max_new_tokens=6, stop=(stop,)).rows(1))
    assert with_stop[0].text == completions[0].text[:completions[0].text.find(stop)]
    with pytest.raises(TopKUnsupportedError, match="HTTP 400"):
        backend.topk_logits([[5, 6, 7]], k=3)


def test_route_speaks_the_legacy_completions_format(served):
    _, base_url = served
    answer = httpx.post(f"{base_url}/v1/completions", timeout=30, json={
        "model": MODEL, "prompt": ["the cat", "one two three"], "max_tokens": 3, "temperature": 0})
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "text_completion" and body["model"] == MODEL
    assert [choice["index"] for choice in body["choices"]] == [0, 1]
    assert all(choice["finish_reason"] in ("stop", "length") for choice in body["choices"])
    usage = body["usage"]
    assert usage["prompt_tokens"] == 5 and usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    single = httpx.post(f"{base_url}/v1/completions", json={"prompt": "the cat", "max_tokens": 2}, timeout=30)
    assert single.status_code == 200 and len(single.json()["choices"]) == 1


@pytest.mark.parametrize("body, status, message", [
    ({"model": "gpt-9", "prompt": "a"}, 404, "not served here"),
    ({"prompt": "a", "logprobs": 2}, 400, "logprobs"),
    ({"prompt": "a", "max_tokens": 0}, 400, "max_new_tokens"),
    ({"prompt": [[1, 2]]}, 400, "token-id prompts"),
])
def test_route_rejects_what_it_cannot_serve(served, body, status, message):
    _, base_url = served
    answer = httpx.post(f"{base_url}/v1/completions", json=body, timeout=30)
    assert answer.status_code == status and message in answer.json()["error"]["message"]


def test_max_batch_size_one_never_merges(served):
    handle, _ = served
    handle.reset_stats.remote().result()
    responses = [handle.topk_logits.remote([[5, 6, 7]], 3) for _ in range(6)]
    assert all(len(response.result()) == 1 for response in responses)
    (stats,) = [replica["topk_logits"] for replica in replica_stats(handle)]
    assert stats["batches"] == 6 and stats["max_batch_requests"] == 1
