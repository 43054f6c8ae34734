"""Tests of the local training loop and of generation / exact match."""
import torch

from fedsim.data.prompts import render_prompt
from fedsim.data.task import generate_examples
from fedsim.models.lora import LoraSettings, attach_lora
from fedsim.models.presets import build_model
from fedsim.train.batching import encode_for_training
from fedsim.train.evaluate import exact_match, generate_texts
from fedsim.train.local import make_optimizer, train_steps


def _train(tokenizer, examples, mode, steps, seed=0, lora=False):
    model = build_model("llama-0.3m", tokenizer, seed=seed)
    if lora:
        model = attach_lora(model, LoraSettings())
    encoded = encode_for_training(tokenizer, examples, mode, max_len=128)
    optimizer = make_optimizer(model, lr=3e-3)
    stats = train_steps(model, encoded, optimizer, steps, batch_size=4, generator=torch.Generator().manual_seed(seed))
    return model, stats


def test_training_lowers_the_loss_and_is_deterministic(tokenizer):
    examples = generate_examples(16, seed=0)
    model, first = _train(tokenizer, examples, "answer", steps=3)
    _, longer = _train(tokenizer, examples, "answer", steps=40)
    assert longer.final_loss < 0.5 * first.mean_loss
    assert longer.steps == 40 and longer.samples == 160 and longer.tokens == 160 * 2
    again, repeat = _train(tokenizer, examples, "answer", steps=3)
    assert repeat == first
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))


def test_overfit_model_gets_exact_match_one(tokenizer):
    examples = generate_examples(4, seed=1, min_steps=2, max_steps=2)
    model, _ = _train(tokenizer, examples, "rationale", steps=120)
    assert exact_match(model, tokenizer, examples, "rationale", batch_size=3) == 1.0
    texts = generate_texts(model, tokenizer, [render_prompt(e, "rationale") for e in examples], 24)
    assert [t.strip() for t in texts] == [f"{e.rationale} #### {e.answer}" for e in examples]


def test_batched_left_padded_generation_matches_one_by_one(tokenizer):
    model = build_model("gpt2-0.3m", tokenizer, seed=4)
    prompts = [render_prompt(e, "answer") for e in generate_examples(5, seed=3, min_steps=1, max_steps=4)]
    batched = generate_texts(model, tokenizer, prompts, max_new_tokens=6, batch_size=5)
    single = [generate_texts(model, tokenizer, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == single


def test_generation_restores_the_training_mode(tokenizer):
    model = build_model("gpt2-0.3m", tokenizer, seed=4)
    for training in (True, False):
        model.train(training)
        generate_texts(model, tokenizer, ["Question: Where is Tom now?\nAnswer:"], max_new_tokens=2)
        assert model.training is training


def test_lora_model_trains_only_its_adapter(tokenizer):
    examples = generate_examples(8, seed=2)
    model, stats = _train(tokenizer, examples, "answer", steps=5, lora=True)
    frozen = [p for n, p in model.named_parameters() if "layers.0.mlp.up_proj.base_layer" in n]
    assert frozen and not frozen[0].requires_grad
    assert stats.final_loss > 0
