"""DP-SGD training of FDKT's client generator on LoRA adapters of Llama and GPT-2 presets."""
import pytest
import torch
from dp_accounting.dp_event import NonPrivateDpEvent

from fedsim.data.task import Example, generate_examples
from fedsim.models.lora import LoraSettings, attach_lora
from fedsim.models.presets import load_model
from fedsim.privacy.accounting import calibrate_noise_multiplier, poisson_gaussian_event
from fedsim.privacy.dp_generator import planned_generator_event, train_generator
from fedsim.train.generator import GeneratorSettings

REVIEWS = [Example(question=f"Review {i}: the staff was {'kind' if i % 2 else 'rude'} to us.", answer=str(1 + i % 5),
                   domain="health", choices=("1", "2", "3", "4", "5")) for i in range(6)]


def lora_model(name: str):
    model, tokenizer = load_model(name, seed=0)
    torch.manual_seed(0)  # LoRA's A is drawn from the global generator
    return attach_lora(model, LoraSettings(r=4, dropout=0.0)), tokenizer


def snapshot(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, bool]]:
    return {name: (p.detach().clone(), p.requires_grad) for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["llama-0.3m-pt", "gpt2-0.3m"])
def test_training_returns_the_calibrated_event_and_changes_only_lora_weights(name):
    model, tokenizer = lora_model(name)
    examples = generate_examples(8, seed=2, domain_weights={"travel": 1.0}) + REVIEWS[:2]
    settings = GeneratorSettings(eps=8.0, delta=1e-5, steps=3, batch_size=4, lr=0.01)
    before = snapshot(model)
    result = train_generator(model, tokenizer, examples, settings, torch.Generator().manual_seed(0))
    sigma = calibrate_noise_multiplier(8.0, 1e-5, 0.4, 3)
    assert (result.noise_multiplier, result.sample_rate, result.steps) == (sigma, 0.4, 3)
    assert result.event == poisson_gaussian_event(sigma, 0.4, 3) == planned_generator_event(settings, 10)
    assert len(result.stats) == 3
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n][0])}
    assert changed and all(before[n][1] and "lora_" in n for n in changed)


def test_eps_inf_trains_without_noise_and_is_a_non_private_release():
    settings = GeneratorSettings(eps=float("inf"), steps=2, batch_size=len(REVIEWS), lr=0.01)
    assert planned_generator_event(settings, len(REVIEWS)) == NonPrivateDpEvent()
    weights = []
    for seed in (0, 1):  # q = 1 and no noise: the generator's stream cannot change the result
        model, tokenizer = lora_model("llama-0.3m-pt")
        result = train_generator(model, tokenizer, REVIEWS, settings, torch.Generator().manual_seed(seed))
        assert (result.event, result.noise_multiplier, result.sample_rate) == (NonPrivateDpEvent(), 0.0, 1.0)
        weights.append([p.detach().clone() for p in model.parameters() if p.requires_grad])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    noisy = GeneratorSettings(eps=8.0, steps=2, batch_size=len(REVIEWS), lr=0.01)
    model, tokenizer = lora_model("llama-0.3m-pt")
    train_generator(model, tokenizer, REVIEWS, noisy, torch.Generator().manual_seed(0))
    assert not all(torch.equal(a, p) for a, p in zip(weights[0], (p for p in model.parameters() if p.requires_grad)))
