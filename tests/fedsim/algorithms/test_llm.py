"""The metered LLM client: every request and response a message with its real payload, the LLM's time
from the declared throughput or the clock, the server's own calls timed but not communication."""
import itertools

import numpy as np
import pytest

from fedsim.algorithms.llm import MeteredLLM
from fedsim.comm import SERVER, ByteLedger, payload_nbytes
from fedsim.config import LLMSettings
from serve.inprocess import InProcessLLM

PARAMS = {"max_new_tokens": 4, "temperature": 0.0}
PROMPTS = ["the cat sat on", "one two three four"]


@pytest.fixture(scope="module")
def endpoint(tiny_llm_path):
    return InProcessLLM(tiny_llm_path)


def test_each_llm_message_kind_counts_exactly_its_payload(endpoint):
    llm = MeteredLLM(endpoint, 3, LLMSettings())
    texts = llm.generate(PROMPTS, PARAMS, "prompts", "rationales")
    tokens = [[1, 5, 6, 7], [1, 8, 9]]
    topk = llm.topk_logits(tokens, k=5)
    messages, _ = llm.take()
    assert [(m.kind, m.sender, m.receiver) for m in messages] == [
        ("prompts", 3, SERVER), ("rationales", SERVER, 3), ("topk_tokens", 3, SERVER), ("topk", SERVER, 3)]
    ledger = ByteLedger()
    for message in messages:
        ledger.record_message(0, message)
    assert ledger.round_bytes(0) == {
        "up/prompts": sum(len(p.encode()) for p in PROMPTS),
        "down/rationales": sum(len(t.encode()) for t in texts),
        "up/topk_tokens": 8 * 7,                       # seven token ids, counted as 8-byte ints
        "down/topk": sum(r.ids.nbytes + r.values.nbytes for r in topk),
    }
    assert ledger.round_bytes(0)["down/topk"] == 7 * 5 * (4 + 2)  # 6 bytes per kept entry
    assert llm.take() == ([], 0.0)


def test_declared_time_is_tokens_over_throughput(endpoint):
    llm = MeteredLLM(endpoint, 0, LLMSettings(time="declared", tokens_per_s=100.0))
    completions = endpoint.complete(PROMPTS, PARAMS)
    llm.generate(PROMPTS, PARAMS)
    tokens = sum(c.prompt_tokens + c.completion_tokens for c in completions)
    llm.topk_logits([[1, 2, 3]], k=2)
    assert llm.seconds == pytest.approx((tokens + 3) / 100.0)


def test_measured_time_is_the_wall_time_of_each_request(endpoint):
    ticks = itertools.count(0.0, 0.5)  # each clock read advances 0.5 s
    llm = MeteredLLM(endpoint, 0, LLMSettings(time="measured"), clock=lambda: next(ticks))
    llm.generate(PROMPTS, PARAMS)
    llm.topk_logits([[1, 2]], k=2)
    assert llm.seconds == pytest.approx(1.0)


def test_the_servers_own_calls_are_timed_not_communicated(endpoint):
    llm = MeteredLLM(endpoint, SERVER, LLMSettings())
    llm.generate(PROMPTS, PARAMS)
    assert llm.messages == [] and llm.seconds > 0


def test_responses_name_the_adapter_version_they_used(tiny_llm_path):
    lora_options = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    endpoint = InProcessLLM(tiny_llm_path, options={"lora": lora_options})
    llm = MeteredLLM(endpoint, 1, LLMSettings())
    before = llm.topk_logits([[1, 5, 6]], k=3)[0]
    assert llm.adapter_version == 0
    shapes = endpoint.backend.adapter_shapes()
    rng = np.random.default_rng(0)
    for _ in range(4):
        endpoint.publish({name: rng.normal(0, 0.5, shape).astype(np.float32) for name, shape in shapes.items()})
    after = llm.topk_logits([[1, 5, 6]], k=3)[0]
    assert llm.adapter_version == after.adapter_version == 4
    assert not np.array_equal(before.values, after.values)
    assert payload_nbytes(after) == payload_nbytes(before)  # the version is metadata, not payload
