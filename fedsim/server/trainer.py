"""The server trainer's runtime, free of Ray: named LoRA models that it trains (with optional sparse
top-k distillation), computes top-k logits of, and saves and restores bit for bit.

Every random draw is keyed by (seed, model name, train call) through fedsim.rng, so a restored
trainer repeats the same minibatches and dropout masks. A preset's base weights and the initial
LoRA weights use the same keys as the client workers ("base/<model>", "lora-init/<model>"), so the
server's copy of an SLM starts from the clients' base and initial adapter.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedsim.comm import SERVER
from fedsim.models.lora import LoraSettings, attach_lora, get_adapter, set_adapter
from fedsim.models.presets import load_model
from fedsim.models.topk import TopKResult
from fedsim.rng import base_seed, stream_seed, torch_stream
from fedsim.server.engines import Engine, import_deepspeed, make_engine
from fedsim.server.settings import ServerTrainerError, ServerTrainerSettings
from fedsim.train.batching import encode_for_training
from fedsim.train.distill import KD_REDUCTION, distillation_objective, sparse_kd_loss, teacher_batch
from fedsim.train.evaluate import domain_counts
from fedsim.train.local import minibatches
from fedsim.train.selective import topk_and_answer_nll
from fedsim.train.losses import causal_lm_loss


@dataclass(frozen=True)
class TrainReport:
    """What one call to ServerTrainer.train did; `epoch_losses` are mean objectives per epoch."""

    steps: int
    rows: int
    mean_lm_loss: float
    mean_kd_loss: float | None  # None without a teacher
    epoch_losses: tuple[float, ...]
    wall_seconds: float
    kd_reduction: str | None  # fedsim.train.distill.KD_REDUCTION with a teacher


@dataclass
class _Slot:
    """One trainable model: the peft model, its engine (optimizer), and its train-call count."""

    model: torch.nn.Module
    tokenizer: Any
    engine: Engine
    train_calls: int = 0


class ServerTrainer:
    """Named base models with LoRA adapters, trained by one engine kind (torch or DeepSpeed).

    `publisher` serves a model's adapter (to every replica of the LLM deployment, or an in-process
    endpoint) and returns the version it was published as.
    """

    def __init__(self, settings: ServerTrainerSettings, seed: int,
                 publisher: Callable[[dict[str, np.ndarray]], int] | None = None) -> None:
        self.settings = settings.check()
        self.seed = seed
        self.publisher = publisher
        self.published: dict[str, int] = {}  # model name -> version it was last published as
        if settings.engine == "deepspeed":
            import_deepspeed()  # fail now, with the install hint, rather than at the first add_model
        self._slots: dict[str, _Slot] = {}

    def add_model(self, name: str, model: str, lora: LoraSettings) -> None:
        """Hold `model` (a preset, a shipped base or a local Hugging Face directory) with a LoRA
        adapter under `name`."""
        if name in self._slots:
            raise ServerTrainerError(f"the server trainer already holds a model named {name!r}")
        base, tokenizer = load_model(model, base_seed(self.seed, model))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(self.seed, SERVER, 0, f"lora-init/{model}"))
            peft_model = attach_lora(base, lora)
        self._slots[name] = _Slot(model=peft_model, tokenizer=tokenizer, engine=make_engine(peft_model, self.settings))

    def encode(self, name: str, examples: Sequence[Any], target: str, max_len: int) -> dict[str, torch.Tensor]:
        """Training rows of `examples` (fedsim.data.task.Example) in the prompt format, with the model's tokenizer."""
        return encode_for_training(self._slot(name).tokenizer, examples, target, max_len)

    def publish(self, name: str) -> int:
        """Serve the model's current adapter; returns the version it is served as."""
        if self.publisher is None:
            raise ServerTrainerError("the server trainer has no deployment to publish to")
        self.published[name] = self.publisher(self.get_adapter(name))
        return self.published[name]

    def evaluate(self, name: str, examples: Sequence[Any], modes: Sequence[str],
                 batch_size: int) -> dict[str, dict[str, list[int]]]:
        """Per decoding mode, [correct, total] exact-match counts per domain of `examples`."""
        slot = self._slot(name)
        return {mode: domain_counts(slot.model, slot.tokenizer, examples, mode, batch_size) for mode in modes}

    def get_adapter(self, name: str) -> dict[str, np.ndarray]:
        """Float32 copies of the model's adapter arrays (fedsim.models.lora naming)."""
        return get_adapter(self._slot(name).model)

    def set_adapter(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Load adapter arrays into the model; its optimizer moments are kept."""
        slot = self._slot(name)
        set_adapter(slot.model, arrays)
        slot.engine.params_changed()

    def topk(self, name: str, encoded: dict[str, torch.Tensor], k: int, batch_size: int) -> list[TopKResult]:
        """The k largest raw logits (fp16, descending) at every non-pad position of each right-padded
        row of `encoded` (input_ids, attention_mask), computed in eval mode in batches."""
        return self.topk_and_nll(name, encoded, k, batch_size)[0]

    def topk_and_nll(self, name: str, encoded: dict[str, torch.Tensor], k: int,
                     batch_size: int) -> tuple[list[TopKResult], np.ndarray]:
        """`topk`, and each row's summed NLL of its target tokens (FedMKT's selection metric; NaN
        when `encoded` has no labels)."""
        slot = self._slot(name)
        slot.model.eval()
        try:
            with torch.no_grad():
                return topk_and_answer_nll(lambda rows: self._logits(slot, encoded, rows), encoded, k, batch_size)
        except ValueError as error:
            raise ServerTrainerError(f"model {name!r}: {error}") from None

    def train(
        self,
        name: str,
        encoded: dict[str, torch.Tensor],
        teacher: list[TopKResult] | None = None,
        kd_lambda: float = 1.0,
        temperature: float = 1.0,
        epochs: int | None = None,
        steps: int | None = None,
        batch_size: int | None = None,
        lm_weight: float = 1.0,
    ) -> TrainReport:
        """`epochs` (default `settings.epochs`) passes over the rows of `encoded` (input_ids,
        attention_mask, labels) in shuffled minibatches of `batch_size` (default `settings.batch_size`;
        a short tail is skipped), or exactly `steps` minibatches when given, minimising
        lm_weight * L_LM, plus kd_lambda * T^2 * KL toward `teacher` (one TopKResult per row) when given."""
        slot = self._slot(name)
        num_rows = int(encoded["input_ids"].shape[0])
        self._check_teacher(teacher, encoded, kd_lambda, temperature)
        batch_size = batch_size or self.settings.batch_size
        purpose = f"server-train/{name}"
        batches = minibatches(num_rows, batch_size,
                              torch_stream(self.seed, SERVER, slot.train_calls, f"{purpose}/batches"))
        steps_per_epoch = num_rows // min(batch_size, num_rows)
        epoch_steps = [steps] if steps is not None else [steps_per_epoch] * (epochs or self.settings.epochs)
        lm_losses: list[float] = []
        kd_losses: list[float] = []
        epoch_losses: list[float] = []
        started = time.perf_counter()
        slot.model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(self.seed, SERVER, slot.train_calls, f"{purpose}/dropout"))
            for count in epoch_steps:
                objectives = []
                for _ in range(count):
                    rows = next(batches)
                    logits, width = self._logits(slot, encoded, rows)
                    labels = encoded["labels"][rows, :width].to(slot.engine.device)
                    loss = causal_lm_loss(logits, labels)
                    lm_losses.append(loss.item())
                    if teacher is not None:
                        kd_target = teacher_batch([teacher[row] for row in rows.tolist()], width, logits.shape[-1])
                        kd_loss, _ = sparse_kd_loss(logits, kd_target.to(slot.engine.device), labels, temperature)
                        kd_losses.append(kd_loss.item())
                        loss = distillation_objective(loss, kd_loss, kd_lambda, temperature, lm_weight)
                    elif lm_weight != 1.0:
                        loss = lm_weight * loss
                    slot.engine.step(loss)
                    objectives.append(loss.item())
                epoch_losses.append(sum(objectives) / len(objectives))
        slot.train_calls += 1
        return TrainReport(
            steps=len(lm_losses), rows=num_rows, mean_lm_loss=sum(lm_losses) / len(lm_losses),
            mean_kd_loss=sum(kd_losses) / len(kd_losses) if teacher is not None else None,
            epoch_losses=tuple(epoch_losses), wall_seconds=time.perf_counter() - started,
            kd_reduction=KD_REDUCTION if teacher is not None else None,
        )

    def state_dict(self) -> dict[str, Any]:
        """Every model's adapter, optimizer state and train-call count (the key of its RNG streams),
        as plain picklable numpy/python data."""
        return {
            "seed": self.seed,
            "engine": self.settings.engine,
            "models": {name: {"adapter": get_adapter(slot.model), "optimizer": slot.engine.optimizer_state(),
                              "train_calls": slot.train_calls}
                       for name, slot in self._slots.items()},
            "published": sorted(self.published),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned into a trainer holding the same models (add_model first);
        the models that were published are published again, so the deployment serves them."""
        if state["seed"] != self.seed or state["engine"] != self.settings.engine:
            raise ServerTrainerError(
                f"server trainer state was saved with seed {state['seed']} and engine {state['engine']!r}, "
                f"this trainer has seed {self.seed} and engine {self.settings.engine!r}")
        if sorted(state["models"]) != sorted(self._slots):
            raise ServerTrainerError(f"server trainer state holds models {sorted(state['models'])}, "
                                     f"this trainer {sorted(self._slots)}")
        for name, saved in state["models"].items():
            slot = self._slots[name]
            set_adapter(slot.model, saved["adapter"])
            slot.engine.params_changed()
            slot.engine.load_optimizer_state(saved["optimizer"])
            slot.train_calls = int(saved["train_calls"])
        for name in state.get("published", []):
            self.publish(name)

    def _slot(self, name: str) -> _Slot:
        if name not in self._slots:
            raise ServerTrainerError(f"the server trainer holds no model named {name!r} (it has {list(self._slots)})")
        return self._slots[name]

    @staticmethod
    def _logits(slot: _Slot, encoded: dict[str, torch.Tensor], rows: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Logits of `rows`, trimmed to their longest row, and that width."""
        attention_mask = encoded["attention_mask"][rows]
        width = int(attention_mask.sum(dim=1).max())
        device = slot.engine.device
        logits = slot.engine.forward(encoded["input_ids"][rows, :width].to(device),
                                     attention_mask[:, :width].to(device))
        return logits, width

    @staticmethod
    def _check_teacher(teacher: list[TopKResult] | None, encoded: dict[str, torch.Tensor],
                       kd_lambda: float, temperature: float) -> None:
        if teacher is None:
            return
        lengths = encoded["attention_mask"].sum(dim=1).tolist()
        if len(teacher) != len(lengths):
            raise ServerTrainerError(f"the teacher has {len(teacher)} top-k rows for {len(lengths)} training rows")
        for row, (result, length) in enumerate(zip(teacher, lengths)):
            if result.n_positions > length:
                raise ServerTrainerError(f"teacher row {row} has {result.n_positions} positions, "
                                         f"the training row only {length} tokens")
        if not kd_lambda >= 0:
            raise ServerTrainerError(f"kd_lambda must be >= 0, got {kd_lambda!r}")
        if not temperature > 0:
            raise ServerTrainerError(f"temperature must be > 0, got {temperature!r}")
