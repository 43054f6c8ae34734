"""InProcessLLM: the hf backend as an LLMClient in this process, recording every call."""
from serve.inprocess import InProcessLLM


def test_generate_answers_each_prompt_like_the_backend_and_records_the_call(tiny_llm_path):
    llm = InProcessLLM(tiny_llm_path)
    prompts = ["Question: where is Mia?\nRationale:", "Question: 3 + 4\nAnswer:"]
    params = {"max_new_tokens": 4, "temperature": 0.0}
    replies = llm.generate(prompts, params)
    assert len(replies) == 2 and all(isinstance(reply, str) for reply in replies)
    assert llm.generate(prompts[:1], params) == replies[:1]  # greedy: the same reply alone as in a batch
    assert llm.calls == [(prompts, replies), (prompts[:1], replies[:1])]
