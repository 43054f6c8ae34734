"""Tests of the server trainer with the plain torch engine."""
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from fedsim.models.lora import LoraSettings, attach_lora, set_adapter
from fedsim.models.presets import load_pretrained
from fedsim.models.topk import TopKResult
from fedsim.server.settings import ServerTrainerError, ServerTrainerSettings
from fedsim.server.trainer import ServerTrainer
from fedsim.train.distill import KD_REDUCTION, sparse_kd_loss, teacher_batch

SETTINGS = ServerTrainerSettings(lr=3e-3, epochs=3, batch_size=6, device="cpu")
TINY_LORA = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules="attention")


def random_adapter(trainer: ServerTrainer, name: str, seed: int) -> dict[str, np.ndarray]:
    """Random arrays shaped like the model's adapter (non-zero LoRA B, so the adapter matters)."""
    rng = np.random.default_rng(seed)
    return {key: rng.normal(0, 0.05, size=value.shape).astype(np.float32)
            for key, value in trainer.get_adapter(name).items()}


def kl_to_teacher(trainer: ServerTrainer, name: str, encoded: dict[str, torch.Tensor],
                  teacher: list[TopKResult], vocab: int) -> float:
    """KD loss of `name` toward `teacher` on every row (the student's logits from a full-vocabulary top-k)."""
    full = trainer.topk(name, encoded, k=vocab, batch_size=32)
    width = encoded["input_ids"].shape[1]
    logits = torch.zeros((len(full), width, vocab))
    for row, result in enumerate(full):
        logits[row, : result.n_positions].scatter_(-1, torch.from_numpy(result.ids.astype(np.int64)),
                                                   torch.from_numpy(result.values.astype(np.float32)))
    loss, _ = sparse_kd_loss(logits, teacher_batch(teacher, width, logits.shape[-1]), encoded["labels"])
    return loss.item()


def test_training_lowers_the_loss_and_keeps_the_optimizer(encoded):
    trainer = ServerTrainer(SETTINGS, seed=0)
    trainer.add_model("slm", "llama-0.3m", TINY_LORA)
    first = trainer.train("slm", encoded)
    second = trainer.train("slm", encoded)
    assert first.steps == 3 * (24 // 6) and first.rows == 24
    assert first.mean_kd_loss is None and first.kd_reduction is None and first.wall_seconds > 0
    losses = first.epoch_losses + second.epoch_losses
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))
    optimizer = trainer.state_dict()["models"]["slm"]["optimizer"]
    assert {float(state["step"]) for state in optimizer["state"].values()} == {2.0 * first.steps}


def test_kd_moves_the_student_toward_the_teacher(encoded, tokenizer):
    trainer = ServerTrainer(replace(SETTINGS, epochs=4), seed=0)
    trainer.add_model("llm", "llama-0.3m-pt", TINY_LORA)
    # A random student whose embeddings train too, so its output distribution can move far.
    trainer.add_model("slm", "llama-0.3m", replace(TINY_LORA, train_embeddings=True))
    teacher = trainer.topk("llm", encoded, k=16, batch_size=8)
    start = trainer.state_dict()
    before = kl_to_teacher(trainer, "slm", encoded, teacher, len(tokenizer))
    lm_only = trainer.train("slm", encoded, teacher=teacher, kd_lambda=0.0)
    after_lm_only = kl_to_teacher(trainer, "slm", encoded, teacher, len(tokenizer))
    trainer.load_state_dict(start)
    distilled = trainer.train("slm", encoded, teacher=teacher, kd_lambda=1.0, temperature=2.0)
    after_kd = kl_to_teacher(trainer, "slm", encoded, teacher, len(tokenizer))
    assert distilled.kd_reduction == KD_REDUCTION and distilled.mean_kd_loss > 0
    assert distilled.epoch_losses[-1] < distilled.epoch_losses[0]
    assert after_kd < 0.7 * before
    assert after_kd < after_lm_only
    assert lm_only.mean_kd_loss is not None


def test_topk_equals_a_direct_forward(encoded):
    trainer = ServerTrainer(SETTINGS, seed=0)
    trainer.add_model("llm", "llama-0.3m-pt", TINY_LORA)
    adapter = random_adapter(trainer, "llm", seed=5)
    trainer.set_adapter("llm", adapter)
    results = trainer.topk("llm", encoded, k=5, batch_size=7)
    model = attach_lora(load_pretrained("llama-0.3m-pt")[0], TINY_LORA)
    set_adapter(model, adapter)
    model.eval()
    lengths = encoded["attention_mask"].sum(dim=1).tolist()
    assert len(results) == len(lengths)
    for row, (result, length) in enumerate(zip(results, lengths)):
        with torch.no_grad():
            logits = model(input_ids=encoded["input_ids"][row: row + 1, :length]).logits[0]
        values, ids = logits.topk(5, dim=-1)
        assert result.ids.dtype == np.int32 and result.values.dtype == np.float16
        assert result.n_positions == length
        np.testing.assert_array_equal(result.ids, ids.numpy())
        np.testing.assert_allclose(result.values.astype(np.float32), values.numpy(), atol=2e-2, rtol=1e-3)
        assert (np.diff(result.values.astype(np.float32), axis=1) <= 0).all()


def test_state_round_trip_is_bit_identical(encoded):
    settings = replace(SETTINGS, epochs=2)
    lora = LoraSettings(r=4, alpha=8, dropout=0.1, target_modules="attention")  # dropout draws are restored too
    trainer = ServerTrainer(settings, seed=1)
    trainer.add_model("llm", "llama-0.3m-pt", lora)
    trainer.add_model("slm", "llama-0.3m", lora)
    trainer.train("slm", encoded)
    teacher = trainer.topk("llm", encoded, k=8, batch_size=12)
    saved = pickle.dumps(trainer.state_dict())
    trainer.train("slm", encoded, teacher=teacher, kd_lambda=0.5)
    trainer.train("llm", encoded)
    expected = {name: trainer.get_adapter(name) for name in ("llm", "slm")}

    restored = ServerTrainer(settings, seed=1)
    restored.add_model("llm", "llama-0.3m-pt", lora)
    restored.add_model("slm", "llama-0.3m", lora)
    restored.load_state_dict(pickle.loads(saved))
    restored.train("slm", encoded, teacher=teacher, kd_lambda=0.5)
    restored.train("llm", encoded)
    for name, arrays in expected.items():
        got = restored.get_adapter(name)
        assert sorted(got) == sorted(arrays)
        assert all(np.array_equal(got[key], arrays[key]) for key in arrays), name


def test_state_is_plain_data(encoded):
    trainer = ServerTrainer(SETTINGS, seed=0)
    trainer.add_model("slm", "llama-0.3m", TINY_LORA)
    trainer.train("slm", encoded)

    def leaves(value):
        if isinstance(value, dict):
            for item in value.values():
                yield from leaves(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from leaves(item)
        else:
            yield value

    plain = (np.ndarray, int, float, bool, str, type(None))
    assert all(isinstance(leaf, plain) for leaf in leaves(trainer.state_dict()))


def test_bad_calls_name_the_problem(encoded):
    trainer = ServerTrainer(SETTINGS, seed=0)
    trainer.add_model("slm", "llama-0.3m", TINY_LORA)
    with pytest.raises(ServerTrainerError, match="no model named 'llm'"):
        trainer.train("llm", encoded)
    with pytest.raises(ServerTrainerError, match="already holds"):
        trainer.add_model("slm", "llama-0.3m", TINY_LORA)
    with pytest.raises(ServerTrainerError, match="2 top-k rows for 24"):
        trainer.train("slm", encoded, teacher=trainer.topk("slm", encoded, 2, 8)[:2])
    with pytest.raises(ServerTrainerError, match="exceeds"):
        trainer.topk("slm", encoded, k=10**6, batch_size=8)
    with pytest.raises(ServerTrainerError, match="seed"):
        ServerTrainer(SETTINGS, seed=9).load_state_dict(trainer.state_dict())
