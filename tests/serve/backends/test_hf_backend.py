"""Tests of serve/backends/hf.py on the tiny random LLM, loaded by path (no Serve)."""
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from serve.backends.hf import HFBackend, cut_at_stop
from serve.errors import AdapterError, ModelLoadError, RequestError
from serve.params import GenerationParams


@pytest.fixture(scope="module")
def backend(tiny_llm_path, lora_options):
    return HFBackend({"model_path": str(tiny_llm_path), "lora": lora_options})


def greedy(n_rows, max_new_tokens=8, **kwargs):
    return GenerationParams(max_new_tokens=max_new_tokens, **kwargs).rows(n_rows)


def test_bad_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not a directory"):
        HFBackend({"model_path": str(tmp_path / "missing")})
    with pytest.raises(ModelLoadError, match="config.json"):
        HFBackend({"model_path": str(tmp_path)})


def test_one_text_per_prompt_within_max_new_tokens(backend, prompts):
    completions = backend.generate(prompts, greedy(len(prompts), max_new_tokens=5))
    assert len(completions) == len(prompts)
    for completion, prompt in zip(completions, prompts):
        assert completion.completion_tokens <= 5 and len(completion.text.split()) <= 5
        assert completion.prompt_tokens == len(prompt.split())
        assert completion.finish_reason in ("stop", "length")


def test_greedy_is_deterministic_and_independent_of_batch(backend, prompts):
    together = [c.text for c in backend.generate(prompts, greedy(len(prompts)))]
    assert together == [c.text for c in backend.generate(prompts, greedy(len(prompts)))]
    alone = [backend.generate([prompt], greedy(1))[0].text for prompt in prompts]
    assert together == alone


def test_each_row_keeps_its_own_max_new_tokens(backend, prompts):
    params = [GenerationParams(max_new_tokens=n) for n in (1, 3, 12, 6)]
    for prompt, p, completion in zip(prompts, params, backend.generate(prompts, params)):
        assert completion.completion_tokens <= p.max_new_tokens
        assert completion.text == backend.generate([prompt], [p])[0].text


def test_stop_string_truncates_at_its_first_occurrence(backend, prompts):
    full = backend.generate(prompts, greedy(len(prompts), max_new_tokens=12))
    row, words = next((i, c.text.split()) for i, c in enumerate(full) if len(c.text.split()) >= 4)
    stop = words[2]
    cut = backend.generate([prompts[row]], greedy(1, max_new_tokens=12, stop=(stop,)))[0]
    assert cut.text == full[row].text[:full[row].text.find(stop)]
    assert cut.finish_reason == "stop" and stop not in cut.text


def test_cut_at_stop_uses_the_earliest_stop():
    assert cut_at_stop("a b END c STOP", ("STOP", "END")) == ("a b ", True)
    assert cut_at_stop("a b", ("END",)) == ("a b", False)


def test_seeded_sampling_is_reproducible_and_batch_independent(backend, prompts):
    sampled = GenerationParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    first = [c.text for c in backend.generate(prompts, sampled.rows(len(prompts)))]
    assert first == [c.text for c in backend.generate(prompts, sampled.rows(len(prompts)))]
    mixed_batch = ["a big red dog"] + prompts[:2]
    mixed_params = greedy(1) + sampled.rows(2)
    assert [c.text for c in backend.generate(mixed_batch, mixed_params)][1:] == first[:2]
    other_seed = GenerationParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=8)
    assert first != [c.text for c in backend.generate(prompts, other_seed.rows(len(prompts)))]


@pytest.mark.parametrize("sequences", [
    [[5, 9, 12, 7, 30], [4, 8], [11, 3, 22, 40, 41, 42, 6]],  # padded batch
    [[5, 9, 12], [4, 8, 20]],  # equal lengths: no padding
])
def test_topk_matches_the_models_own_logits(backend, tiny_llm_path, sequences):
    results = backend.topk_logits(sequences, k=6)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_path, local_files_only=True).eval()
    for tokens, result in zip(sequences, results):
        assert result.ids.dtype == np.int32 and result.values.dtype == np.float16
        assert result.ids.shape == result.values.shape == (len(tokens), 6)
        with torch.no_grad():
            logits = model(torch.tensor([tokens])).logits[0]
        expected_values, expected_ids = logits.topk(6, dim=-1)
        np.testing.assert_array_equal(result.ids, expected_ids.numpy())
        np.testing.assert_allclose(result.values.astype(np.float32), expected_values.numpy(),
                                   rtol=2e-3, atol=2e-3)


def test_topk_rejects_bad_input(backend):
    vocab = backend.tokenizer_info().vocab_size
    with pytest.raises(RequestError, match="outside"):
        backend.topk_logits([[1, vocab]], k=2)
    with pytest.raises(RequestError, match="empty"):
        backend.topk_logits([[]], k=2)
    with pytest.raises(RequestError, match="k must be"):
        backend.topk_logits([[1, 2]], k=vocab + 1)


def test_too_long_prompt_is_a_request_error(backend):
    with pytest.raises(RequestError, match="max_position_embeddings"):
        backend.generate(["one " * 300], greedy(1))


def test_set_adapter_changes_outputs_and_checks_names_and_shapes(backend, prompts):
    shapes = backend.adapter_shapes()
    assert shapes and all(n.startswith("model.layers.") and n.endswith((".lora_A.weight", ".lora_B.weight"))
                          for n in shapes)
    before = [c.text for c in backend.generate(prompts, greedy(len(prompts)))]
    rng = np.random.default_rng(0)
    backend.set_adapter({name: rng.normal(size=shape) for name, shape in shapes.items()})
    after = [c.text for c in backend.generate(prompts, greedy(len(prompts)))]
    assert after != before
    backend.set_adapter({name: np.zeros(shape) for name, shape in shapes.items()})
    assert [c.text for c in backend.generate(prompts, greedy(len(prompts)))] == before

    name = next(iter(shapes))
    with pytest.raises(AdapterError, match="missing"):
        backend.set_adapter({name: np.zeros(shapes[name])})
    wrong = {n: np.zeros(s) for n, s in shapes.items()}
    wrong[name] = np.zeros((1, 1))
    with pytest.raises(AdapterError, match="shape"):
        backend.set_adapter(wrong)


def test_adapter_names_are_fedsims_lora_names(backend, tiny_llm_path, lora_options):
    """What fedsim.models.lora.get_adapter returns for the same model plugs straight in."""
    from fedsim.models.lora import LoraSettings, attach_lora, get_adapter

    trainer_side = attach_lora(AutoModelForCausalLM.from_pretrained(tiny_llm_path, local_files_only=True),
                               LoraSettings(**lora_options))
    arrays = get_adapter(trainer_side)
    assert {name: array.shape for name, array in arrays.items()} == backend.adapter_shapes()
    backend.set_adapter(arrays)


def test_without_lora_set_adapter_is_refused(tiny_llm_path):
    plain = HFBackend({"model_path": str(tiny_llm_path)})
    assert plain.adapter_shapes() == {}
    with pytest.raises(AdapterError, match="no LoRA"):
        plain.set_adapter({})
