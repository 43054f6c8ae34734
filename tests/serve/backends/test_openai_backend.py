"""Tests of serve/backends/openai.py against stand-in servers (httpx.MockTransport).

The real round trip against fedsim's own route is in tests/serve/test_serve_http.py.
"""
import json

import httpx
import numpy as np
import pytest

from serve.backends.openai import OpenAIBackend
from serve.errors import AdapterError, EndpointError, TopKUnsupportedError
from serve.params import GenerationParams

OPTIONS = {"base_url": "http://llm.test/v1", "model": "m", "timeout_s": 0.5}


def backend_with(handler):
    return OpenAIBackend(OPTIONS, transport=httpx.MockTransport(handler))


def test_generate_groups_rows_by_params_and_keeps_order():
    bodies = []

    def handler(request):
        body = json.loads(request.content)
        bodies.append(body)
        assert request.url.path == "/v1/completions"
        choices = [{"index": i, "text": f"{body['temperature']}:{p}", "finish_reason": "length"}
                   for i, p in reversed(list(enumerate(body["prompt"])))]
        return httpx.Response(200, json={"choices": choices})

    params = [GenerationParams(max_new_tokens=4), GenerationParams(max_new_tokens=4, temperature=0.5, seed=3),
              GenerationParams(max_new_tokens=4)]
    completions = backend_with(handler).generate(["a", "b", "c"], params)
    assert [c.text for c in completions] == ["0.0:a", "0.5:b", "0.0:c"]
    assert sorted(len(body["prompt"]) for body in bodies) == [1, 2]
    assert any(body.get("seed") == 3 for body in bodies)


def test_topk_reads_token_id_keyed_logprobs():
    def handler(request):
        body = json.loads(request.content)
        assert body["echo"] and body["logprobs"] == 2 and body["prompt"] == [[5, 6]]
        top = [None, {"token_id:7": -0.5, "token_id:6": -1.5, "token_id:9": -3.0},
               {"token_id:1": -0.1, "token_id:2": -2.5}]
        return httpx.Response(200, json={"choices": [{"index": 0, "text": "",
                                                      "logprobs": {"top_logprobs": top}}]})

    (result,) = backend_with(handler).topk_logits([[5, 6]], k=2)
    np.testing.assert_array_equal(result.ids, [[7, 6], [1, 2]])
    np.testing.assert_allclose(result.values.astype(np.float32), [[-0.5, -1.5], [-0.1, -2.5]], atol=1e-3)


def test_topk_with_token_strings_or_refusal_is_unsupported():
    def strings(request):
        top = [None, {"cat": -0.5}, {"dog": -0.1}]
        return httpx.Response(200, json={"choices": [{"index": 0, "logprobs": {"top_logprobs": top}}]})

    with pytest.raises(TopKUnsupportedError, match="token text"):
        backend_with(strings).topk_logits([[5, 6]], k=1)
    with pytest.raises(TopKUnsupportedError, match="HTTP 400"):
        backend_with(lambda request: httpx.Response(400, text="no logprobs")).topk_logits([[5]], k=1)


def test_endpoint_failures_are_clear_errors():
    def slow(request):
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(EndpointError, match="did not answer within 0.5 s"):
        backend_with(slow).generate(["a"], [GenerationParams()])
    with pytest.raises(EndpointError, match="HTTP 503"):
        backend_with(lambda request: httpx.Response(503, text="busy")).generate(["a"], [GenerationParams()])
    with pytest.raises(EndpointError, match="choices"):
        backend_with(lambda request: httpx.Response(200, json={})).generate(["a"], [GenerationParams()])


def test_nothing_listening_is_a_connection_error():
    closed = OpenAIBackend({"base_url": "http://127.0.0.1:9", "model": "m", "timeout_s": 2.0})
    with pytest.raises(EndpointError, match="cannot reach"):
        closed.generate(["a"], [GenerationParams()])


def test_remote_adapter_cannot_be_replaced():
    with pytest.raises(AdapterError, match="external endpoint"):
        backend_with(lambda request: httpx.Response(200)).set_adapter({})
