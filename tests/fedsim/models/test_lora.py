"""Tests of LoRA attachment and adapter exchange."""
import numpy as np
import peft
import pytest
import torch

from fedsim.models.lora import (
    AdapterMismatchError,
    LoraSettings,
    adapter_num_params,
    attach_lora,
    get_adapter,
    set_adapter,
)
from fedsim.models.presets import PRESETS, build_model

IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 250]])


def _logits(model):
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _random_like(adapter, seed):
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0, 0.1, array.shape).astype(np.float32) for name, array in adapter.items()}


@pytest.mark.parametrize("preset, targets, expected", [
    ("llama-0.3m", "attention", 5 * 4 * 8 * (64 + 64)),
    ("llama-0.3m", "all-linear", 5 * 8 * (4 * 128 + 3 * (64 + 176))),
    ("gpt2-0.3m", "attention", 5 * 8 * ((64 + 192) + (64 + 64))),
    ("gpt2-0.3m", "all-linear", 5 * 8 * ((64 + 192) + (64 + 64) + (64 + 256) + (256 + 64))),
])
def test_adapter_sizes_follow_the_formula(tokenizer, preset, targets, expected):
    settings = LoraSettings(r=8, target_modules=targets, train_embeddings=False, train_norms=False)
    model = attach_lora(build_model(preset, tokenizer, 0), settings)
    assert adapter_num_params(model) == expected
    assert all(".default." not in name and not name.startswith("base_model") for name in get_adapter(model))


@pytest.mark.parametrize("preset, norm_params", [
    ("llama-0.3m", (5 * 2 + 1) * 64),  # two RMSNorm weights per layer and a final one
    ("gpt2-0.3m", (5 * 2 + 1) * 2 * 64),  # LayerNorms have a weight and a bias
])
def test_embeddings_and_norms_add_their_parameters(tokenizer, preset, norm_params):
    def size(**flags):
        return adapter_num_params(attach_lora(build_model(preset, tokenizer, 0), LoraSettings(**flags)))

    plain = size(train_embeddings=False, train_norms=False)
    embedding = len(tokenizer) * PRESETS[preset].hidden_size  # tied: counted once
    assert size(train_embeddings=True, train_norms=False) == plain + embedding
    assert size(train_embeddings=False, train_norms=True) == plain + norm_params
    assert size(train_embeddings=True, train_norms=True) == plain + embedding + norm_params
    assert size() == plain  # the defaults train neither


def test_set_adapter_changes_outputs_exactly_as_a_merged_update(tokenizer):
    settings = LoraSettings(r=4, alpha=8, target_modules="attention", train_embeddings=False, train_norms=False)
    model = attach_lora(build_model("llama-0.3m", tokenizer, 3), settings)
    original = get_adapter(model)
    before = _logits(model)
    update = _random_like(original, seed=0)
    set_adapter(model, update)
    after = _logits(model)
    assert not torch.allclose(before, after)

    reference = build_model("llama-0.3m", tokenizer, 3)
    scale = settings.alpha / settings.r
    with torch.no_grad():
        for name, module in reference.named_modules():
            if name.split(".")[-1] in ("q_proj", "k_proj", "v_proj", "o_proj"):
                lora_a = torch.from_numpy(update[f"{name}.lora_A.weight"])
                lora_b = torch.from_numpy(update[f"{name}.lora_B.weight"])
                module.weight += scale * lora_b @ lora_a
    assert torch.allclose(after, _logits(reference), atol=1e-5)

    set_adapter(model, original)
    assert torch.equal(_logits(model), before)
    assert all(np.array_equal(get_adapter(model)[k], original[k]) for k in original)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_keys_do_not_depend_on_the_peft_adapter_name(tokenizer):
    settings = LoraSettings(target_modules="attention", train_embeddings=False, train_norms=False)
    ours = attach_lora(build_model("gpt2-0.3m", tokenizer, 0), settings)
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=r".*\.attn\.c_attn|.*\.attn\.c_proj",
                             fan_in_fan_out=True, task_type="CAUSAL_LM")
    theirs = peft.get_peft_model(build_model("gpt2-0.3m", tokenizer, 0), config, adapter_name="client7")
    assert list(get_adapter(ours)) == list(get_adapter(theirs))
    set_adapter(theirs, get_adapter(ours))


def test_adapter_round_trip_with_embeddings_and_norms(tokenizer):
    model = attach_lora(build_model("gpt2-0.3m", tokenizer, 1), LoraSettings(train_embeddings=True, train_norms=True))
    original, before = get_adapter(model), _logits(model)
    assert {"transformer.wte.weight", "transformer.ln_f.bias"} <= set(original)
    changed = dict(original)
    changed["transformer.wte.weight"] = original["transformer.wte.weight"] * 2
    set_adapter(model, changed)
    assert torch.equal(model.get_output_embeddings().weight, model.get_input_embeddings().weight)
    assert torch.equal(model.get_input_embeddings().weight, torch.from_numpy(changed["transformer.wte.weight"]))
    assert not torch.allclose(_logits(model), before)
    set_adapter(model, original)
    assert torch.equal(_logits(model), before)


def test_set_adapter_rejects_wrong_names_and_shapes(tokenizer):
    model = attach_lora(build_model("llama-0.3m", tokenizer, 0), LoraSettings())
    adapter = get_adapter(model)
    name = next(iter(adapter))
    with pytest.raises(AdapterMismatchError, match="shape"):
        set_adapter(model, {**adapter, name: np.zeros((1, 2), np.float32)})
    with pytest.raises(AdapterMismatchError, match="missing"):
        set_adapter(model, {k: v for k, v in adapter.items() if k != name})
    with pytest.raises(AdapterMismatchError, match="unexpected"):
        set_adapter(model, {**adapter, "extra.weight": np.zeros(3, np.float32)})


def test_bad_settings(tokenizer):
    with pytest.raises(ValueError, match="target_modules"):
        attach_lora(build_model("llama-0.3m", tokenizer, 0), LoraSettings(target_modules="mlp"))
    with pytest.raises(ValueError, match="rank"):
        attach_lora(build_model("llama-0.3m", tokenizer, 0), LoraSettings(r=0))
