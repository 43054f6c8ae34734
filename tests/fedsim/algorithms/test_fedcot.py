"""FedCoT on the in-process engine, with a real (tiny, briefly trained) teacher served by the project's
Hugging Face backend in this process."""
import copy
import math

import pytest
import torch

from fedsim.algorithms.fedcot import (
    FedCoTConfigError,
    build_multitask_data,
    cut_to_tokens,
    decode_targets,
    oracle_recover,
    parse_output,
    train_multitask,
)
from fedsim.comm import payload_nbytes
from fedsim.config import ConfigError, validate
from fedsim.data.federated import build_federated_data
from fedsim.data.prompts import render_prompt
from fedsim.data.task import Example, generate_examples
from fedsim.engine.coordinator import RoundEngine
from fedsim.engine.inprocess import InProcessExecutor
from fedsim.models.lora import LoraSettings, attach_lora, get_adapter
from fedsim.models.presets import build_model
from fedsim.models.tokenizer import builtin_tokenizer
from fedsim.privacy.ledger import client_unit
from fedsim.train.batching import encode_for_training
from fedsim.train.local import batch_loss, make_optimizer, train_steps
from serve.inprocess import InProcessLLM


def make_engine(teacher_dir, run_dir=None, **sections):
    raw = {"algorithms": ["fedcot"], "rounds": 3, "seed": 1,
           "clients": {"num": 4, "per_round": 2, "presets": {"llama-0.3m": 1.0}},
           "task": {"train_per_client": 5, "test_size": 4, "public_size": 0},
           "train": {"local_steps": 2, "batch_size": 4},
           "eval": {"every": 0},
           "llm": {"model": str(teacher_dir)},
           "fedcot": {"max_new_tokens": 12}}
    for section, values in sections.items():
        raw[section] = raw.get(section, {}) | values if isinstance(values, dict) else values
    config = validate(raw)
    data = build_federated_data(config)
    llm = InProcessLLM(teacher_dir)
    executor = InProcessExecutor(config, "fedcot", data, run_dir, llm=llm)
    return RoundEngine(config, "fedcot", data, executor, run_dir), llm


def clean_prompts(engine, client):
    return [render_prompt(example, "rationale") for example in engine.data.client_examples(client)]


def test_one_request_per_client_with_all_its_prompts_and_unchanged_at_eps_inf(teacher_dir):
    engine, llm = make_engine(teacher_dir, fedcot={"mechanism": "em", "eps_per_token": math.inf})
    row = engine.run_round()
    clients = sorted(engine.worker_of)
    assert row["clients_succeeded"] == len(clients) == 2
    assert len(llm.calls) == 2
    assert [prompts for prompts, _ in llm.calls] == [clean_prompts(engine, c) for c in clients]


def test_mechanism_none_sends_the_clean_prompts(teacher_dir):
    engine, llm = make_engine(teacher_dir, fedcot={"mechanism": "none", "eps_per_token": 1.0})
    engine.run_round()
    assert [prompts for prompts, _ in llm.calls] == [clean_prompts(engine, c) for c in sorted(engine.worker_of)]


def test_small_eps_perturbs_the_question_but_keeps_the_template(teacher_dir):
    engine, llm = make_engine(teacher_dir, fedcot={"mechanism": "em", "eps_per_token": 0.5})
    engine.run_round()
    for (sent, _), client in zip(llm.calls, sorted(engine.worker_of)):
        clean = clean_prompts(engine, client)
        assert sent != clean
        assert all(p.startswith("Question: ") and p.endswith("\nRationale:") for p in sent)


def test_prompt_and_rationale_bytes_are_their_utf8_payloads(teacher_dir):
    engine, llm = make_engine(teacher_dir, fedcot={"mechanism": "aem", "eps_per_token": 4.0})
    row = engine.run_round()
    sent = sum(len(p.encode("utf-8")) for prompts, _ in llm.calls for p in prompts)
    received = sum(len(r.encode("utf-8")) for _, replies in llm.calls for r in replies)
    assert row["bytes/up/prompts"] == sent > 0
    assert row["bytes/down/rationales"] == received
    assert row["bytes_up"] == sent and row["bytes_down"] == received


def test_rationales_are_cached_and_the_release_recorded_once(teacher_dir):
    engine, llm = make_engine(teacher_dir, clients={"num": 2, "per_round": 2},
                              fedcot={"mechanism": "em", "eps_per_token": 2.0, "max_prompt_tokens": 40})
    first = engine.run_round()
    second = engine.run_round()
    assert len(llm.calls) == 2  # nothing asked in round 2
    assert second["bytes_up"] == second["bytes_down"] == 0 and first["bytes_up"] > 0
    entries = engine.privacy.ledger.entries()
    assert [(e.unit, e.round) for e in entries] == [(client_unit(0), 0), (client_unit(1), 0)]
    assert all(e.status == "proven" and e.release.count == 40 and e.release.epsilon == 2.0
               and e.release.bounded_range for e in entries)
    assert first["eps_client_max"] == second["eps_client_max"] > 0
    state = engine.executor.workers[0].store.get(0)
    assert len(state["rationales"]) == len(engine.data.client_examples(0)) and "adapter" in state


def test_aem_release_is_claimed(teacher_dir):
    engine, _ = make_engine(teacher_dir, fedcot={"mechanism": "aem", "eps_per_token": 3.0})
    engine.run_round()
    assert {e.status for e in engine.privacy.ledger.entries()} == {"claimed"}
    assert not any(e.release.bounded_range for e in engine.privacy.ledger.entries())


def test_over_budget_clients_are_refused_before_sending(teacher_dir):
    engine, llm = make_engine(teacher_dir, privacy={"budget_eps": 5.0},
                              fedcot={"mechanism": "em", "eps_per_token": 1.0, "max_prompt_tokens": 72})
    row = engine.run_round()
    assert row["clients_refused"] == 2 and row["clients_succeeded"] == 0 and llm.calls == []
    assert row["bytes_up"] == 0 and engine.privacy.ledger.entries() == []


def test_unperturbed_prompts_are_non_private_and_refused_under_a_finite_budget(teacher_dir):
    engine, llm = make_engine(teacher_dir, fedcot={"mechanism": "em", "eps_per_token": math.inf})
    engine.run_round()
    assert {e.mechanism for e in engine.privacy.ledger.entries()} == {"fedcot_prompts"}
    assert engine.privacy.ledger.epsilon(client_unit(sorted(engine.worker_of)[0])).epsilon == math.inf
    limited, llm = make_engine(teacher_dir, privacy={"budget_eps": 1000.0},
                               fedcot={"mechanism": "none"})
    assert limited.run_round()["clients_refused"] == 2 and llm.calls == []


def test_evaluation_reports_both_decoding_modes_from_client_adapters(teacher_dir):
    engine, _ = make_engine(teacher_dir, rounds=1, eval={"every": 1, "mode": "both", "max_clients": 2})
    row = engine.run_round()
    assert 0.0 <= row["accuracy/answer"] <= 1.0 and 0.0 <= row["accuracy/rationale"] <= 1.0
    assert row["accuracy"] == row["accuracy/answer"]


def test_settings_fedcot_cannot_honour_fail_early(teacher_dir):
    with pytest.raises(FedCoTConfigError, match="llm.model"):
        make_engine(teacher_dir, llm={"model": None})
    with pytest.raises(FedCoTConfigError, match="dp_sgd"):
        make_engine(teacher_dir, privacy={"dp_sgd": {"noise_multiplier": 1.0}})


DECODER = {"model": "llama-0.3m-pt", "public_questions": 8, "steps": 3, "batch_size": 4, "max_len": 160}


def test_decoder_is_trained_on_public_data_only_shipped_once_and_counted(teacher_dir):
    engine, llm = make_engine(teacher_dir, clients={"num": 2, "per_round": 2}, task={"public_size": 10},
                              fedcot={"mechanism": "em", "eps_per_token": 2.0, "recover": "decoder",
                                      "decoder": DECODER})
    first = engine.run_round()
    algorithm = engine.executor.workers[0].algorithm
    decoder, payload = algorithm.decoder(llm)
    public = engine.data.public[:8]
    assert decoder.trained_on == tuple(e.question for e in public)
    private = {e.question for c in range(2) for e in engine.data.client_examples(c)} | {e.question for e in engine.data.test}
    assert not private & set(decoder.trained_on)
    # the server's own request (public questions, perturbed) comes first, then one per client
    assert [len(prompts) for prompts, _ in llm.calls] == [8, 5, 5]
    assert llm.calls[0][0] != [render_prompt(e, "rationale") for e in public]
    # every parameter once (tied embeddings once), float32, to each client on its first round only
    assert payload_nbytes(payload) > 4 * sum(p.numel() for p in decoder.model.parameters())
    assert first["bytes/down/decoder"] == 2 * payload_nbytes(payload)
    assert first["bytes_down"] == first["bytes/down/decoder"] + first["bytes/down/rationales"]
    second = engine.run_round()
    assert second.get("bytes/down/decoder", 0) == 0 and len(llm.calls) == 3


def test_decoder_rewrites_the_replies_the_client_trains_on(teacher_dir):
    engine, llm = make_engine(teacher_dir, clients={"num": 2, "per_round": 2}, task={"public_size": 8},
                              fedcot={"mechanism": "em", "eps_per_token": 2.0, "recover": "decoder",
                                      "decoder": DECODER})
    engine.run_round()
    decoder, _ = engine.executor.workers[0].algorithm.decoder(llm)
    for client, (_, replies) in zip(range(2), llm.calls[1:]):
        examples = engine.data.client_examples(client)
        targets = engine.executor.workers[0].store.get(client)["rationales"]
        assert targets == decode_targets(decoder, examples, replies, 12)
        assert targets != [parse_output(reply) for reply in replies]


def test_decoder_is_the_same_whoever_trains_it(teacher_dir):
    weights = []
    for _ in range(2):
        engine, llm = make_engine(teacher_dir, task={"public_size": 8},
                                  fedcot={"mechanism": "em", "eps_per_token": 2.0, "recover": "decoder",
                                          "decoder": DECODER})
        weights.append(engine.executor.workers[0].algorithm.decoder(llm)[1])
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])


def test_oracle_recovery_still_repairs_the_targets(teacher_dir):
    engine, llm = make_engine(teacher_dir, clients={"num": 2, "per_round": 2},
                              fedcot={"mechanism": "em", "eps_per_token": 2.0, "recover": "oracle"})
    row = engine.run_round()
    assert "bytes/down/decoder" not in row
    for client, (_, replies) in zip(range(2), llm.calls):
        examples = engine.data.client_examples(client)
        expected = [oracle_recover(r, e.question) or (r, a) for (r, a), e
                    in zip(map(parse_output, replies), examples)]
        assert engine.executor.workers[0].store.get(client)["rationales"] == expected


def test_recover_settings_are_checked_before_anything_runs(teacher_dir):
    with pytest.raises(ConfigError, match="former `recover: true` is `oracle`"):
        make_engine(teacher_dir, fedcot={"recover": True})
    with pytest.raises(ConfigError, match="task.public_size is 0"):
        make_engine(teacher_dir, fedcot={"recover": "decoder"})
    with pytest.raises(ConfigError, match="fedcot.recover: Input should be 'none', 'decoder' or 'oracle'"):
        make_engine(teacher_dir, fedcot={"recover": "rules"})


# ----- pieces ---------------------------------------------------------------------------------------------

def test_parse_output_splits_rationale_and_answer():
    assert parse_output(" 3 + 8 = 1 . 1 - 4 = 7 #### 7") == ("3 + 8 = 1 . 1 - 4 = 7", "7")
    assert parse_output(" 3 + 8 = 1") == ("3 + 8 = 1", "1")
    assert parse_output("") == ("", "")


def test_oracle_redoes_the_steps_with_the_question_numbers():
    question = "Mia gets on at station 3. She rides 8 stations forward. Then she rides 4 stations back."
    # the LLM saw perturbed numbers (5, 2, 4) but read the directions right
    assert oracle_recover("5 + 2 = 7 . 7 - 4 = 3", question) == ("3 + 8 = 1 . 1 - 4 = 7", "7")
    assert oracle_recover("5 + 2 = 7", question) is None  # one step for two moves
    assert oracle_recover("no steps here", question) is None
    assert oracle_recover("12 + 30 = 42", "Tom has 12 apples and buys 30 more.") is None  # not a ring problem


def test_cut_keeps_the_end_of_the_question():
    tokenizer = builtin_tokenizer()
    text = generate_examples(1, 0, "train", None, 4, 4)[0].question
    cut = cut_to_tokens(tokenizer, text, 10)
    assert text.endswith(cut) and len(tokenizer.encode(cut, add_special_tokens=False)) <= 10
    assert cut_to_tokens(tokenizer, text, 1000) == text


def lora_model(seed=0):
    model = build_model("llama-0.3m", builtin_tokenizer(), seed)
    return attach_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0, target_modules="all-linear"))


def multitask_setup():
    tokenizer = builtin_tokenizer()
    examples = generate_examples(6, 3, "train")
    targets = [(f"{e.rationale} x", e.answer) for e in examples]  # stands for an LLM's rationale
    data = build_multitask_data(tokenizer, examples, targets, 96)
    taught = [Example(e.question, a, r, e.domain) for e, (r, a) in zip(examples, targets)]
    return tokenizer, examples, taught, data


@pytest.mark.parametrize("alpha, mode", [(0.0, "answer"), (1.0, "rationale")])
def test_alpha_zero_and_one_are_single_task_training(alpha, mode):
    tokenizer, examples, taught, data = multitask_setup()
    model = lora_model()
    reference = copy.deepcopy(model)
    train_multitask(model, data, make_optimizer(model, 1e-2), 3, 4, alpha, torch.Generator().manual_seed(5))
    encoded = encode_for_training(tokenizer, examples if mode == "answer" else taught, mode, 96)
    train_steps(reference, encoded, make_optimizer(reference, 1e-2), 3, 4, torch.Generator().manual_seed(5))
    trained, expected = get_adapter(model), get_adapter(reference)
    assert all(torch.equal(torch.from_numpy(trained[k]), torch.from_numpy(expected[k])) for k in expected)


def test_mixed_loss_weights_each_task_mean():
    _, _, _, data = multitask_setup()
    model = lora_model()
    rows = torch.randperm(6, generator=torch.Generator().manual_seed(9))[:4]
    with torch.no_grad():
        rationale_loss = batch_loss(model, data.rationale, rows)[0].item()
        answer_loss = batch_loss(model, data.answer, rows)[0].item()
    stats = train_multitask(model, data, make_optimizer(model, 0.0), 1, 4, 0.3, torch.Generator().manual_seed(9))
    assert stats.final_loss == pytest.approx(0.3 * rationale_loss + 0.7 * answer_loss, rel=1e-5)


def test_examples_without_a_rationale_train_only_the_answer():
    tokenizer = builtin_tokenizer()
    examples = generate_examples(4, 3, "train")
    data = build_multitask_data(tokenizer, examples, [("", "1"), ("1 + 2 = 3", "3"), ("", ""), ("2 - 1 = 1", "1")],
                                96)
    assert data.rationale_row.tolist() == [-1, 0, -1, 1] and data.rationale["input_ids"].shape[0] == 2
    with pytest.raises(ValueError, match="rationales for"):
        build_multitask_data(tokenizer, examples, [("", "1")], 96)
