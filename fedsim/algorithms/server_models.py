"""The models a learning server holds on its trainer, shared by the algorithms whose server trains.

The LLM is `llm.model` with the LoRA of `server.lora` (the same LoRA the deployment serves); an SLM
preset is built exactly as the workers build it (same base seed), so adapters move between them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedsim.algorithms.base import ServerContext
from fedsim.config import ExperimentConfig, LoraConfig

if TYPE_CHECKING:  # peft is imported where a model is built, so model-free workloads stay light
    from fedsim.models.lora import LoraSettings

LLM = "llm"  # the trainer's name for the server LLM


def lora_settings(lora: LoraConfig) -> LoraSettings:
    """The peft settings of a LoRA config section."""
    from fedsim.models.lora import LoraSettings

    return LoraSettings(r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=lora.target_modules,
                        train_embeddings=lora.train_embeddings, train_norms=lora.train_norms)


def prepare_llm(config: ExperimentConfig, trainer: Any) -> None:
    """Load the server LLM onto the trainer and publish its starting adapter (the deployment may serve
    another algorithm's trained adapter from earlier in the experiment)."""
    from fedsim.models.presets import model_directory

    trainer.add_model(LLM, str(model_directory(config.llm.model)), lora_settings(config.server.lora))
    trainer.publish(LLM)


def prepare_slm(config: ExperimentConfig, trainer: Any, preset: str) -> None:
    """Build an SLM preset on the trainer as every worker builds it."""
    trainer.add_model(preset, preset, lora_settings(config.lora))  # seeded by the preset's name, as on workers


def public_round_examples(ctx: ServerContext, count: int | None) -> list:
    """This round's public examples: `count` drawn without replacement by the server's keyed stream, or all."""
    if count is None or count >= len(ctx.public):
        return list(ctx.public)
    picked = ctx.rng("public-examples").choice(len(ctx.public), size=count, replace=False)
    return [ctx.public[int(i)] for i in sorted(picked)]


def evaluate_llm(config: ExperimentConfig, trainer: Any, test: list) -> dict[str, float]:
    """The LLM's exact match on the test split, per decoding mode and per domain."""
    modes = ["answer", "rationale"] if config.eval.mode == "both" else [config.eval.mode]
    counts = trainer.evaluate(LLM, test, modes, config.eval.batch_size)
    fields: dict[str, float] = {}
    for mode in modes:
        correct = sum(c for c, _ in counts[mode].values())
        total = sum(t for _, t in counts[mode].values())
        fields[f"llm_accuracy/{mode}"] = correct / max(1, total)
        fields.update({f"llm_accuracy/{mode}/{domain}": c / t for domain, (c, t) in sorted(counts[mode].items()) if t})
    return fields
