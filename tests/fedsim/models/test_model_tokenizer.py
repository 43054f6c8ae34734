"""Which tokenizer a model uses (fedsim.models.presets.model_tokenizer), and that the worker and the
server trainer build a Unigram preset with it."""
import pytest
import torch

from fedsim.config import validate
from fedsim.data.federated import build_federated_data
from fedsim.data.task import generate_examples
from fedsim.engine.worker import WorkerRuntime
from fedsim.models.lora import LoraSettings
from fedsim.models.presets import (
    PRESETS,
    ModelPathError,
    build_model,
    load_model,
    model_tokenizer,
    save_pretrained,
)
from fedsim.models.tokenizer import builtin_tokenizer
from fedsim.server.settings import ServerTrainerSettings
from fedsim.server.trainer import ServerTrainer
from fedsim.train.batching import encode_for_training


def kind(tokenizer) -> str:
    """The backend model's type: 'BPE' or 'Unigram'."""
    return type(tokenizer.backend_tokenizer.model).__name__


def test_presets_name_their_tokenizers():
    assert {"gpt2-0.3m-uni", "llama-0.3m-uni"} <= {name for name, spec in PRESETS.items() if spec.tokenizer == "unigram"}
    assert PRESETS["gpt2-0.3m"].tokenizer == "bpe"
    assert model_tokenizer("gpt2-0.3m") is builtin_tokenizer()
    assert model_tokenizer("gpt2-0.3m-uni") is builtin_tokenizer("unigram")
    assert model_tokenizer("llama-0.3m-uni") is model_tokenizer("gpt2-0.3m-uni")  # once per kind


def test_saved_models_use_the_tokenizer_saved_with_them(tmp_path, smollm2_path):
    base = model_tokenizer("gpt2-0.3m-uni-pt")
    assert kind(base) == "Unigram" and base.get_vocab() == builtin_tokenizer("unigram").get_vocab()
    assert kind(model_tokenizer("llama-0.3m-pt")) == "BPE" and len(model_tokenizer("llama-0.3m-pt")) == 562
    smollm2 = model_tokenizer(smollm2_path)
    assert kind(smollm2) == "BPE" and len(smollm2) == 49152
    model, tokenizer = load_model("llama-0.3m-uni", seed=0)
    save_pretrained(model, tokenizer, tmp_path / "m")
    assert kind(model_tokenizer(tmp_path / "m")) == "Unigram"
    with pytest.raises(ModelPathError, match="no such model directory"):
        model_tokenizer(tmp_path / "missing")


def test_a_unigram_preset_has_the_unigram_vocabulary():
    unigram = builtin_tokenizer("unigram")
    for name in ("gpt2-0.3m-uni", "llama-0.3m-uni"):
        model, tokenizer = load_model(name, seed=0)
        assert tokenizer is unigram and model.config.vocab_size == len(unigram) == 600
        assert model.get_input_embeddings().num_embeddings == 600
        assert (model.config.pad_token_id, model.config.eos_token_id) == (0, 1)
    with pytest.raises(ModelPathError, match="built for the unigram tokenizer"):
        build_model("gpt2-0.3m-uni", builtin_tokenizer(), seed=0)


def test_the_worker_builds_a_unigram_preset_with_its_tokenizer():
    config = validate({"algorithms": ["local"], "rounds": 1, "seed": 3,
                       "clients": {"num": 2, "per_round": 2, "presets": {"gpt2-0.3m-uni": 1}},
                       "task": {"test_size": 4, "public_size": 0, "train_per_client": 4}})
    worker = WorkerRuntime(config, "local", build_federated_data(config), None)
    worker.initial_payload("gpt2-0.3m-uni")
    model, tokenizer = worker.models["gpt2-0.3m-uni"]
    assert tokenizer is builtin_tokenizer("unigram")
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)


def test_the_server_trainer_encodes_with_the_unigram_of_a_unigram_preset():
    trainer = ServerTrainer(ServerTrainerSettings(device="cpu"), seed=0)
    trainer.add_model("slm", "gpt2-0.3m-uni", LoraSettings(r=2))
    examples = generate_examples(3, seed=0, split="public", min_steps=1)
    encoded = trainer.encode("slm", examples, "rationale", max_len=64)
    expected = encode_for_training(builtin_tokenizer("unigram"), examples, "rationale", max_len=64)
    assert torch.equal(encoded["input_ids"], expected["input_ids"])
