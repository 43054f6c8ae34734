"""Tests of the tiny presets and local model loading."""
import re

import pytest
import torch

from fedsim.models.presets import (
    PRESETS,
    ModelPathError,
    architecture_key,
    build_model,
    check_model_name,
    load_model,
    load_pretrained,
    model_directory,
    model_tokenizer,
    num_parameters,
    save_pretrained,
)
from fedsim.models.tokenizer import builtin_tokenizer
from fedsim.pretrain import load_report


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_parameter_counts_match_the_names(name):
    millions = float(re.search(r"-([\d.]+)m(-uni|-sbpe)?$", name).group(1))
    count = num_parameters(build_model(name, model_tokenizer(name), seed=0))
    assert 0.8 * millions * 1e6 <= count <= 1.25 * millions * 1e6, count


def test_both_architectures_are_present():
    assert {spec.architecture for spec in PRESETS.values()} == {"llama", "gpt2"}


def test_seed_decides_the_weights(tokenizer):
    first, again, other = (build_model("llama-0.3m", tokenizer, seed) for seed in (1, 1, 2))
    weights = [m.get_input_embeddings().weight for m in (first, again, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_save_and_load_round_trip(tmp_path, tokenizer):
    model = build_model("gpt2-0.3m", tokenizer, seed=0)
    save_pretrained(model, tokenizer, tmp_path / "m")
    loaded, loaded_tokenizer = load_pretrained(tmp_path / "m")
    ids = torch.tensor([tokenizer.encode("Question: Where is Mia now?")])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits)
    assert loaded_tokenizer.encode("Mia 7") == tokenizer.encode("Mia 7")
    rebuilt = build_model(str(tmp_path / "m"), tokenizer, seed=5)
    assert torch.equal(rebuilt.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert architecture_key(str(tmp_path / "m")) == str((tmp_path / "m").resolve())
    assert architecture_key("gpt2-0.3m") == "gpt2-0.3m"


def test_model_path_errors(tmp_path, tokenizer):
    with pytest.raises(ModelPathError, match="no such model directory"):
        load_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelPathError, match="no config.json"):
        load_pretrained(tmp_path / "empty")
    save_pretrained(build_model("llama-0.3m", tokenizer, seed=0), tokenizer, tmp_path / "broken")
    for weights in (tmp_path / "broken").glob("*.safetensors"):
        weights.write_bytes(b"garbage")
    with pytest.raises(ModelPathError, match="could not load the model weights"):
        load_pretrained(tmp_path / "broken")
    with pytest.raises(ModelPathError):
        build_model("not-a-preset-or-path", tokenizer, seed=0)


@pytest.mark.parametrize("name, preset, kind", [("llama-0.3m-pt", "llama-0.3m", "bpe"),
                                                ("llama-1m-teacher", "llama-1m", "bpe"),
                                                ("gpt2-0.3m-uni-pt", "gpt2-0.3m-uni", "unigram")])
def test_the_shipped_pretrained_bases_load_with_their_reports(name, preset, kind):
    model, tokenizer = load_pretrained(name)
    report = load_report(model_directory(name))
    assert report is not None and report.settings.preset == preset and report.tokenizer == kind
    assert num_parameters(model) == report.num_parameters
    assert tokenizer.get_vocab() == builtin_tokenizer(kind).get_vocab()
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert architecture_key(name) == name


def test_the_shipped_teacher_is_a_strong_teacher():
    report = load_report(model_directory("llama-1m-teacher"))
    assert report.accuracy_rationale >= 0.9 and report.settings.steps > 0


def test_unknown_model_names_are_named(tmp_path):
    for bad in ("llama-9m", str(tmp_path / "missing")):
        with pytest.raises(ModelPathError, match="not a preset"):
            check_model_name(bad)
    check_model_name("gpt2-1m")
    check_model_name("llama-0.3m-pt")
