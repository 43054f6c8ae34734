"""Staged pretraining (fedsim.pretrain), the teacher CLI and in-process generation (serve.inprocess)."""
import json
import re
from dataclasses import replace

import pytest

from fedsim.cli import main
from fedsim.config import TaskConfig
from fedsim.data.task import DOMAINS, RING_SIZE, generate_examples
from fedsim.models.presets import BASES_DIR, PRESETS, PRETRAINED_BASES, load_pretrained
from fedsim.models.tokenizer import builtin_tokenizer
from fedsim.pretrain import (
    REPORT_FILE,
    PretrainError,
    PretrainSettings,
    arithmetic_chains,
    ensure_pretrained,
    load_report,
    pretrain,
    stage_two_questions,
)
from serve.inprocess import InProcessLLM

TINY = PretrainSettings(preset="llama-0.3m", arithmetic_steps=4, steps=6, public_size=16, batch_size=4,
                        test_size=4)
TINY_FLAGS = ["--preset", "llama-0.3m", "--arithmetic-steps", "4", "--steps", "6", "--public-size", "16",
              "--batch-size", "4", "--test-size", "4", "--threads", "1"]
# Trainings here run on one thread (threads=1, --threads 1) unless the thread count is what a test checks:
# the default, every core, is many times slower for these tiny models on a busy 2-core machine.


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pretrain") / "model"
    return directory, pretrain(directory, TINY, threads=1)


def test_saves_a_loadable_model_with_its_report(trained):
    directory, report = trained
    assert not directory.with_name(".model.partial").exists()
    model, tokenizer = load_pretrained(directory)
    assert model.config.hidden_size == 64 and len(tokenizer) == len(builtin_tokenizer())
    saved = json.loads((directory / REPORT_FILE).read_text())
    assert saved["settings"]["steps"] == 6 and saved["settings"]["arithmetic_steps"] == 4
    assert 0.0 <= saved["accuracy_rationale"] <= 1.0 and 0.0 <= saved["accuracy_answer"] <= 1.0
    assert saved["train_seconds"] > 0 and load_report(directory) == report
    test = generate_examples(TINY.test_size, TINY.seed, "test", None, TaskConfig().min_steps, TaskConfig().max_steps)
    sizes = {name: sum(example.domain == name for example in test) for name in DOMAINS}
    assert set(report.accuracy_by_domain) == {name for name, size in sizes.items() if size}
    assert report.accuracy_rationale == pytest.approx(
        sum(value * sizes[name] for name, value in report.accuracy_by_domain.items()) / len(test))


def test_arithmetic_only_is_allowed(tmp_path):
    report = pretrain(tmp_path / "arith", replace(TINY, steps=0, arithmetic_steps=2, test_size=1), threads=1)
    assert report.settings.steps == 0 and report.final_loss > 0


def test_trains_with_the_threads_it_is_given_and_shows_progress(tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        pretrain(tmp_path / "two", replace(TINY, steps=0, arithmetic_steps=2, test_size=1), threads=2, progress=True)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    err = capsys.readouterr().err
    assert "llama-0.3m arithmetic" in err and "2/2" in err and "llama-0.3m evaluation" in err
    with pytest.raises(PretrainError, match="threads"):
        pretrain(tmp_path / "none", TINY, threads=0)


def test_an_existing_model_is_reused_unless_forced(trained):
    directory, report = trained
    written = (directory / "model.safetensors").stat().st_mtime_ns
    reused, trained_now = ensure_pretrained(directory, TINY, threads=1)
    assert not trained_now and reused == report
    assert (directory / "model.safetensors").stat().st_mtime_ns == written
    other = directory.with_name("forced")
    (other / "stale").mkdir(parents=True)  # whatever was there is replaced
    _, trained_now = ensure_pretrained(other, TINY, force=True, threads=1)
    assert trained_now and not (other / "stale").exists() and load_report(other).settings.preset == "llama-0.3m"


def test_cli_reuses_and_says_so(trained, capsys):
    directory, _ = trained
    assert main(["teacher", "train", "--out", str(directory), *TINY_FLAGS]) == 0
    out = capsys.readouterr().out
    assert "reusing the model already trained" in out and "note:" not in out
    assert main(["pretrain", "--out", str(directory), *TINY_FLAGS, "--steps", "99"]) == 0
    assert "steps 6 (asked 99)" in capsys.readouterr().out


def test_bad_settings_are_named(tmp_path, capsys):
    with pytest.raises(PretrainError, match="preset"):
        pretrain(tmp_path / "t", replace(TINY, preset="llama-99m"))
    with pytest.raises(PretrainError, match="batch_size"):
        pretrain(tmp_path / "t", replace(TINY, batch_size=0))
    with pytest.raises(PretrainError, match="at least one step"):
        pretrain(tmp_path / "t", replace(TINY, steps=0, arithmetic_steps=0))
    assert main(["teacher", "train", "--out", str(tmp_path / "t"), "--preset", "nope"]) == 2
    assert "preset" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / REPORT_FILE).write_text("{")
    with pytest.raises(PretrainError, match="not a pretraining report"):
        load_report(tmp_path / "broken")


def test_arithmetic_chains_follow_the_ring():
    tokenizer = builtin_tokenizer()
    encoded = arithmetic_chains(tokenizer, 50, seed=3)
    for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"]):
        text = tokenizer.decode(ids[mask.bool()])
        steps = re.findall(r"(\d) ([+-]) (\d) = (\d)", text)
        for a, sign, b, c in steps:
            expected = (int(a) + int(b)) % RING_SIZE if sign == "+" else (int(a) - int(b)) % RING_SIZE
            assert int(c) == expected
        assert 1 <= len(steps) == text.count("=") <= 4 and len({sign for _, sign, _, _ in steps}) == 1
    targets = encoded["labels"] != -100
    assert targets.any() and (encoded["input_ids"][:, :-1][targets[:, 1:]] == tokenizer.encode(" =")[0]).all()


def test_in_process_llm_answers_each_prompt_once_per_call(trained):
    directory, _ = trained
    llm = InProcessLLM(directory)
    replies = llm.generate(["Question: a\nRationale:", "Question: b\nRationale:"], {"max_new_tokens": 4})
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    assert llm.calls == [(["Question: a\nRationale:", "Question: b\nRationale:"], replies)]


def test_domains_must_be_distinct_known_ones(capsys):
    for domains, named in [(("shopping", "sports"), "'sports'"), ((), "at least one"),
                           (("travel", "travel"), "distinct")]:
        with pytest.raises(PretrainError, match=named) as error:
            replace(TINY, domains=domains).check()
        assert "known: ['shopping', 'travel', 'cooking', 'finance']" in str(error.value)
    assert main(["pretrain", "--out", "unused", *TINY_FLAGS, "--domains", "shopping,,travel"]) == 2
    assert "unknown domain(s) ['']" in capsys.readouterr().err


def test_the_question_stage_keeps_to_its_domains():
    restricted = stage_two_questions(replace(TINY, public_size=200, domains=("shopping", "travel")))
    assert len(restricted) == 200 and {example.domain for example in restricted} == {"shopping", "travel"}
    assert all(example.rationale for example in restricted)
    everything = stage_two_questions(replace(TINY, public_size=200))
    assert {example.domain for example in everything} == set(DOMAINS)


def test_a_domains_restricted_model_round_trips_through_the_cli(tmp_path, capsys):
    flags = ["pretrain", "--out", str(tmp_path / "two"), *TINY_FLAGS, "--domains", "shopping,travel"]
    assert main(flags) == 0
    out = capsys.readouterr().out
    assert "public questions of shopping, travel" in out and "(shopping " in out
    assert json.loads((tmp_path / "two" / REPORT_FILE).read_text())["settings"]["domains"] == ["shopping", "travel"]
    assert load_report(tmp_path / "two").settings.domains == ("shopping", "travel")
    assert main(flags) == 0
    out = capsys.readouterr().out
    assert "reusing the model already trained" in out and "note:" not in out


def test_reports_without_domains_still_load(tmp_path):
    saved = json.loads((BASES_DIR / "llama-0.3m-pt" / REPORT_FILE).read_text())
    saved["settings"].pop("domains", None)
    saved.pop("accuracy_by_domain", None)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / REPORT_FILE).write_text(json.dumps(saved))
    report = load_report(tmp_path / "old")
    assert report.settings.domains is None and report.accuracy_by_domain == {}
    assert "rationale-then-answer" in report.summary() and "(shopping" not in report.summary()
    for base in PRETRAINED_BASES:
        assert load_report(BASES_DIR / base).settings.preset in PRESETS
